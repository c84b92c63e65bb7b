"""Nothing lost across crashes, power cuts and outages, counted sample by sample.

The Box polls the simulated building with its "reads" counters and its served log on; at the end
every value the simulator served is counted against what the cloud stored (`tests.support.proofs`:
what the Box owes, lost and duplicated samples per point) as well as every batch number. Crashes
and power cuts are aimed at the moments that matter and at random ones (`tests.support.crashrig`).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from cloud.platform import Cloud
from tests.support.boxproc import BoxProcess
from tests.support.cloudkit import provision
from tests.support.crashrig import Rig
from tests.support.proofs import assert_counters_monotonic, assert_nothing_lost, wait_stored
from tests.support.simthread import SimThread
from tests.support.wait import wait_for

# between the queue write and the publish, between publish and PUBACK, inside the seal, sealed and
# not sent, acknowledged by the broker and not yet removed; and random moments
KILLS = ("random", "unsent", "unacked", "seal-before:3", "seal-after:3", "ack-before:3",
         "random", "unsent", "unacked", "ack-after:2", "random")
POWER_CUTS = ("random", "unsent", "unacked", "seal-after:3", "ack-before:3", "random")
# with stored notices, the Box holds a batch from its PUBACK to the notice (up to a second here):
# crashes while it holds some, while notices are stalled, and inside the removal a notice commits
NOTICED = ("random", "unacked", "ack-before:2", "random", "unsent", "ack-after:3", "random")


def test_sigkill_aimed_and_at_random_loses_no_sample(fresh_cloud: Cloud, tmp_path: Path) -> None:
    with Rig(fresh_cloud, tmp_path, "CRASH-1", seed=20261124) as rig:
        for aim in KILLS:
            rig.life(aim)
        figures = rig.finish(*rig.last_life())
    assert figures["epochs"] == 1  # one queue survived every crash
    assert assert_counters_monotonic(fresh_cloud.store, "CRASH-1", "meter1.energy_counter") > 50
    print(f"\nSIGKILL x{len(KILLS)} ({', '.join(KILLS)}): {figures}; restart to new data stored: "
          f"median {statistics.median(rig.recovery):.2f} s, max {max(rig.recovery):.2f} s")


@pytest.mark.skipif(not Path("/dev/fuse").exists(), reason="no /dev/fuse for the power-loss file system")
def test_power_cuts_aimed_and_at_random_lose_no_sample_that_was_kept(fresh_cloud: Cloud, tmp_path: Path) -> None:
    """Power cuts, not just crashes: the Box's state directory is on a LazyFS-style file system that
    drops every byte not fsync'ed when the power goes (tests.support.lazyfs)."""
    with Rig(fresh_cloud, tmp_path, "POWER-1", power=True, seed=4242) as rig:
        for aim in POWER_CUTS:
            rig.life(aim)
        figures = rig.finish(*rig.last_life())
    assert figures["epochs"] == 1, "the queue itself was lost at a power cut"
    assert assert_counters_monotonic(fresh_cloud.store, "POWER-1", "meter1.energy_counter") > 30
    print(f"\npower cut x{len(POWER_CUTS)} ({', '.join(POWER_CUTS)}): {figures}; power-on to new data stored: "
          f"median {statistics.median(rig.recovery):.2f} s, max {max(rig.recovery):.2f} s")


@pytest.mark.parametrize("power", [False, True], ids=["sigkill", "power-cut"])
def test_crashes_while_the_box_holds_batches_for_the_stored_notice_lose_no_sample(
        fresh_cloud: Cloud, tmp_path: Path, power: bool) -> None:
    if power and not Path("/dev/fuse").exists():
        pytest.skip("no /dev/fuse for the power-loss file system")
    with Rig(fresh_cloud, tmp_path, "NOTICE-1", power=power, seed=20261207, notices=True) as rig:
        for aim in NOTICED:
            rig.life(aim)
        figures = rig.finish(*rig.last_life())
    assert figures["epochs"] == 1
    assert assert_counters_monotonic(fresh_cloud.store, "NOTICE-1", "meter1.energy_counter") > 30
    print(f"\n{'power cut' if power else 'SIGKILL'} x{len(NOTICED)} with stored notices: {figures}")


def _building() -> SimThread:
    return SimThread(update_interval_s=0.1, counters=True, record=True)


