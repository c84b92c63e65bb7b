"""Report on change on the Box: which readings are sent, which become spans ("polled, unchanged"),
and that the Box's queue and the wire carry spans as they carry values."""

from __future__ import annotations

from pathlib import Path

from boxconfig.report import Rule
from boxd._queuesql import Group
from boxd.daemon import Daemon
from boxd.onchange import OnChange
from drivers import PointInfo, Quality, Sample
from proto import wire
from tests.support.fakebus import FakeBus
from tests.support.wait import in_loop

CHANGE = Rule(deadband=0.5, max_age_ms=10_000)


def test_the_first_reading_is_sent_then_only_changes_beyond_the_deadband() -> None:
    f = OnChange([CHANGE] * 3)
    assert f.filter([(0, 0, [20.0, 1.0, 5.0], {})]) == [(0, 0, [20.0, 1.0, 5.0], {})]
    # 20.5 is exactly the deadband away: not more, unchanged; 1.6 is more: sent; 5.0 the same
    assert f.filter([(1000, 0, [20.5, 1.6, 5.0], {})]) == [(1000, 0, 1, {}), (1000, 1, [1.6], {}), (1000, 2, 1, {})]
    # a change is measured from the last value sent (20.0), not from the last read (20.5)
    assert f.filter([(2000, 0, [19.4, 1.6, 5.0], {})]) == [(2000, 0, [19.4], {}), (2000, 1, 2, {})]


def test_a_relative_deadband_and_the_larger_of_the_two_applies() -> None:
    f = OnChange([Rule(deadband=1.0, deadband_pct=10.0, max_age_ms=10**9)])
    f.filter([(0, 0, [100.0], {})])
    assert f.filter([(1, 0, [109.0], {})]) == [(1, 0, 1, {})]  # 9 < 10 % of 100
    assert f.filter([(2, 0, [110.5], {})]) == [(2, 0, [110.5], {})]
    g = OnChange([Rule(deadband=1.0, deadband_pct=10.0, max_age_ms=10**9)])
    g.filter([(0, 0, [0.0], {})])
    assert g.filter([(1, 0, [0.9], {})]) == [(1, 0, 1, {})]  # near 0 the absolute deadband holds
    assert g.filter([(2, 0, [-1.5], {})]) == [(2, 0, [-1.5], {})]


def test_booleans_states_and_text_are_sent_on_any_change_and_a_type_change_is_a_change() -> None:
    f = OnChange([CHANGE] * 3)
    f.filter([(0, 0, [False, "auto", 3], {})])
    assert f.filter([(1, 0, [False, "auto", 3], {})]) == [(1, 0, 3, {})]
    assert f.filter([(2, 0, [True, "manual", 3.0], {})]) == [(2, 0, [True, "manual", 3.0], {})]
    assert f.filter([(3, 0, [1, "manual", 3.0], {})]) == [(3, 0, [1], {}), (3, 1, 2, {})]  # True -> 1


def test_a_quality_change_is_always_sent_and_a_lasting_fault_is_a_span() -> None:
    f = OnChange([CHANGE] * 2)
    f.filter([(0, 0, [20.0, 1.0], {})])
    bad = int(Quality.NO_ANSWER)
    assert f.filter([(1, 0, [None, 1.0], {0: bad})]) == [(1, 0, [None], {0: bad}), (1, 1, 1, {})]
    assert f.filter([(2, 0, [None, 1.0], {0: bad})]) == [(2, 0, 2, {})]
    assert f.filter([(3, 0, [20.0, 1.0], {})]) == [(3, 0, [20.0], {}), (3, 1, 1, {})]  # back to good: sent


def test_the_maximum_age_sends_a_constant_value_and_a_clock_stepped_back_sends_too() -> None:
    f = OnChange([CHANGE])
    f.filter([(0, 0, [7.0], {})])
    assert f.filter([(9_999, 0, [7.0], {})]) == [(9_999, 0, 1, {})]
    assert f.filter([(10_000, 0, [7.0], {})]) == [(10_000, 0, [7.0], {})]
    assert f.filter([(5_000, 0, [7.0], {})]) == [(5_000, 0, [7.0], {})]


def test_nan_is_a_value_like_another() -> None:
    f = OnChange([CHANGE])
    nan = float("nan")
    f.filter([(0, 0, [nan], {})])
    assert f.filter([(1, 0, [nan], {})]) == [(1, 0, 1, {})]
    assert f.filter([(2, 0, [3.0], {})]) == [(2, 0, [3.0], {})]
    assert f.filter([(3, 0, [nan], {})]) == [(3, 0, [nan], {})]


def test_poll_mode_sends_everything_and_a_reset_forgets_every_reference() -> None:
    f = OnChange([Rule(poll=True), CHANGE])
    f.filter([(0, 0, [1.0, 2.0], {})])
    assert f.filter([(1, 0, [1.0, 2.0], {})]) == [(1, 0, [1.0], {}), (1, 1, 1, {})]
    f.reset()
    assert f.filter([(2, 0, [1.0, 2.0], {})]) == [(2, 0, [1.0, 2.0], {})]
    everything_polled = OnChange([Rule(poll=True)] * 2)
    groups: list[Group] = [(0, 0, [1.0, 2.0], {})]
    assert everything_polled.filter(groups) == groups and everything_polled.filter(groups) == groups


