"""The building trace (bench.building): a day of a 100-point controller read every minute behaves as a
building's points do, the same seed gives the same day, and the farm serves it (`--workload building`)."""

from __future__ import annotations

import itertools
from collections import Counter

from bench.building import BuildingTrace
from bench.farm import Controller
from bench.workload import device_points, layout

T0 = 1_800_000_000.0
POINTS = device_points(100)


def _day(seed: int, step_s: float = 60.0) -> dict[str, list[object]]:
    trace = BuildingTrace(POINTS, seed, T0)
    series: dict[str, list[object]] = {p.name: [] for p in POINTS}
    for k in range(int(86_400 / step_s)):
        for p in POINTS:
            series[p.name].append(trace.value(p.table, p.address, T0 + k * step_s))
    return series


def _kinds(seed: int) -> dict[str, str]:
    trace = BuildingTrace(POINTS, seed, T0)
    return {p.name: trace._points[(p.table, p.address)].kind for p in POINTS}


def _changes(values: list[object]) -> int:
    return sum(a != b for a, b in itertools.pairwise(values))


def test_a_day_of_a_controller_looks_like_a_building() -> None:
    series, kinds = _day(7), _kinds(7)
    by_kind: dict[str, list[str]] = {}
    for name, kind in kinds.items():
        by_kind.setdefault(kind, []).append(name)
    assert Counter(kinds.values()) == {"probe": 1, "meter": 19, "setpoint": 10, "mode": 10, "temperature": 20,
                                       "power": 5, "humidity": 10, "pressure": 5, "state": 15, "alarm": 5}
    for name in by_kind["meter"]:  # energy registers only count up (modulo the 16-bit wrap)
        v = series[name]
        assert all((b - a) % 65536 < 100 for a, b in itertools.pairwise(v))  # type: ignore[operator]
        assert v[-1] != v[0]
    for kind, most in (("setpoint", 15), ("mode", 12), ("state", 20)):  # a few times a day (Poisson)
        changes = [_changes(series[n]) for n in by_kind[kind]]
        assert sum(changes) > 0 and max(changes) <= most, (kind, changes)
    assert sum(_changes(series[n]) for n in by_kind["alarm"]) <= 8  # rare: ~1 in 3 days each, on then off
    for name in by_kind["temperature"]:  # tenths of a degree, a plausible indoor or supply range
        assert all(isinstance(v, int) and 50 <= v <= 280 for v in series[name])
    for name in by_kind["humidity"]:  # on the 0.1 %RH grid
        assert all(abs(float(v) * 10 - round(float(v) * 10)) < 1e-6 for v in series[name])  # type: ignore[arg-type]
    changed = sum(_changes(v) for v in series.values())
    assert changed < 0.5 * 99 * (len(series["p000"]) - 1)  # most values keep still from one read to the next


def test_the_same_seed_gives_the_same_day_and_another_seed_another() -> None:
    assert _day(3, 600.0) == _day(3, 600.0)
    assert _day(3, 600.0) != _day(4, 600.0)


def test_the_farm_serves_the_trace_where_the_counter_workload_moves_every_value() -> None:
    device = layout(1, 100, 15020)[0]
    inputs = [p for p in device.points if p.table == "input"]
    count = max(p.address for p in inputs) + 1

    def changed_between_two_reads(workload: str) -> int:
        farm = Controller(device, 0, workload)
        first, second = farm.read(4, 0, count), farm.read(4, 0, count)  # FC 4: the input registers
        assert first is not None and second is not None
        return sum(first[1 + 2 * p.address:3 + 2 * p.address] != second[1 + 2 * p.address:3 + 2 * p.address]
                   for p in inputs)

    assert changed_between_two_reads("counter") == len(inputs) == 60
    assert 1 <= changed_between_two_reads("building") < 20  # the probe, and what moved in a few microseconds
