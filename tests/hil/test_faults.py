"""HIL scenarios of faults: what QA breaks around a running Box, on every target that has what it needs.

They run after the other scenarios of a target (tests/hil/conftest.py orders them last: they push
configurations, evict from the queue and revoke the Box), in this order:

1. a **network outage** past the queue's bound (the WAN link out: sim, a blackhole in the fault
   proxy in front of the broker; vm, QMP ``set_link`` on the VM's network card): the bound is set
   small (1,000 samples: an outage of hours on a Box's 5,000,000, compressed), the oldest readings
   are evicted, the Box counts them (its heartbeat, the platform's "evicted" alert) and, after the
   link returns, every other value the simulator served is stored, none twice;
2. a **Modbus TCP device reboot** (its connections reset, its writable points back to their
   defaults) and an **unplugged device** (no answer): the device's points are a comm fault at the
   platform, no good value is stored for it while it is away, the other devices keep delivering,
   and polling resumes without boxd restarting; every value served around it is stored once;
3. **Modbus RTU at the wrong line settings** (sim: the line is a pty, the device at 19200 baud, the Box
   configured 9600; parity cannot be set on this kernel's ptys): a bad-frame fault at the platform
   and in ``boxctl status``, no value; the configuration fixed by a push, the values come; then a
   unit unplugged from the line;
4. a **BACnet device restart** (a target with `bacnet`; sim: the device in a network namespace of
   its own): its points a comm fault while it is down, back without boxd restarting;
5. a **clock jump** forward and back on the Box (sim: boxd under libfaketime): no value lost, every
   reading stamped with the true time (the Box keeps the platform's time across a step of its system
   clock, says so, and asks the platform, whose answer confirms it: no clock alert), batches still sent
   at their delay;
6. **the modem's faults** (issue 12; a target with `modem`; sim: ModemManager faked on D-Bus): the
   network drops the data bearer, the network is lost and found, the SIM is pulled out and put back,
   the modem resets by itself: the Box says what happened (``boxctl status``, its log; the SIM at
   the platform: a ``modem_config`` alert, closed when it is back), brings the bearer up again by
   itself (no reset of a modem that needed none), and no value is lost;
7. **revocation of the live Box** (last: the Box is then out of the fleet): its session is cut,
   it cannot come back, it says why (``boxctl status``, its log), and nothing it queued after the
   revocation is accepted.

Assertions are what QA sees: the platform's samples, qualities, alerts and the Box's answers,
``boxctl status`` where the target has a shell for it (sim), and the building simulator's log of
what it served (`tests/support/proofs.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence

import pytest

from boxd.clock import MAX_SKEW_MS
from drivers import Quality
from drivers.sim._served import Served
from drivers.sim.bacnet_building import BacnetBuildingDevice
from drivers.sim.modbus_rtu_building import RtuBuildingSimulator
from tests.hil.conftest import UPLINK, Hil
from tests.support.proofs import assert_exactly_once, poll_numbers, tally, wait_stored
from tests.support.simthread import SimThread
from tests.support.wait import free_port, wait_for

pytestmark = pytest.mark.timeout(1800)

QUEUE_BOUND = 1000  # samples (the schema's least): an outage of hours on a real Box's 5,000,000, compressed
FAST = UPLINK.replace("[uplink]\n", "[uplink]\nheartbeat_s = 1\n")  # the evicted count, the clock: said at once
# what boxd says when the platform refused it for its revoked certificate (boxd.uplink._refused_in_words)
REVOKED = re.compile(r"certificate was REVOKED by the platform|certificate was probably revoked")
LINE_FAULTS = {Quality.BAD_FRAME}  # a line at the wrong speed: the Box hears garbage, and says so (not silence)
LIBFAKETIME = next(iter(glob.glob("/usr/lib/*/faketime/libfaketime.so.1")), None)


def _slow_on_vm(hil: Hil) -> None:
    """The vm target runs this scenario in `make hil` only: minutes under emulation, beyond what
    `make test`'s budget has room for (tests/hil/README.md)."""
    if hil.kind == "vm" and os.environ.get("HIL_SLOW_VM") != "1":
        pytest.skip("slow_vm: on the vm target only in `make hil` (HIL_SLOW_VM=1): minutes under emulation")


def _on(hil: Hil) -> None:
    """The Box powered and ready, unless the scenario before left it so: a ready check again would wait for a
    fresh reading of every point, the slowest polled once a minute (the building's model), and the scenario's
    own first wait shows the Box live."""
    if hil.strategy.status != "ready":
        hil.strategy.transition("ready")


def _devices(hil: Hil) -> str:
    """The Modbus TCP building as the scenarios configure it: sim, polled every 0.1 s with a 1 s timeout
    (a device that does not answer is a fault within a second); elsewhere the bench's own."""
    if hil.kind == "sim" and hil.building is not None:
        return hil.building.sim.points_toml(0.1, timeout_s=1.0, retries=0)
    return hil.devices


def _push(hil: Hil, text: str, timeout: float = 300) -> int:
    """Push a configuration through the platform; wait for the Box's answer (applied or kept)."""
    version = hil.cloud.push_config(hil.box_id, text)

    def answered() -> str | None:
        row = hil.cloud.store.config_state(hil.box_id)
        return row.status if row is not None and row.version == version and row.status else None
    status = wait_for(answered, timeout, f"the Box's answer to configuration {version}")
    assert status in ("applied", "kept"), (status, hil.cloud.store.config_state(hil.box_id))
    return version