def _points(building: SimThread, poll_interval_s: float) -> str:
    # counters, and no retry: a read the Box gave up on would be served again as if it were its next poll
    return building.sim.points_toml(poll_interval_s, timeout_s=10.0, retries=0)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_broker_down_for_minutes_while_polling_goes_on(fresh_cloud: Cloud, tmp_path: Path) -> None:
    cloud = fresh_cloud
    provision(cloud, tmp_path, "LONG-1")
    with _building() as building:
        conf = tmp_path / "boxd.toml"
        conf.write_text("[uplink]\nbatch_delay_ms = 100\nreconnect_max_s = 30\n\n" + _points(building, 0.25))
        points = len(building.sim.state.box_names())
        box = BoxProcess.start(tmp_path, conf)
        try:
            box.wait_connected()
            wait_for(lambda: len(cloud.store.batch_keys("LONG-1")) > 3, 30, "data")
            cloud.broker.stop()
            down = time.monotonic()
            # over a minute of the building's data (every point every 0.25 s: 240 polls) piles up on the Box,
            # its reconnection attempts backing off to their 30 s maximum
            wait_for(lambda: box.queue_samples(0) >= 240 * points, 200,
                     "a minute of backlog")
            outage = time.monotonic() - down
            cloud.broker.start()
            back = time.monotonic()
            box.wait_connected(60)
            reads = building.served.reads()
            wait_stored(cloud.store, "LONG-1", reads, 120)
            drained = time.monotonic() - back
        finally:
            box.stop()
        figures = assert_nothing_lost(cloud.store, "LONG-1", reads, log=building.served)
    print(f"\nbroker down {outage:.0f} s: {figures}; every owed sample stored {drained:.1f} s after the broker "
          "came back")


def test_disk_limit_during_an_outage_evicts_the_oldest_and_says_so(fresh_cloud: Cloud, tmp_path: Path) -> None:
    cloud = fresh_cloud
    provision(cloud, tmp_path, "FULL-1")
    with _building() as building:
        conf = tmp_path / "boxd.toml"
        conf.write_text("[uplink]\nbatch_delay_ms = 100\nreconnect_max_s = 2\nheartbeat_s = 1\n\n"
                        "[queue]\nmax_samples = 1000\n\n" + _points(building, 0.2))
        box = BoxProcess.start(tmp_path, conf)
        try:
            box.wait_connected()
            wait_for(lambda: len(cloud.store.batch_keys("FULL-1")) > 3, 30, "data")
            outage_ms = time.time() * 1000
            cloud.broker.stop()
            wait_for(lambda: "evicted the" in box.log.read_text(), 60, "the queue to overflow")
            wait_for(lambda: box.log.read_text().count("evicted the") >= 5, 60, "more evictions")
            assert box.queue_samples() <= 1000
            cloud.broker.start()
            back = time.monotonic()
            box.wait_connected(60)
            wait_for(lambda: any(a.kind == "evicted" for a in cloud.store.alerts("FULL-1")), 30, "the evicted alert")
            # the backlog drained below the limit: no more evictions; then a heartbeat says how many there were
            wait_for(lambda: box.queue_samples(10**6) < 150, 60, "the backlog to drain")
            after = time.time()
            def heartbeat_after(t: float) -> tuple[float, dict[str, object]] | None:
                h = cloud.store.health("FULL-1")
                return h if h is not None and h[0] > t else None
            first = wait_for(lambda: heartbeat_after(after), 30, "a heartbeat after it")
            # the count is final once the next heartbeat says the same (the queue's size is read from the Box's
            # status file, which may say a phase of the drain while it still evicts: one clone run saw 81 more
            # samples gone than the first heartbeat counted)
            def holds() -> tuple[float, dict[str, object]] | None:
                h = heartbeat_after(first[0])
                return h if h is not None and h[1]["evicted"] == first[1]["evicted"] else None
            report = wait_for(holds, 60, "the evicted count to hold")
            evicted = report[1]["evicted"]
            assert isinstance(evicted, int) and evicted > 0
            reads = building.served.reads()
            wait_stored(cloud.store, "FULL-1", reads, 60, evicted=evicted)
            drained = time.monotonic() - back
            assert box.proc.poll() is None, "boxd died"
        finally:
            box.stop()
        figures = assert_nothing_lost(cloud.store, "FULL-1", reads, evicted=evicted,
                                      log=building.served)
    alert = next(a for a in cloud.store.alerts("FULL-1") if a.kind == "evicted")
    assert str(evicted) in alert.message
    # Exactly the samples the Box reported evicted are missing, but for evicted batches that had reached the
    # cloud anyway (the broker took them and stopped before its PUBACK: the Box could not know).
    with cloud.store.engine.connect() as db:
        arrived = db.execute(sa.text(
            "SELECT COALESCE(SUM(b.n), 0) FROM batches b JOIN evicted e ON b.box_id = e.box_id AND b.epoch = e.epoch"
            " AND b.seq BETWEEN e.seq_from AND e.seq_to WHERE b.box_id = :box"), {"box": "FULL-1"}).scalar_one()
    assert figures["lost"] == evicted - arrived, f"{figures['lost']} samples missing; the Box reported {evicted} " \
        f"evicted, of which {arrived} had reached the cloud"
    # the oldest went: what survived of the outage is its end, up to the broker's return
    during = [t for _, t, _, _ in cloud.store.samples("FULL-1") if t > outage_ms]
    assert during, "nothing of the outage survived"
    print(f"\nqueue limit 1000 during an outage: {evicted} samples evicted and reported ({arrived} of them had "
          f"reached the cloud); {figures}; "
          f"every other owed sample stored {drained:.1f} s after the broker came back")
