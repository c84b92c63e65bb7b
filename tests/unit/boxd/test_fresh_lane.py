"""A backlog drains oldest first, but one slot of the window always carries the freshest batch."""

from __future__ import annotations

from pathlib import Path

from boxd.daemon import Daemon
from tests.support.wait import in_loop


class FakeUplink:
    """Records what the daemon publishes (the daemon's logic, not MQTT, is under test)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def publish(self, leaf: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> int:
        self.sent.append((leaf, payload))
        return len(self.sent)


@in_loop
async def test_backlog_oldest_first_with_the_newest_batch_up_front(tmp_path: Path) -> None:
    d = Daemon(tmp_path, tmp_path / "unused.toml")
    d.queue.open()
    for i in range(40):  # an outage's worth of readings, one batch each
        await d.queue.put(7, 1000 + i, 0, [float(i)], {})
        await d.queue.seal(1)
    up = FakeUplink()
    d.uplink = up  # type: ignore[assignment]
    d._send_batches(window=8)
    seqs = sorted(d._inflight.values())
    assert len(seqs) == 8
    assert seqs[-1] == 40  # the freshest batch is in flight at once ...
    assert seqs[:7] == list(range(1, 8))  # ... and the rest is the backlog's oldest, in order
    # acknowledgements free slots: the drain goes on in order
    for mid, seq in list(d._inflight.items()):
        if seq in (1, 2, 3):
            d._acked(mid, True)
    await d.queue.put(7, 5000, 0, [99.0], {})  # fresh data arrives during the drain
    await d.queue.seal(1)
    d._send_batches(window=8)
    # the new freshest batch (41) jumps the backlog; the drain goes on in order with 8 and 9
    assert sorted(d._inflight.values()) == [4, 5, 6, 7, 8, 9, 40, 41]
    d.queue.close()


@in_loop
async def test_no_backlog_no_reordering(tmp_path: Path) -> None:
    d = Daemon(tmp_path, tmp_path / "unused.toml")
    d.queue.open()
    for i in range(3):
        await d.queue.put(7, 1000 + i, 0, [float(i)], {})
        await d.queue.seal(1)
    d.uplink = FakeUplink()  # type: ignore[assignment]
    d._send_batches(window=8)
    assert [s for _, s in sorted(d._inflight.items())] == [1, 2, 3]
    d.queue.close()