def _restore(hil: Hil) -> None:
    """The bench's configuration again (the next scenario starts from it)."""
    _push(hil, UPLINK + hil.devices)


def _latest(hil: Hil, prefix: str) -> dict[str, tuple[int, object, int]]:
    """The platform's latest sample of each point under `prefix`: (ts ms, value, quality)."""
    return {p: (ts, v, q) for p, ts, v, q, _ in hil.cloud.store.latest(hil.box_id) if p.startswith(prefix)}


def _good_since(hil: Hil, prefix: str, since_ms: float) -> bool:
    latest = _latest(hil, prefix)
    return bool(latest) and all(q == Quality.GOOD and ts > since_ms for ts, _, q in latest.values())


def _said(hil: Hil, cond: Callable[[], object], timeout: float, what: str) -> None:
    """`wait_for`, with the Box's console (sim: its log) and the platform's latest samples on a timeout."""
    try:
        wait_for(cond, timeout, what)
    except AssertionError as e:
        latest = sorted((p, q) for p, _, _, q, _ in hil.cloud.store.latest(hil.box_id))
        raise AssertionError(f"{e}\nlatest (point, quality): {latest}\n--- console ---\n"
                             f"{hil.console()[-3000:]}") from None


def _delivering_since(hil: Hil, since_ms: float) -> bool:
    """Every point of the bench's building polled at the device's rate good at the platform, sampled after
    `since_ms` (not the points a device's table polls once a minute, such as its model string: waiting
    for those is waiting for their next poll, up to a minute, which a 60 s deadline lost now and then)."""
    import tomllib
    latest = {p: (ts, q) for p, ts, _, q, _ in hil.cloud.store.latest(hil.box_id)}
    polled = {f"{d['name']}.{p['name']}" for d in tomllib.loads(hil.devices)["modbus_tcp"] for p in d["points"]
              if float(p.get("poll_interval_s", 0)) <= float(d.get("poll_interval_s", 1))}
    return all(p in latest and latest[p][1] == Quality.GOOD and latest[p][0] > since_ms for p in polled)


def _every_sample(hil: Hil, reads: Sequence[Served], evicted: int = 0) -> dict[str, int]:
    """`tests.support.proofs.assert_every_sample` over the building's points only (an RTU or BACnet
    device another scenario configured is not in its served log): every owed value stored but the
    evicted, none more often than served. Returns the figures."""
    assert hil.building is not None
    configured = hil.configured()
    samples = [s for s in hil.cloud.store.samples(hil.box_id) if s[0] in configured]
    t = tally(reads, samples, hil.building.served.reads())
    total = t.total
    assert total.owed > 0, "the simulator served nothing the Box owed: the proof proved nothing"
    assert total.lost <= evicted, f"{total.lost} samples lost, {evicted} evicted: {t.describe()}"
    assert total.duplicated == 0, f"{total.duplicated} samples duplicated: {t.describe()}"
    return t.figures()


def _window(reads: Sequence[Served], mark: int) -> list[Served]:
    """The reads of every device's polls that began after read `mark` (the proof's window: the polls
    the Box owes from a moment on, whole; `tests/support/proofs.py`)."""
    numbers = poll_numbers(reads)
    first: dict[tuple[int, int], int] = {}
    for i, (r, n) in enumerate(zip(reads, numbers, strict=True)):
        if i >= mark:
            first.setdefault((r.life, r.unit), n + 1)  # the poll under way at `mark` may have begun before it
    return [r for r, n in zip(reads, numbers, strict=True) if (r.life, r.unit) in first and n >= first[r.life, r.unit]]


def _units(hil: Hil) -> dict[str, int]:
    import tomllib
    return {d["name"]: int(d.get("unit_id", 1)) for d in tomllib.loads(hil.devices)["modbus_tcp"]}


def _status_ts(hil: Hil) -> float | None:
    box = hil.cloud.store.box(hil.box_id)
    return box.status_ts if box is not None else None


# -- 1. a network outage past the queue's bound -------------------------------------------------

