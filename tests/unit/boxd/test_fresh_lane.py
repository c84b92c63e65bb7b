"""On the daemon's real queue: a backlog drains oldest first, but one slot of the window always
carries the freshest batch (the forwarder's rule, `test_forwarder.py`, over `boxd.queue.Queue`)."""

from __future__ import annotations

from pathlib import Path

from boxd.daemon import Daemon
from proto import wire
from proto.downlink import StoredNotice
from proto.topics import Up
from tests.support.fakeident import load_fake
from tests.support.fakeuplink import FakeUplink
from tests.support.wait import in_loop


async def connected(tmp_path: Path) -> tuple[Daemon, FakeUplink]:
    d = Daemon(tmp_path, tmp_path / "unused.toml", uplink=FakeUplink)
    d.queue.open()
    await d.link.start(load_fake(tmp_path))
    up = d.link.uplink
    assert isinstance(up, FakeUplink) and up.state.connected
    return d, up


@in_loop
async def test_backlog_oldest_first_with_the_newest_batch_up_front(tmp_path: Path) -> None:
    d, up = await connected(tmp_path)
    for i in range(40):  # an outage's worth of readings, one batch each
        await d.queue.put(7, 1000 + i, 0, [float(i)], {})
        await d.queue.seal(1)
    d.sender.send(window=8)
    seqs = sorted(d.sender.forwarder.in_flight())
    assert len(seqs) == 8 and len(up.on(Up.DATA)) == 8
    assert seqs[-1] == 40  # the freshest batch is in flight at once ...
    assert seqs[:7] == list(range(1, 8))  # ... and the rest is the backlog's oldest, in order
    for sent in up.on(Up.DATA)[1:4]:  # the broker acknowledges batches 1, 2 and 3: held until stored ...
        up.ack(sent.mid)
    assert d.queue.backlog() == 40 and sorted(d.sender.forwarder.held()) == [1, 2, 3]
    d.sender.on_stored(StoredNotice(d.queue.epoch, 3))  # ... the platform stored them: the queue drops them
    assert d.queue.backlog() == 37 and d.sender.forwarder.held() == []
    await d.queue.put(7, 5000, 0, [99.0], {})  # fresh data arrives during the drain
    await d.queue.seal(1)
    d.sender.send(window=8)
    # the new freshest batch (41) jumps the backlog; the drain goes on in order with 8 and 9
    assert sorted(d.sender.forwarder.in_flight()) == [4, 5, 6, 7, 8, 9, 40, 41]
    d.queue.close()


@in_loop
async def test_no_backlog_no_reordering(tmp_path: Path) -> None:
    d, up = await connected(tmp_path)
    for i in range(3):
        await d.queue.put(7, 1000 + i, 0, [float(i)], {})
        await d.queue.seal(1)
    d.sender.send(window=8)
    assert [wire.decode_batch(s.payload).seq for s in up.on(Up.DATA)] == [1, 2, 3]
    d.queue.close()
