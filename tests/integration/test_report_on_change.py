"""Report on change end to end, on real parts: the Modbus building simulator (recording what it serves,
with its per-device "reads" counters), boxd as a process, real Mosquitto with mutual TLS, the real
receiver and store.

What a user would notice: the cloud's history has a value for every poll the Box made, each within
the deadband of what the simulator served at that poll; a value that does not change is still sent
again after `max_age_s` (a value row, not only "unchanged"); a device in mode "poll" has every value
of every poll stored; and readings the Box evicted during an outage are missing, never stood in for
by an older value ("unchanged" never reaches across a loss).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from cloud.platform import Cloud
from cloud.store import Store
from drivers import Value
from drivers.sim._served import Served
from tests.integration.test_boxd_e2e import slow_points
from tests.support.boxproc import BoxProcess
from tests.support.cloudkit import provision
from tests.support.proofs import COUNTER, poll_numbers
from tests.support.simthread import SimThread
from tests.support.wait import wait_for

DEADBAND = 0.5
MAX_AGE_S = 2
POLL_S = 0.2
BOX = "ONCHANGE-1"
POLLED = "room1"  # this device's points are in mode "poll"


def config(building: SimThread) -> str:
    points = building.sim.points_toml(POLL_S, timeout_s=10.0, retries=0)
    assert f'name = "{POLLED}"\n' in points
    points = points.replace(f'name = "{POLLED}"\n', f'name = "{POLLED}"\nreport = {{ mode = "poll" }}\n', 1)
    return ("[uplink]\nbatch_delay_ms = 100\nreconnect_max_s = 2\nheartbeat_s = 1\n\n[queue]\nmax_samples = 1000\n\n"
            f'[report]\nmode = "change"\ndeadband = {DEADBAND}\nmax_age_s = {MAX_AGE_S}\n\n' + points)


def served_polls(reads: list[Served]) -> dict[tuple[str, object], dict[str, Value]]:
    """(device, its counter's value) -> every value the simulator served in that poll of the device."""
    polls: dict[tuple[int, int, int], dict[str, Value]] = defaultdict(dict)
    for r, n in zip(reads, poll_numbers(reads), strict=True):
        polls[r.life, r.unit, n].update(r.values)
    out: dict[tuple[str, object], dict[str, Value]] = {}
    for values in polls.values():
        for name, value in values.items():
            if name.endswith(COUNTER):
                out[name[: -len(COUNTER)], value] = values
    return out


def history(store: Store) -> list[tuple[str, int, object, int]]:
    rows: list[tuple[str, int, object, int]] = []
    while page := store.history(BOX, [], 0, 2**62, after=(rows[-1][1], rows[-1][0]) if rows else None,
                                limit=5000):
        rows += page
    return rows


def within(got: object, served: Value) -> bool:
    if isinstance(served, float) or (isinstance(served, int) and not isinstance(served, bool)):
        return isinstance(got, int | float) and not isinstance(got, bool) and (
            abs(got - served) <= DEADBAND + 1e-6 or (math.isnan(got) and math.isnan(served)))
    return got == served


def check(store: Store, reads: list[Served]) -> dict[str, int]:
    """Every poll the cloud holds: each point's value in force equals what was served within the deadband."""
    polls = served_polls(reads)
    rows = history(store)
    poll_of = {(p[: -len(COUNTER)], ts): v for p, ts, v, q in rows if p.endswith(COUNTER) and not q}
    wrong, checked = [], 0
    for p, ts, v, q in rows:
        device = p.partition(".")[0]
        counter = poll_of.get((device, ts))
        served = polls.get((device, counter), {})
        if q or p not in served:
            continue
        checked += 1
        if not within(v, served[p]):
            wrong.append((p, ts, v, served[p]))
    assert checked > 0
    assert not wrong, f"{len(wrong)} polls stored outside the deadband of what was served: {wrong[:5]}"
    return {"polls": len(poll_of), "checked": checked, "sent": len(store.samples(BOX))}


def test_the_cloud_holds_every_poll_within_the_deadband_and_never_across_a_loss(
    fresh_cloud: Cloud, tmp_path: Path
) -> None:
    cloud = fresh_cloud
    provision(cloud, tmp_path, BOX)
    with SimThread(update_interval_s=0.1, counters=True, record=True) as building:
        conf = tmp_path / "boxd.toml"
        conf.write_text(config(building))
        names = building.sim.state.box_names()
        devices = {n.partition(".")[0] for n in names}
        box = BoxProcess.start(tmp_path, conf)
        try:
            box.wait_connected()
            # longer than the maximum age: every constant point was sent again at least once
            wait_for(lambda: len(cloud.store.samples(BOX, f"ahu1{COUNTER}")) > 4 * MAX_AGE_S / POLL_S, 60,
                     "polls for four times the maximum age")
            steady = check(cloud.store, building.served.reads())

            # every poll of every device is there: each point has a row (sent, or in force) at each poll
            rows = history(cloud.store)
            slow = slow_points(conf)  # read less often than their device: not in every poll
            at: dict[tuple[str, int], int] = defaultdict(int)
            for p, ts, _, _ in rows:
                at[p.partition(".")[0], ts] += p not in slow
            per_device = {d: sum(1 for n in names if n.startswith(d + ".") and n not in slow) for d in devices}
            counters = {(p.partition(".")[0], ts) for p, ts, _, _ in rows if p.endswith(COUNTER)}
            short = sorted((k, at[k], per_device[k[0]]) for k in counters if at[k] != per_device[k[0]])
            assert not short, f"polls missing points: {short[:10]} of {len(counters)}"

            # the maximum age: no poll found a value unchanged for longer; a constant point is a value row again
            sent = defaultdict(list)
            for p, ts, _, _ in cloud.store.samples(BOX):
                sent[p].append(ts)
            for p, ts, _, _ in rows:
                last = max((t for t in sent[p] if t <= ts), default=None)
                assert last is not None and ts - last < MAX_AGE_S * 1000, f"{p} at {ts}: unchanged since {last}"
            constant = [p for p in names if not p.startswith(POLLED) and p not in slow
                        and len({repr(v) for q, _, v, _ in rows if q == p}) == 1]
            assert constant, "the building has no constant point: the maximum age was not shown"
            assert all(len(sent[p]) >= 3 for p in constant), {p: len(sent[p]) for p in constant if len(sent[p]) < 3}

            # mode "poll": every value of every poll of that device is a value row
            polled = {ts for d, ts in counters if d == POLLED}
            assert all(set(sent[p]) >= polled for p in names if p.startswith(POLLED + "."))
            assert steady["sent"] < len(rows), "report on change sent as much as polling"

            # an outage long enough for the queue to evict: what was evicted is missing, never "unchanged"
            cloud.broker.stop()
            wait_for(lambda: box.log.read_text().count("evicted the") >= 3, 90, "evictions")
            cloud.broker.start()
            box.wait_connected(60)
            wait_for(lambda: box.queue_samples(10**6) < 150, 60, "the backlog to drain")
            reads = building.served.reads()
            wait_for(lambda: check(cloud.store, reads)["polls"] > steady["polls"] + 10, 30, "polls after the outage")
            assert box.proc.poll() is None, "boxd died"
        finally:
            box.stop()
        after = check(cloud.store, building.served.reads())
    assert len(cloud.store.evicted_ranges(BOX, cloud.store.batch_keys(BOX)[0][0])) > 0
    print(f"\nreport on change: {steady} before the outage, {after} after it")