@pytest.mark.slow_vm
def test_a_network_outage_past_the_queue_bound_evicts_the_oldest_counts_them_and_delivers_the_rest(hil: Hil) -> None:
    hil.need("power", "building")
    _slow_on_vm(hil)
    if hil.link is None:
        pytest.skip(f"target {hil.name} ({hil.kind}) has no WAN link to pull")
    building, store = hil.building, hil.cloud.store
    assert building is not None
    hil.strategy.transition("ready")
    health = store.health(hil.box_id)
    evicted_before = int(str(health[1].get("evicted") or 0)) if health else 0
    # polled every 0.1 s on sim (about 280 samples/s: the bound holds 4 s). The outage's evictions go as one event
    # (`boxd.fieldbus.merge_evictions`), not one per poll: those messages alone once took the broker's per-Box
    # rate, and the backlog drained slowly while the Box evicted on
    devices = _devices(hil)
    _push(hil, FAST + f"[queue]\nmax_samples = {QUEUE_BOUND}\n\n" + devices)
    mark = len(building.served)
    batches = len(store.batch_keys(hil.box_id))
    wait_for(lambda: len(store.batch_keys(hil.box_id)) > batches + 3, 120, "data flowing with the bound")
    started = time.monotonic()
    down = len(building.served)
    down_ms = time.time() * 1000
    hil.link(False)
    try:
        # twice the bound served while the link is out (vm: 27 values a second, 74 s)
        wait_for(lambda: sum(len(r.values) for r in building.served.reads()[down:]) > 2 * QUEUE_BOUND, 600,
                 "the building to serve far more than the queue holds")
        if hil.boxctl is not None:  # the Box's own view: the queue at its bound, the eviction in its log
            daemon = hil.boxctl()["daemon"]
            # the bound is enforced after each poll's commit: at most a poll's samples over it
            assert not daemon["connected"] and daemon["queue_samples"] <= QUEUE_BOUND + len(hil.configured()), daemon
            assert "evicted the" in hil.console()
    finally:
        hil.link(True)
    up_ms = time.time() * 1000
    alert = wait_for(lambda: next((a for a in store.alerts(hil.box_id) if a.kind == "evicted"), None), 300,
                     "the platform's evicted alert")
    # the backlog drains (evicting goes on while the queue is at its bound): then the count is final, said by
    # two heartbeats taken after the link returned, the queue near empty, the same count
    def drained() -> tuple[float, dict[str, object]] | None:
        report = store.health(hil.box_id)
        if report is None or int(str(report[1]["ts"])) < up_ms + 2000:
            return None
        return report if int(str(report[1]["queue"])) < QUEUE_BOUND // 4 else None
    first = wait_for(drained, 300, "a heartbeat saying the backlog is gone")
    def next_one() -> tuple[float, dict[str, object]] | None:
        r = drained()
        return r if r is not None and r[1]["ts"] != first[1]["ts"] else None
    report = wait_for(next_one, 60, "the heartbeat after it")
    assert report[1]["evicted"] == first[1]["evicted"], (first, report)
    evicted = int(str(report[1]["evicted"])) - evicted_before
    assert evicted > 0, report
    # the platform's alert says the Box's count (not its first event's), and it never called the evicted a gap
    _said(hil, lambda: any(a.kind == "evicted" and f"{report[1]['evicted']} oldest" in a.message
                           for a in store.alerts(hil.box_id)), 60, f"the evicted alert to say {report[1]['evicted']}")
    gaps = [a for a in store.alerts(hil.box_id, include_closed=True) if a.kind == "gap" and a.opened > down_ms / 1000]
    assert not gaps, gaps
    # in a few events (a range of batch numbers each at most; one per poll would be hundreds of messages)
    told = sum(len(store.evicted_ranges(hil.box_id, e)) for e in {e for e, _ in store.batch_keys(hil.box_id)})
    assert told <= 64, f"the evictions came as {told} ranges of batch numbers: one event per poll?"
    reads = _window(building.served.reads(), mark)
    try:
        wait_stored(store, hil.box_id, reads, 120 if hil.kind == "sim" else 600, evicted=evicted)
    except AssertionError as e:
        late = store.health(hil.box_id)
        raise AssertionError(f"{e}\nevicted {evicted} at the drained heartbeat {report}, now {late}\n"
                             f"{_outage_report(hil, reads, down_ms, up_ms)}") from None
    hil.timings["outage past the bound, link back to every kept value stored"] = round(time.monotonic() - started, 1)
    figures = _every_sample(hil, reads, evicted)
    batches_stored = assert_exactly_once(store, hil.box_id)  # evicted batch numbers are reported, not holes
    assert 0 < figures["lost"] <= evicted, figures
    # the oldest went: the newest reading of each device from before the link returned is stored (a device's
    # counter is served once), while older ones of the outage were evicted
    t = tally(reads, store.samples(hil.box_id))
    counters = [(r.at_ms, p, v) for r in reads for p, v in r.values
                if p.endswith(".reads") and down_ms <= r.at_ms < up_ms]
    newest = {p: (at, v) for at, p, v in sorted(counters)}
    assert not [(p, v) for p, (_, v) in newest.items() if v in t.missing.get(p, ())], \
        f"the newest readings of the outage were evicted: {t.describe(lost_only=True)}"
    assert any(v in t.missing.get(p, ()) for _, p, v in counters), "nothing of the outage itself was evicted"
    print(f"\n{hil.name}: outage past a bound of {QUEUE_BOUND}: {evicted} evicted and reported in {told} range(s) "
          f"(alert: {alert.message!r}); {figures}; batches {batches_stored}; {hil.timings}")
    _restore(hil)


def _outage_report(hil: Hil, reads: Sequence[Served], down_ms: float, up_ms: float) -> str:
    """For a failure: when the lost counter values were served (against the link going and coming
    back), the batches the platform is missing and the ranges the Box said it evicted."""
    store = hil.cloud.store
    t = tally(reads, store.samples(hil.box_id))
    lost = sorted(int(r.at_ms - down_ms) for r in reads for p, v in r.values
                  if p.endswith(".reads") and v in t.missing.get(p, ()))
    keys = store.batch_keys(hil.box_id)
    epochs = {e for e, _ in keys}
    ranges = {e: store.evicted_ranges(hil.box_id, e) for e in epochs}
    have = {e: {s for f, s in keys if f == e} for e in epochs}
    said = {e: {s for a, b in ranges[e] for s in range(a, b + 1)} for e in epochs}
    holes = {e: [s for s in range(1, max(have[e]) + 1) if s not in have[e] and s not in said[e]] for e in epochs}
    spans = [(lost[i], lost[i + 1]) for i in range(len(lost) - 1) if lost[i + 1] - lost[i] > 1000]
    return (f"link out at 0 ms, back at {int(up_ms - down_ms)} ms; {len(lost)} lost counter values served from "
            f"{lost[:1]} to {lost[-1:]} ms (jumps over 1 s: {spans[:10]}); batches missing, not said evicted: "
            f"{ {e: h[:40] for e, h in holes.items()} }; {sum(len(x) for x in said.values())} said evicted; "
            f"{t.describe(lost_only=True)}")