@in_loop
async def test_spans_go_through_the_durable_queue_and_decode_as_spans(tmp_path: Path) -> None:
    d = Daemon(tmp_path, tmp_path / "unused.toml")
    d.queue.open()
    bus = FakeBus("ahu", ["a", "b", "c"])
    d.buses.use(d.buses.cfg, [bus])
    d.buses.onchange = OnChange([CHANGE] * 3)
    emit = d.buses.emitter(bus, first=0)
    await emit([Sample("ahu.a", 1000, 1.0), Sample("ahu.b", 1000, 2.0), Sample("ahu.c", 1000, 3.0)])
    await emit([Sample("ahu.a", 2000, 1.0), Sample("ahu.b", 2000, 2.0), Sample("ahu.c", 2000, 9.0)])
    assert d.queue.depth() == (0, 5)  # three values, then a span (counted one) and a value
    assert await d.queue.seal(100) == 1
    ((_, payload),) = d.queue.batches(0, 10)
    b = wire.decode_batch(payload)
    assert list(b.spans()) == [(2000, 0, 2)]
    assert [(n, t, v) for n, t, v, _ in b.samples([PointInfo(f"ahu.{p}", "", "float32") for p in "abc"])] == [
        ("ahu.a", 1000, 1.0), ("ahu.b", 1000, 2.0), ("ahu.c", 1000, 3.0), ("ahu.c", 2000, 9.0)]
    d.queue.close()


@in_loop
async def test_after_the_queue_evicts_the_next_reading_of_every_point_is_sent(tmp_path: Path) -> None:
    d = Daemon(tmp_path, tmp_path / "unused.toml")
    d.queue.open()
    bus = FakeBus("ahu", ["a", "b"])
    d.buses.use(d.buses.cfg, [bus])
    d.buses.onchange = OnChange([CHANGE] * 2)
    d.queue.max_samples = 3
    emit = d.buses.emitter(bus, first=0)
    await emit([Sample("ahu.a", 1000, 1.0), Sample("ahu.b", 1000, 2.0)])
    await emit([Sample("ahu.a", 2000, 1.0), Sample("ahu.b", 2000, 7.0)])  # 4 samples queued: the oldest go
    assert d.queue.meta("evicted_total") == 2
    await emit([Sample("ahu.a", 3000, 1.0), Sample("ahu.b", 3000, 7.0)])  # a's value went: sent again
    await d.queue.seal(100)
    groups = [g for _, p in d.queue.batches(0, 10) for g in wire.decode_batch(p).groups]
    assert [(g.dt_ms > 0, g.first, g.values, g.unchanged) for g in groups][-1:] == [(True, 0, [1.0, 7.0], 0)]
    d.queue.close()


def test_only_what_changed_is_sent_even_between_values_sent() -> None:
    f = OnChange([CHANGE] * 8)
    f.filter([(0, 0, [0.0] * 8, {})])
    # 1 and 5 move: the three unchanged between them are a span (in a poll series it costs nothing)
    assert f.filter([(1, 0, [0.0, 9.0, 0.0, 0.0, 0.0, 9.0, 0.0, 0.0], {})]) == [
        (1, 0, 1, {}), (1, 1, [9.0], {}), (1, 2, 3, {}), (1, 5, [9.0], {}), (1, 6, 2, {})]
    assert f.filter([(2, 0, [0.0, 9.0, 0.0, 0.0, 0.0, 9.0, 0.0, 0.0], {})]) == [(2, 0, 8, {})]


@in_loop
async def test_a_new_configuration_starts_a_new_filter_that_sends_everything_first(tmp_path: Path) -> None:
    from boxconfig import BoxConfig
    from drivers._report import Report

    d = Daemon(tmp_path, tmp_path / "unused.toml")
    d.queue.open()
    changing = BoxConfig(report=Report("change", 0.0, 0.0, 900))
    old, new = FakeBus("ahu", ["a", "b"]), FakeBus("room", ["t", "h"])  # the same size, other points
    d.buses.use(changing, [old])
    await d.buses.emitter(old, first=0)([Sample("ahu.a", 1000, 1.0), Sample("ahu.b", 1000, 2.0)])
    d.buses.use(changing, [new])
    await d.buses.emitter(new, first=0)([Sample("room.t", 2000, 1.0), Sample("room.h", 2000, 2.0)])
    await d.buses.emitter(new, first=0)([Sample("room.t", 3000, 1.0), Sample("room.h", 3000, 2.0)])
    await d.queue.seal(100)
    groups = [(g.dt_ms, g.first, g.values, g.unchanged) for _, p in d.queue.batches(0, 10)
              for g in wire.decode_batch(p).groups]
    assert [g[2:] for g in groups] == [([1.0, 2.0], 0), ([1.0, 2.0], 0), ([], 2)]  # room's first poll: values
    d.queue.close()
