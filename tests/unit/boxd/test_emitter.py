"""Readings emitted by a bus become compact groups in the durable queue, and decode back exactly."""

from __future__ import annotations

from pathlib import Path

from boxd.daemon import Daemon
from boxd.grouping import group
from drivers import Quality, Sample
from proto import wire
from tests.support.fakebus import FakeBus
from tests.support.wait import in_loop

READINGS = [Sample("ahu.c", 1000, 3.0), Sample("ahu.a", 1000, 1.0), Sample("ahu.b", 1000, None, Quality.NO_ANSWER),
            Sample("ahu.e", 1000, 5.0),  # d missing: a hole, so two groups
            Sample("ahu.a", 2000, 1.5)]  # another instant: another group


def test_grouping_of_literals() -> None:
    index = {f"ahu.{p}": 10 + i for i, p in enumerate("abcde")}
    got = group(READINGS, index)
    assert sorted(got.groups) == [
        (1000, 10, [1.0, None, 3.0], {1: Quality.NO_ANSWER}),
        (1000, 14, [5.0], {}),
        (2000, 10, [1.5], {}),
    ]
    assert got.good == 4 and got.faults == {Quality.NO_ANSWER: 1}
    assert group([], index).groups == []


@in_loop
async def test_consecutive_points_of_one_instant_make_one_group(tmp_path: Path) -> None:
    d = Daemon(tmp_path, tmp_path / "unused.toml")
    d.queue.open()
    bus = FakeBus("ahu", ["a", "b", "c", "d", "e"])
    d.buses.use(d.buses.cfg, [bus])
    emit = d.buses.emitter(bus, first=10)
    await emit(READINGS)
    assert d.queue.depth() == (0, 5)  # on disk when emit returned
    assert d.buses.good == 4 and d.buses.polling == {"ahu"}
    assert await d.queue.seal(100) == 1
    ((_, payload),) = d.queue.batches(0, 10)
    b = wire.decode_batch(payload)
    assert b.table_id == d.buses.table_id
    got = sorted((b.base_ts_ms + g.dt_ms, g.first, g.values, g.faults) for g in b.groups)
    assert got == [
        (1000, 10, [1.0, None, 3.0], {1: Quality.NO_ANSWER}),
        (1000, 14, [5.0], {}),
        (2000, 10, [1.5], {}),
    ]
    d.queue.close()