# -- 2. a Modbus TCP device rebooted, then unplugged --------------------------------------------

@pytest.mark.slow_vm
def test_a_modbus_tcp_device_reboot_and_unplug_are_faults_of_that_device_and_polling_resumes(hil: Hil) -> None:
    hil.need("building")
    _slow_on_vm(hil)
    building, store = hil.building, hil.cloud.store
    assert building is not None
    hil.strategy.transition("ready")
    devices = _devices(hil)
    if devices != hil.devices:
        _push(hil, UPLINK + devices)
    name, unit = next(iter(_units(hil).items()))
    others = [d for d in _units(hil) if d != name]
    session = _status_ts(hil)
    pid = hil.boxctl()["daemon"]["pid"] if hil.boxctl is not None else None
    mark = len(building.served)
    started = time.monotonic()

    # a reboot: its connections reset, its writable points back to their defaults
    reboot_ms = time.time() * 1000
    building.call(building.sim.restart, unit)
    # its poll counter (read at every poll; a slow point such as its model comes at its own interval)
    wait_for(lambda: _good_since(hil, f"{name}.reads", reboot_ms + 500), 300, f"{name} polled again after its reboot")
    hil.timings["TCP device reboot to polled again"] = round(time.monotonic() - started, 1)

    # unplugged: no answer at all; a comm fault, never a value
    started = time.monotonic()
    building.call(building.sim.set_offline, unit)
    off_ms = time.time() * 1000
    wait_for(lambda: all(q == Quality.NO_ANSWER for _, _, q in _latest(hil, f"{name}.").values()), 300,
             f"{name}'s points a comm fault (no answer) at the platform")
    if hil.boxctl is not None:
        bus = hil.boxctl()["daemon"]["bus_health"]
        assert bus[name]["errors"] > 0, bus
    away = time.time() * 1000
    wait_for(lambda: all(_good_since(hil, f"{o}.", away) for o in others), 120, "the other devices to keep delivering")
    building.call(building.sim.set_offline, unit, False)
    on_ms = time.time() * 1000
    wait_for(lambda: _good_since(hil, f"{name}.", on_ms), 300, f"{name} back")
    hil.timings["TCP device unplugged: fault shown, back"] = round(time.monotonic() - started, 1)
    # while it was away (after the poll under way when it went), no good value of it was stored
    invented = [(p, ts, v) for p, ts, v, q in store.samples(hil.box_id)
                if p.startswith(f"{name}.") and q == Quality.GOOD and off_ms + 2000 < ts < on_ms]
    assert not invented, f"values stored for {name} while it did not answer: {invented[:5]}"
    # one session and one daemon throughout; every value served around the faults stored once
    assert _status_ts(hil) == session, "the Box's session was re-made (boxd restarted or reconnected)"
    if pid is not None:
        assert hil.boxctl is not None and hil.boxctl()["daemon"]["pid"] == pid
    reads = _window(building.served.reads(), mark)
    wait_stored(store, hil.box_id, reads, 300)
    figures = _every_sample(hil, reads)
    print(f"\n{hil.name}: TCP device {name} rebooted and unplugged: {figures}; {hil.timings}")
    if devices != hil.devices:
        _restore(hil)


# -- 3. Modbus RTU at the wrong line settings; a unit unplugged ------------------------------------

