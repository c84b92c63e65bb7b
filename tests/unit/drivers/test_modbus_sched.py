"""The bus scheduler and device runtimes on a fake clock: staggering, interval groups, urgent
jobs first, one request in flight, backoff of a dead device without delaying the others,
learned read limits, skipped slots, counters."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers._types import Quality, Sample
from drivers.modbus import ModbusPoint, PointCodec, ReadRequest
from drivers.modbus._device import BACKOFF_MAX_S, DeviceRuntime, DeviceSpec, Outcome
from drivers.modbus._sched import BusScheduler, Idle, Read, Urgent

Behave = Callable[[DeviceRuntime, ReadRequest, float], tuple[Outcome, float]]


def spec(name: str, points: tuple[ModbusPoint, ...], *, interval: float = 1.0, unit: int = 1,
         max_gap: int = 8) -> DeviceSpec:
    return DeviceSpec(
        name=name, unit_id=unit, poll_interval_s=interval, points=points,
        codecs=tuple(PointCodec(p.type, bit=p.bit) for p in points), max_gap=max_gap,
        max_registers=125, timeout_s=0.5, retries=0, write_multiple=False, where=f"modbus device {name}",
    )


def regs(*addresses: int, **intervals: float) -> tuple[ModbusPoint, ...]:
    """uint16 points at these addresses, named r<address>; `r5=10.0` gives r5 its own interval."""
    return tuple(ModbusPoint(name=f"r{a}", address=a, poll_interval_s=intervals.get(f"r{a}")) for a in addresses)


def good(device: DeviceRuntime, request: ReadRequest, now: float) -> tuple[Outcome, float]:
    data: list[int] | list[bool] = [False] * request.count if request.bits else [7] * request.count
    return Outcome(Quality.GOOD, data), 0.01


def silent(device: DeviceRuntime, request: ReadRequest, now: float) -> tuple[Outcome, float]:
    return Outcome(Quality.NO_ANSWER, timeouts=1), device.spec.timeout_s


@dataclass
class Run:
    reads: list[tuple[float, str, ReadRequest]] = field(default_factory=list)
    polls: list[tuple[float, str, list[Sample]]] = field(default_factory=list)
    jobs: list[tuple[float, str]] = field(default_factory=list)

    def times(self, device: str) -> list[float]:
        return [t for t, name, _ in self.polls if name == device]


def simulate(sched: BusScheduler[str], behave: dict[str, Behave], until: float, *, now: float = 0.0,
             polls: int | None = None) -> Run:
    """Drive the scheduler like the shell does, with time moving by each request's cost, until
    `until` or until `polls` polls are done."""
    run = Run()
    while now < until and (polls is None or len(run.polls) < polls):
        step = sched.next(now)
        if isinstance(step, Idle):
            now = step.until
            continue
        if isinstance(step, Urgent):
            run.jobs.append((now, step.job))
            now += 0.02
            sched.job_done()
            continue
        assert isinstance(step, Read)
        name = step.device.spec.name
        run.reads.append((now, name, step.request))
        outcome, cost = behave[name](step.device, step.request, now)
        now += cost
        done = sched.record(outcome, now, int(now * 1000))
        if done is not None:
            run.polls.append((now, done[0].spec.name, done[1]))
    return run


def bus(*specs: DeviceSpec) -> tuple[BusScheduler[str], list[DeviceRuntime]]:
    devices = [DeviceRuntime(s, k, len(specs), 0.0) for k, s in enumerate(specs)]
    return BusScheduler(devices), devices


def test_devices_are_staggered_across_their_interval() -> None:
    sched, _ = bus(*(spec(f"d{k}", regs(0), interval=2.0) for k in range(4)))
    run = simulate(sched, dict.fromkeys(["d0", "d1", "d2", "d3"], good), 4.0)
    firsts = [t for t, _, _ in run.reads[:8]]
    assert [name for _, name, _ in run.reads[:8]] == ["d0", "d1", "d2", "d3"] * 2
    assert firsts == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5])


def test_groups_due_at_the_same_time_are_read_together() -> None:
    points = regs(0, 1, 100, r1=3.0, r100=3.0)  # r0 every second, r1 and r100 every 3 s
    sched, _ = bus(spec("d", points))
    run = simulate(sched, {"d": good}, 6.5)
    per_poll = [[s.point for s in samples] for _, _, samples in run.polls]
    assert per_poll == [["d.r0", "d.r1", "d.r100"], ["d.r0"], ["d.r0"]] * 2 + [["d.r0", "d.r1", "d.r100"]]
    counts = [(r.start, r.count) for t, _, r in run.reads if t < 1]
    assert sorted(counts) == [(0, 2), (100, 1)]  # r1 rides with r0 when both are due
    assert [(r.start, r.count) for t, _, r in run.reads if 1 <= t < 2] == [(0, 1)]


def test_urgent_jobs_go_before_the_rest_of_a_poll_and_one_thing_is_in_flight() -> None:
    sched, _ = bus(spec("d", regs(0, 50, 100, 150)))  # four reads per poll
    first = sched.next(0.0)
    assert isinstance(first, Read)
    with pytest.raises(RuntimeError, match="one request at a time"):
        sched.next(0.0)
    sched.submit("write-1")
    sched.submit("write-2")
    assert sched.record(Outcome(Quality.GOOD, [1]), 0.01, 10) is None
    assert sched.next(0.01) == Urgent("write-1")
    with pytest.raises(RuntimeError):
        sched.next(0.02)
    sched.job_done()
    assert sched.next(0.03) == Urgent("write-2")
    sched.job_done()
    nxt = sched.next(0.04)
    assert isinstance(nxt, Read) and nxt.request.start == 50  # the poll goes on
    with pytest.raises(RuntimeError, match="no read is in flight"):
        BusScheduler([]).record(Outcome(Quality.GOOD), 0, 0)


def test_an_urgent_job_wakes_an_idle_bus() -> None:
    sched, _ = bus(spec("d", regs(0), interval=10.0))
    run = simulate(sched, {"d": good}, 0.5)
    assert isinstance(sched.next(0.5), Idle)
    sched.submit("write")
    assert sched.next(0.5) == Urgent("write")
    sched.job_done()
    assert len(run.polls) == 1


def test_a_dead_device_is_backed_off_and_does_not_hold_up_the_others() -> None:
    dead = spec("dead", regs(0, 200, 400), unit=1)  # three reads per poll
    alive = spec("alive", regs(0), unit=2)
    sched, (d_dead, _) = bus(dead, alive)
    run = simulate(sched, {"dead": silent, "alive": good}, 600.0)
    dead_polls = run.times("dead")
    gaps = [b - a for a, b in itertools.pairwise(dead_polls)]
    assert gaps == sorted(gaps)  # ever sparser ...
    assert max(gaps) <= BACKOFF_MAX_S + 1 and gaps[-1] > BACKOFF_MAX_S - 1  # ... up to the cap
    assert 9 <= len(dead_polls) <= 20
    reads_per_poll = len([1 for _, name, _ in run.reads if name == "dead"]) / len(dead_polls)
    assert reads_per_poll == 1  # the first silence skips the rest of the poll
    assert all(s.quality is Quality.NO_ANSWER and s.value is None for _, n, ss in run.polls if n == "dead"
               for s in ss)
    assert all(len(ss) == 3 for _, n, ss in run.polls if n == "dead")
    alive_starts = [t for t, name, _ in run.reads if name == "alive"]
    lateness = [t - (0.5 + k) for k, t in enumerate(alive_starts)]
    assert len(alive_starts) == 600 and max(lateness) <= dead.timeout_s + 0.05
    assert d_dead.failures == len(dead_polls) and d_dead.stats.timeouts == len(dead_polls)


def test_a_device_that_comes_back_is_polled_on_its_schedule_again() -> None:
    def flaky(device: DeviceRuntime, request: ReadRequest, now: float) -> tuple[Outcome, float]:
        return silent(device, request, now) if now < 100 else good(device, request, now)

    sched, (device,) = bus(spec("d", regs(0, 1)))
    run = simulate(sched, {"d": flaky}, 200.0)
    after = [t for t in run.times("d") if t > 100]
    assert after[0] - 100 <= BACKOFF_MAX_S
    steady = [b - a for a, b in itertools.pairwise(after)]
    assert steady and all(abs(g - 1.0) < 0.02 for g in steady)
    assert device.failures == 0
    messages = [e.message for e in device.events]
    assert [m.split(": ", 1)[1] for m in messages if "lost" in m or "back" in m] == [
        "lost: NO_ANSWER", "back, 1 read(s) per full poll",
    ]
    assert any("next try in 60 s" in m for m in messages)


def test_a_refused_large_read_halves_the_limit_within_the_same_poll() -> None:
    def refuses_over_10(device: DeviceRuntime, request: ReadRequest, now: float) -> tuple[Outcome, float]:
        if request.count > 10:
            return Outcome(Quality.DEVICE_EXCEPTION, exception_code=3), 0.01
        return good(device, request, now)

    sched, (device,) = bus(spec("d", regs(*range(30))))
    run = simulate(sched, {"d": refuses_over_10}, 2.5)
    first_poll = [r.count for t, _, r in run.reads if t < 0.5]
    assert first_poll[:2] == [30, 15] and all(c <= 7 for c in first_poll[2:])
    assert {s.quality for _, _, ss in run.polls for s in ss} == {Quality.GOOD}
    assert len(run.polls[0][2]) == 30 and device.planner.max_registers == 7
    assert all(r.count <= 7 for t, _, r in run.reads if t >= 0.5)
    warnings = [e.message for e in device.events if e.level == logging.WARNING]
    assert warnings == [
        "modbus device d: refused reads of 30 (DEVICE_EXCEPTION 3 (illegal data value)), "
        "15 (DEVICE_EXCEPTION 3 (illegal data value)): reads limited to 7 registers and 2000 bits from now on"
    ]
    assert device.stats.errors == 0


def test_silence_on_a_large_read_lowers_the_limit_only_when_smaller_reads_answer() -> None:
    def silent_over_10(device: DeviceRuntime, request: ReadRequest, now: float) -> tuple[Outcome, float]:
        return silent(device, request, now) if request.count > 10 else good(device, request, now)

    with_a_coil = (*regs(*range(20)), ModbusPoint(name="c", address=0, table="coil", type="bool"))
    sched, (device,) = bus(spec("d", with_a_coil))
    run = simulate(sched, {"d": silent_over_10}, 1.5)
    assert [r.count for _, _, r in run.reads[:3]] == [1, 20, 10]  # smallest first, then halving
    assert device.planner.max_registers == 10
    assert {s.quality for _, _, ss in run.polls for s in ss} == {Quality.GOOD}

    sched, (lone,) = bus(spec("lone", regs(*range(20))))  # nothing answers: no evidence of size
    simulate(sched, {"lone": silent_over_10}, 5.0)
    assert lone.planner.max_registers == 125 and lone.failures >= 2


@settings(max_examples=60, deadline=None)
@given(
    addresses=st.lists(st.integers(0, 300), min_size=1, max_size=40, unique=True),
    limit=st.integers(2, 125),
    silence=st.booleans(),
)
def test_the_learned_limit_reads_everything_from_the_first_poll(
    addresses: list[int], limit: int, silence: bool
) -> None:
    points = (*regs(*addresses), ModbusPoint(name="c", address=0, table="coil", type="bool"))

    def device_with_limit(device: DeviceRuntime, request: ReadRequest, now: float) -> tuple[Outcome, float]:
        if request.count <= limit:
            return good(device, request, now)
        if silence:
            return silent(device, request, now)
        return Outcome(Quality.DEVICE_EXCEPTION, exception_code=2), 0.01

    sched, (device,) = bus(spec("d", points, max_gap=20))
    run = simulate(sched, {"d": device_with_limit}, 1000.0, polls=4)
    assert {s.quality for _, _, samples in run.polls for s in samples} == {Quality.GOOD}
    assert all(len(samples) == len(points) for _, _, samples in run.polls[:1])
    learned = device.planner.max_registers
    assert learned == 125 or limit // 2 <= learned  # halving never undershoots by more than half
    last_poll = [r for t, _, r in run.reads if t > run.polls[-2][0]]
    assert all(r.count <= limit for r in last_poll)  # settled: nothing refused any more
    assert device.stats.errors == 0


def test_a_slow_poll_skips_the_slots_it_missed() -> None:
    def slow_once(device: DeviceRuntime, request: ReadRequest, now: float) -> tuple[Outcome, float]:
        return Outcome(Quality.GOOD, [1]), 3.5 if 2 <= now < 3 else 0.01

    sched, _ = bus(spec("d", regs(0)))
    run = simulate(sched, {"d": slow_once}, 8.0)
    assert [round(t, 2) for t, _, _ in run.reads] == [0.0, 1.0, 2.0, 6.0, 7.0]


def test_counters() -> None:
    def mixed(device: DeviceRuntime, request: ReadRequest, now: float) -> tuple[Outcome, float]:
        if request.start == 100:
            return Outcome(Quality.DEVICE_EXCEPTION, exception_code=2, tries=2), 0.02
        return Outcome(Quality.GOOD, [1] * request.count, tries=2, timeouts=1), 0.02

    sched, (device,) = bus(spec("d", regs(0, 100)))
    simulate(sched, {"d": mixed}, 2.5)
    assert (device.stats.cycles, device.stats.requests, device.stats.errors, device.stats.timeouts) == (3, 12, 3, 3)
    assert sched.cycles == 3
