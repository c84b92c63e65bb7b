"""Readings emitted by a bus become compact groups in the durable queue, and decode back exactly."""

from __future__ import annotations

from pathlib import Path

from boxd.daemon import Daemon
from drivers import Quality, Sample
from proto import wire
from tests.support.fakebus import FakeBus
from tests.support.wait import in_loop


@in_loop
async def test_consecutive_points_of_one_instant_make_one_group(tmp_path: Path) -> None:
    d = Daemon(tmp_path, tmp_path / "unused.toml")
    d.queue.open()
    bus = FakeBus("ahu", ["a", "b", "c", "d", "e"])
    d._table_id = 42
    emit = d._emitter(bus, first=10)
    await emit([Sample("ahu.c", 1000, 3.0), Sample("ahu.a", 1000, 1.0), Sample("ahu.b", 1000, None, Quality.NO_ANSWER),
                Sample("ahu.e", 1000, 5.0),  # d missing: a hole, so two groups
                Sample("ahu.a", 2000, 1.5)])  # another instant: another group
    assert d.queue.depth() == (0, 5)  # on disk when emit returned
    assert await d.queue.seal(100) == 1
    ((_, payload),) = d.queue.batches(0, 10)
    b = wire.decode_batch(payload)
    got = sorted((b.base_ts_ms + g.dt_ms, g.first, g.values, g.faults) for g in b.groups)
    assert got == [
        (1000, 10, [1.0, None, 3.0], {1: Quality.NO_ANSWER}),
        (1000, 14, [5.0], {}),
        (2000, 10, [1.5], {}),
    ]
    d.queue.close()