def test_modbus_rtu_at_the_wrong_baud_rate_is_a_line_fault_until_the_configuration_is_fixed(
        hil: Hil) -> None:
    hil.need("rtu")
    _on(hil)
    # the wrong speed only: this kernel refuses parity on a pty (EINVAL, drivers/modbus/_link.py), so a parity
    # mismatch is the lab's to show (tests/hil/README.md). The line: the bench's (vm: attached to the VM as its
    # ttyS2 for the whole session, the guest's line settings reaching the pty through QEMU) or one of its own
    line = contextlib.nullcontext(hil.rtu) if hil.rtu is not None else SimThread(
        sim=RtuBuildingSimulator(baudrate=19200, update_interval_s=0.2))
    with line as rtu:
        # software emulation: polled every second, a second to answer
        poll_s, timeout_s = (0.2, 0.3) if hil.kind == "sim" else (1.0, 1.0)
        right = rtu.sim.points_toml(poll_s, timeout_s=timeout_s)
        assert "baudrate = 19200" in right, right
        if hil.rtu_port:
            assert isinstance(rtu.sim, RtuBuildingSimulator)
            right = right.replace(f'port = "{rtu.sim.path}"', f'port = "{hil.rtu_port}"')
            assert hil.rtu_port in right, right
        wrong = right.replace("baudrate = 19200", "baudrate = 9600")
        units = ("meter2", "meter3", "room2")
        started = time.monotonic()
        pushed_ms = time.time() * 1000
        _push(hil, UPLINK + _devices(hil) + "\n" + wrong)  # kept: the TCP devices give good readings

        def faulted() -> set[int] | None:
            latest = {p: v for u in units for p, v in _latest(hil, f"{u}.").items()}
            qualities = {q for ts, _, q in latest.values() if ts > pushed_ms}
            return qualities if latest and qualities and qualities <= LINE_FAULTS and all(
                ts > pushed_ms for ts, _, _ in latest.values()) else None
        seen = wait_for(faulted, 120, "the RTU points a bad-frame fault at the platform")
        assert not [s for s in hil.cloud.store.samples(hil.box_id)
                    if s[0].startswith(units) and s[3] == Quality.GOOD], "a value was taken from garbled frames"
        if hil.boxctl is not None:
            doc = hil.boxctl()
            bus = doc["daemon"]["bus_health"]
            import tomllib
            line = tomllib.loads(wrong)["modbus_rtu"][0]["name"]  # the bus is the line
            assert not bus[line]["polling"] and bus[line]["errors"] > 0, bus
        hil.timings["RTU wrong baud rate: fault shown"] = round(time.monotonic() - started, 1)
        print(f"\n{hil.name}: RTU at 9600 8N1 against a line at 19200 8N1: {sorted(Quality(q).name for q in seen)}")

        started = time.monotonic()
        fixed_ms = time.time() * 1000
        _push(hil, UPLINK + _devices(hil) + "\n" + right)
        _said(hil, lambda: all(_good_since(hil, f"{u}.", fixed_ms) for u in units), 120,
              "the RTU devices good once the line settings are right")
        rtu.call(rtu.sim.pause)
        frozen = rtu.call(rtu.sim.values)
        paused_ms = time.time() * 1000
        wait_for(lambda: all(_latest(hil, p).get(p, (0, None, 0))[0] > paused_ms + 500
                             and _latest(hil, p)[p][1] == pytest.approx(v) for p, v in frozen.items()),
                 60, "the platform to hold the RTU devices' values")
        rtu.call(rtu.sim.resume)
        hil.timings["RTU line fixed by a push: values"] = round(time.monotonic() - started, 1)

        # a unit unplugged from the line: no answer, the others on the line keep going
        started = time.monotonic()
        rtu.call(rtu.sim.set_offline, 8)
        off_ms = time.time() * 1000
        wait_for(lambda: all(q == Quality.NO_ANSWER for _, _, q in _latest(hil, "meter3.").values()), 60,
                 "meter3 a comm fault (no answer)")
        _said(hil, lambda: _good_since(hil, "meter2.", off_ms + 1000) and _good_since(hil, "room2.", off_ms + 1000),
              60, "meter2 and room2 to keep delivering")
        rtu.call(rtu.sim.set_offline, 8, False)
        on_ms = time.time() * 1000
        wait_for(lambda: _good_since(hil, "meter3.", on_ms), 60, "meter3 back")
        # after the poll under way when it went (begun up to a poll and a timeout before), by the Box's clock, which
        # may be off this machine's by up to boxd.clock's MAX_SKEW_MS before the platform corrects it (vm: a guest
        # clock set from the RTC at each boot, a second's resolution; sim: this machine's)
        grace_ms = 1000 if hil.kind == "sim" else (poll_s + timeout_s) * 1000 + MAX_SKEW_MS
        invented = [(p, ts - off_ms, v) for p, ts, v, q in hil.cloud.store.samples(hil.box_id)
                    if p.startswith("meter3.") and q == Quality.GOOD and off_ms + grace_ms < ts < on_ms]
        assert not invented, (f"values stored for meter3 while it did not answer (point, ms after it went, value; "
                              f"back after {on_ms - off_ms:.0f} ms): {invented[:5]}")
        hil.timings["RTU unit unplugged: fault shown, back"] = round(time.monotonic() - started, 1)
        _restore(hil)
    print(f"\n{hil.name}: {hil.timings}")


# -- 4. a BACnet device restart --------------------------------------------------------------------

def test_a_bacnet_device_restart_and_its_points_come_back_without_restarting_boxd(hil: Hil) -> None:
    hil.need("bacnet", "building")
    if hil.kind != "sim":  # a bench's device needs its own power port in the target file: not wired
        pytest.skip(f"target {hil.name} ({hil.kind}): the scenario drives the BACnet simulator on this machine")
    hil.strategy.transition("ready")
    box_port = free_port()
    with _field_link() as (interface, address, namespace):
        # the device in the field's namespace on BACnet's own port, as on a building's network
        device = BacnetBuildingDevice(f"{address}/24", 1001, zones=2, update_interval_s=0.2)
        with SimThread(sim=device, netns=namespace) as bacnet:
            points = "".join(
                f'\n[[bacnet.devices.points]]\nname = "{n}"\nobject = "{o}"\n' for n, o in
                (("supply_temp", "analog-input,1"), ("fan_status", "binary-input,1")))
            config = (f'\n[[bacnet]]\nname = "bacnet-1"\ninterface = "{interface}"\nport = {box_port}\n'
                      f'device_instance = 4194300\napdu_timeout_s = 0.5\napdu_retries = 0\n\n'
                      f'[[bacnet.devices]]\nname = "ahu9"\ndevice_instance = 1001\naddress = "{address}:47808"\n'
                      f'poll_interval_s = 0.5\ncov = "off"\n' + points)
            pushed_ms = time.time() * 1000
            _push(hil, UPLINK + _devices(hil) + config)
            _said(hil, lambda: _good_since(hil, "ahu9.", pushed_ms) and len(_latest(hil, "ahu9.")) == 2, 120,
                  "the BACnet device's points good")
            session = _status_ts(hil)
            pid = hil.boxctl()["daemon"]["pid"] if hil.boxctl is not None else None
            started = time.monotonic()
            # powered off: its socket closed, nothing answers
            asyncio.run_coroutine_threadsafe(device.stop(), bacnet.loop).result(30)
            down_ms = time.time() * 1000
            _said(hil, lambda: all(q == Quality.NO_ANSWER and ts > down_ms
                                   for ts, _, q in _latest(hil, "ahu9.").values()), 60,
                  "the BACnet device's points a comm fault (no answer) while it is down")
            # nothing else disturbed: the Modbus devices keep delivering while it is down
            away_ms = time.time() * 1000
            _said(hil, lambda: _delivering_since(hil, away_ms), 60, "the other devices to keep delivering")
            # it boots: an I-Am, then it answers again
            asyncio.run_coroutine_threadsafe(device.start(), bacnet.loop).result(30)
            back_ms = time.time() * 1000
            _said(hil, lambda: _good_since(hil, "ahu9.", back_ms), 60, "the BACnet device's points back")
            hil.timings["BACnet device restart: fault shown, back"] = round(time.monotonic() - started, 1)
            invented = [s for s in hil.cloud.store.samples(hil.box_id)
                        if s[0].startswith("ahu9.") and s[3] == Quality.GOOD and down_ms + 1000 < s[1] < back_ms]
            assert not invented, f"values stored for ahu9 while it was down: {invented[:5]}"
            # without restarting boxd or re-making its session
            assert _status_ts(hil) == session, "the Box's session was re-made (boxd restarted or reconnected)"
            if pid is not None:
                assert hil.boxctl is not None and hil.boxctl()["daemon"]["pid"] == pid
            _restore(hil)
    print(f"\n{hil.name}: {hil.timings}")


@contextlib.contextmanager
def _field_link() -> Iterator[tuple[str, str, str]]:
    """The Box's BACnet field network on the sim target: a veth pair, the Box's end in this machine's
    namespace (boxd is a process of it), the device's end in a network namespace of its own (BACnet/IP
    needs a real link: with both addresses local, the Box's request, sent by the veth (its socket is bound
    to the interface), came in at the other end from one of this machine's own addresses, which the
    kernel drops as a martian, and an answer to a local address goes by `lo`, which a socket bound to the
    veth never hears). 198.19.0.0/16 (a benchmarking range, unused by the other rigs, which take
    198.18/16). (the Box's interface, the device's address, its namespace); removed on exit."""
    used = set(re.findall(r"inet 198\.19\.(\d+)\.", subprocess.run(
        ["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, timeout=15).stdout))
    block = next(str(k) for k in [*range(os.getpid() % 250, 256), *range(256)] if str(k) not in used)
    link, namespace = f"hilb{os.getpid() % 100000}", f"hil-field-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", namespace], check=True, capture_output=True, timeout=15)
    try:
        for cmd in (["link", "add", link, "type", "veth", "peer", "name", "fdev0", "netns", namespace],
                    ["addr", "add", f"198.19.{block}.1/24", "dev", link], ["link", "set", link, "up"],
                    ["-n", namespace, "addr", "add", f"198.19.{block}.2/24", "dev", "fdev0"],
                    ["-n", namespace, "link", "set", "fdev0", "up"], ["-n", namespace, "link", "set", "lo", "up"]):
            subprocess.run(["ip", *cmd], check=True, capture_output=True, timeout=15)
        yield link, f"198.19.{block}.2", namespace
    finally:
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=15)  # the pair goes with it
        subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=15)


# -- 5. a clock jump -------------------------------------------------------------------------------

def test_a_clock_jump_forward_and_back_loses_nothing_and_keeps_timestamps_true(hil: Hil) -> None:
    hil.need("clock", "power", "building")
    if LIBFAKETIME is None:
        pytest.skip("libfaketime (Debian faketime) is missing")
    assert hil.work is not None and hil.building is not None
    from tests.hil.boxlab import LocalBoxPowerDriver
    assert isinstance(hil.power, LocalBoxPowerDriver)
    building, store = hil.building, hil.cloud.store
    offset = hil.work / "faketime"
    offset.write_text("+0\n")
    hil.strategy.power_cut()  # boxd comes back under libfaketime, its clock true until the jump
    building.end_life()
    hil.power.env = {"LD_PRELOAD": LIBFAKETIME, "FAKETIME_TIMESTAMP_FILE": str(offset),
                     "FAKETIME_CACHE_DURATION": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    try:
        hil.strategy.transition("ready")
        _push(hil, FAST + _devices(hil))
        mark = len(building.served)
        started = time.monotonic()
        jumped = time.time()
        for n, (jump, words) in enumerate(((3600, "an hour forward"), (-7200, "two hours back"), (0, "true again"))):
            offset.write_text(f"{jump:+d}\n")
            # the Box notices the step (libfaketime reads the offset at most a second late) and says so
            _said(hil, lambda k=n + 1: hil.console().count("the system clock stepped") >= k, 30,  # type: ignore[misc]
                  f"the Box to notice its clock went {words}")
            moved = time.time() * 1000
            batches = len(store.batch_keys(hil.box_id)) + 5
            # batches still go at their delay (not an hour late), with samples taken after the jump
            wait_for(lambda b=batches: len(store.batch_keys(hil.box_id)) > b, 60,  # type: ignore[misc]
                     f"batches after the clock went {words}")
            _said(hil, lambda t=moved: _delivering_since(hil, t + 1500), 60,  # type: ignore[misc]
                  f"samples stamped after the clock went {words}")
        hil.timings["clock jumps forward and back, batches flowing"] = round(time.monotonic() - started, 1)
        reads = _window(building.served.reads(), mark)
        wait_stored(store, hil.box_id, reads, 120)
        figures = _every_sample(hil, reads)
        # every reading stamped with the true time, whatever the system clock said: each counter value stored
        # within 2 s (a step smaller than that is not one) of when the building served it
        # (of the Box's earlier lives' samples of a counter value, the one nearest the window's read)
        stamps: dict[tuple[str, object], list[int]] = {}
        for p, ts, v, _ in store.samples(hil.box_id):
            if p.endswith(".reads"):
                stamps.setdefault((p, v), []).append(ts)
        nearest = {(p, v, r.at_ms): min(stamps[p, v], key=lambda ts, at=r.at_ms: abs(ts - at))  # type: ignore[misc]
                   for r in reads for p, v in r.values if (p, v) in stamps}
        off = sorted(((ts - at) / 1000, p, v) for (p, v, at), ts in nearest.items() if abs(ts - at) > 2000)
        assert not off, f"{len(off)} readings stamped by the stepped clock (s off, point, value): {off[:3]} {off[-3:]}"
        # the Box said so (its log), asked the platform, whose time confirmed it: its heartbeat says the clock
        # is good again, and the platform never saw a Box's clock off (no clock alert)
        _said(hil, lambda: hil.console().count("time is known again after the system clock's step") >= 3, 30,
              "the platform's answer to each step's heartbeat")
        wait_for(lambda: (store.health(hil.box_id) or (0, {}))[1].get("clock_ok") is True, 30,
                 "the Box's heartbeat to say its clock is confirmed again")
        alerts = [x for x in store.alerts(hil.box_id, include_closed=True) if x.kind == "clock" and x.opened > jumped]
        assert not alerts, alerts
        print(f"\n{hil.name}: clock jumps: {figures}; {len(nearest)} counter values, none stamped off; "
              f"{hil.timings}")
    finally:
        _power_back_plain(hil, building)
        hil.strategy.transition("ready")


def _power_back_plain(hil: Hil, building: SimThread) -> None:
    """End a scenario that ran boxd under an environment of its own (libfaketime, the fake modem's
    bus): the power cut, the building's life ended, the next power-on without that environment."""
    hil.strategy.power_cut()
    building.end_life()
    hil.power.env = None


# -- 6. the modem's faults (issue 12) ----------------------------------------------------------------

MODEM = '[modem]\napn = "internet.test"\ninterface = ""\nsignal_s = 1\n\n[modem.ladder]\ncheck_s = 1\n\n'
# (fault, what puts it right or None when the Box does, in words, what the Box says while it lasts)
MODEM_FAULTS = (
    ("drop", None, "the network drops the data bearer", "dropped the data bearer"),
    ("searching", "home", "the network is lost (no coverage) and found again", "lost the network"),
    ("sim-missing", "sim-in", "the SIM is pulled out and put back", "no SIM card"),
    ("reboot", None, "the modem resets by itself", "dropped the data bearer"),
)


def test_the_modems_faults_are_said_and_the_box_reconnects_losing_nothing(hil: Hil) -> None:
    """sim: boxd runs `[modem]` on ModemManager faked on a private D-Bus (`drivers.sim.fake_mm`, the
    issue-12 backend's simulator: the real backend and owner task over D-Bus); the Box's WAN is the fault
    proxy, cut while the modem has no data session and given back once the Box has brought one up again
    (the test is the network: the simulated modem has no data path of its own here)."""
    hil.need("modem", "power", "building")
    if hil.kind != "sim":  # vm: the fake's bus (or the AT simulator on a QEMU serial port) and a WAN behind the
        # modem; lab: a SIM to pull and coverage to take away by hand or with an attenuator: not wired
        pytest.skip(f"target {hil.name} ({hil.kind}): the modem simulator attaches to the sim target only")
    from drivers.sim import fake_mm
    if (why := fake_mm.available()) is not None:
        pytest.skip(why)
    assert hil.work is not None and hil.building is not None and hil.link is not None and hil.boxctl is not None
    from tests.hil.boxlab import LocalBoxPowerDriver
    assert isinstance(hil.power, LocalBoxPowerDriver)
    building, store, boxctl, link = hil.building, hil.cloud.store, hil.boxctl, hil.link

    def modem() -> dict[str, object]:  # `boxctl modem status --json`: what the Box says of its modem
        import json
        state = hil.power.process.state if hil.power.process else hil.work
        r = subprocess.run([sys.executable, "-m", "provisioning.cli", "--state-dir", str(state), "modem", "status",
                            "--json"], capture_output=True, text=True, timeout=60)
        doc: dict[str, object] = json.loads(r.stdout) if r.stdout.startswith("{") else {}
        return doc

    with fake_mm.FakeModemManager(hil.work / "mm") as mm:
        hil.strategy.power_cut()  # boxd comes back with the fake as its system bus (ModemManager's)
        building.end_life()
        hil.power.env = {"DBUS_SYSTEM_BUS_ADDRESS": mm.address}
        try:
            hil.strategy.transition("ready")
            _push(hil, UPLINK + MODEM + _devices(hil))
            _said(hil, lambda: modem().get("state") == "connected", 60, "the modem's data bearer up")
            pid, mark = boxctl()["daemon"]["pid"], len(building.served)
            since = time.time()
            for fault, back, words, says in MODEM_FAULTS:
                started = time.monotonic()
                connects, said = mm.counts().get("connects", 0), hil.console().count(says)
                mm.fault(fault)
                link(False)  # the data path goes with the data session
                try:
                    _said(hil, lambda s=says, n=said: hil.console().count(s) > n, 30,  # type: ignore[misc]
                          f"the Box to say what happened when {words}")
                    if fault == "sim-missing":  # a fault for the installer, in `boxctl modem status` while it lasts
                        _said(hil, lambda: modem().get("fault") == "sim_missing" and modem().get("state") == "fault",
                              30, "`boxctl modem status` to say the SIM is missing")
                    if back is not None:
                        mm.fault(back)
                    _said(hil, lambda c=connects: mm.counts().get("connects", 0) > c, 30,  # type: ignore[misc]
                          f"the Box to bring the data bearer up again when {words}")
                finally:
                    link(True)
                batches = len(store.batch_keys(hil.box_id))
                _said(hil, lambda b=batches: modem().get("state") == "connected"  # type: ignore[misc]
                      and len(store.batch_keys(hil.box_id)) > b + 2, 60, f"data flowing again after {words}")
                hil.timings[f"modem: {words}"] = round(time.monotonic() - started, 1)
            # the platform was told of the SIM (the Box's events are durable: sent once the link was back)
            alert = wait_for(lambda: next((a for a in store.alerts(hil.box_id, include_closed=True)
                                           if a.kind == "modem_config" and a.opened > since and a.closed), None),
                             60, "the platform's modem_config alert for the missing SIM, closed once it was back")
            assert "SIM" in alert.message, alert
            reads = _window(building.served.reads(), mark)
            wait_stored(store, hil.box_id, reads, 120)
            figures = _every_sample(hil, reads)
            assert boxctl()["daemon"]["pid"] == pid, "boxd was restarted"
            assert mm.counts().get("resets", 0) == 0, "the Box reset a modem that needed no reset"
            print(f"\n{hil.name}: modem faults: {figures}; alert {alert.message!r}; {hil.timings}")
        finally:
            _power_back_plain(hil, building)
            _push_after_power(hil)


def _push_after_power(hil: Hil) -> None:
    """Back to the bench's configuration (no modem), boxd as before the scenario."""
    hil.strategy.transition("ready")
    _restore(hil)


# -- 7. revocation of the live Box (last: the Box is out of the fleet afterwards) ---------------

def test_revoking_the_live_box_cuts_its_session_for_good_and_accepts_nothing_it_queued(hil: Hil) -> None:
    hil.need("revoke", "building")
    store = hil.cloud.store
    _on(hil)
    batches = len(store.batch_keys(hil.box_id))
    wait_for(lambda: len(store.batch_keys(hil.box_id)) > batches + 2, 60, "data flowing")
    started = time.monotonic()
    assert hil.cloud.revoke(hil.box_id) is True  # the platform confirms its live session was cut
    box = store.box(hil.box_id)
    assert box is not None and box.revoked is not None and not box.online
    stored, samples = len(store.batch_keys(hil.box_id)), len(store.samples(hil.box_id))
    # it says why, locally: its log and `boxctl status` (sim: the console is boxd's log; vm: the serial console
    # does not carry the journal, and the Box's status is read from its disk at the end)
    if hil.kind == "sim":
        try:
            wait_for(lambda: REVOKED.search(hil.console()), 60, "the Box to say it was revoked")
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- console ---\n{hil.console()[-3000:]}") from None
        hil.timings["revoked to the Box saying so"] = round(time.monotonic() - started, 1)
    boxctl = hil.boxctl
    if boxctl is not None:
        wait_for(lambda: REVOKED.search(str(boxctl()["daemon"]["last_error"])), 60, "boxctl status to say why")
        doc = boxctl()
        assert not doc["daemon"]["connected"] and doc["daemon"]["queue_samples"] > 0, doc["daemon"]
    # it keeps polling and trying (reconnect_max_s = 1: an attempt a second), refused every time, while the
    # building serves more: nothing it queued is accepted
    building = hil.building
    assert building is not None
    served = len(building.served)
    wait_for(lambda: len(building.served) > served + 300, 120, "the Box polling on, its link refused")
    # nothing accepted after the cut (a batch the broker had taken before it may still be stored)
    assert len(store.batch_keys(hil.box_id)) <= stored + 1, "batches accepted from a revoked Box"
    late = len(store.samples(hil.box_id)) - samples
    assert late <= len(hil.configured()), f"{late} samples accepted from the revoked Box"
    box = store.box(hil.box_id)
    assert box is not None and not box.online and box.status_reason == "revoked", box
    if hil.status_on_disk is not None:
        # the Box's own account, as `boxctl status` would give it: the status it last wrote (every second; the
        # journal of /var commits within 5 s), read from its disk after the power is cut (the last scenario)
        hil.strategy.power_cut()
        daemon = hil.status_on_disk()
        assert REVOKED.search(str(daemon["last_error"])), daemon
        assert not daemon["connected"] and int(daemon["queue_samples"]) > 0, daemon
    hil.timings["revoked to the Box polling on, refused"] = round(time.monotonic() - started, 1)
    print(f"\n{hil.name}: {hil.timings}")
