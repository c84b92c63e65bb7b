"""Nothing lost across crashes: boxd killed with SIGKILL at random moments while publishing heavily.

After every kill, boxd starts again on the same state directory; at the end the cloud
must hold every batch of the queue's epoch exactly once, and the values must make sense
(the meter's energy counter never goes backwards).
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path

import pytest

from cloud.platform import Cloud
from tests.support.boxproc import BoxProcess
from tests.support.cloudkit import provision
from tests.support.proofs import assert_counters_monotonic, assert_exactly_once
from tests.support.simthread import SimThread
from tests.support.wait import wait_for

KILLS = 20


def test_sigkill_at_random_moments_loses_nothing(fresh_cloud: Cloud, tmp_path: Path) -> None:
    cloud, rng = fresh_cloud, random.Random(20261124)
    provision(cloud, tmp_path, "CRASH-1")
    with SimThread(update_interval_s=0.05) as building:
        conf = tmp_path / "boxd.toml"
        conf.write_text("[uplink]\nbatch_delay_ms = 20\nreconnect_max_s = 1\nmax_batch_samples = 200\n\n"
                        + building.sim.points_toml(0.1))
        recovery = []  # seconds from the restart to new data stored in the cloud
        for _ in range(KILLS):
            before = len(cloud.store.batch_keys("CRASH-1"))
            started = time.monotonic()
            box = BoxProcess.start(tmp_path, conf)
            box.wait_connected()
            wait_for(lambda b=before: len(cloud.store.batch_keys("CRASH-1")) > b, 30, "new batches")
            recovery.append(time.monotonic() - started)
            time.sleep(rng.uniform(0.0, 0.5))  # the random moment of the crash (fault injection, not a wait)
            box.kill()
        box = BoxProcess.start(tmp_path, conf)  # the last life: drain what the crashes left
        try:
            box.wait_connected()
            wait_for(lambda: int(box.status().get("queue_samples", 10**6)) < 60, 60, "the queue to drain")
        finally:
            box.stop()
    figures = assert_exactly_once(cloud.store, "CRASH-1")
    assert figures["epochs"] == 1  # one queue survived every crash
    assert assert_counters_monotonic(cloud.store, "CRASH-1", "meter1.energy_counter") > 50
    print(f"\nSIGKILL x{KILLS}: {figures}; restart to new data stored: "
          f"median {statistics.median(recovery):.2f} s, max {max(recovery):.2f} s")


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_broker_down_for_minutes_while_polling_goes_on(fresh_cloud: Cloud, tmp_path: Path) -> None:
    cloud = fresh_cloud
    provision(cloud, tmp_path, "LONG-1")
    with SimThread(update_interval_s=0.1) as building:
        conf = tmp_path / "boxd.toml"
        conf.write_text("[uplink]\nbatch_delay_ms = 100\nreconnect_max_s = 30\n\n" + building.sim.points_toml(0.5))
        box = BoxProcess.start(tmp_path, conf)
        try:
            box.wait_connected()
            wait_for(lambda: len(cloud.store.batch_keys("LONG-1")) > 3, 30, "data")
            cloud.broker.stop()
            down = time.monotonic()
            # two minutes of the building's data (27 points every 0.5 s) pile up on the Box
            wait_for(lambda: int(box.status().get("queue_samples", 0)) >= 120 * 54, 200, "two minutes of backlog")
            outage = time.monotonic() - down
            cloud.broker.start()
            back = time.monotonic()
            box.wait_connected(60)
            wait_for(lambda: int(box.status().get("queue_samples", 10**6)) < 100, 120, "the backlog to drain")
            drained = time.monotonic() - back
        finally:
            box.stop()
    figures = assert_exactly_once(cloud.store, "LONG-1")
    print(f"\nbroker down {outage:.0f} s: {figures}; backlog drained {drained:.1f} s after the broker came back")


def test_disk_limit_during_an_outage_evicts_the_oldest_and_says_so(fresh_cloud: Cloud, tmp_path: Path) -> None:
    cloud = fresh_cloud
    provision(cloud, tmp_path, "FULL-1")
    with SimThread(update_interval_s=0.1) as building:
        conf = tmp_path / "boxd.toml"
        conf.write_text("[uplink]\nbatch_delay_ms = 100\nreconnect_max_s = 2\nheartbeat_s = 1\n\n"
                        "[queue]\nmax_samples = 1000\n\n"
                        + building.sim.points_toml(0.2))
        box = BoxProcess.start(tmp_path, conf)
        try:
            box.wait_connected()
            wait_for(lambda: len(cloud.store.batch_keys("FULL-1")) > 3, 30, "data")
            outage_ms = time.time() * 1000
            cloud.broker.stop()
            wait_for(lambda: "evicted the" in box.log.read_text(), 60, "the queue to overflow")
            wait_for(lambda: box.log.read_text().count("evicted the") >= 5, 60, "more evictions")
            assert int(box.status()["queue_samples"]) <= 1000
            cloud.broker.start()
            back = time.monotonic()
            box.wait_connected(60)
            wait_for(lambda: any(a.kind == "evicted" for a in cloud.store.alerts("FULL-1")), 30, "the evicted alert")
            wait_for(lambda: int(box.status().get("queue_samples", 10**6)) < 150, 60, "the backlog to drain")
            drained = time.monotonic() - back
            wait_for(lambda: (cloud.store.health("FULL-1") or (0, {}))[1].get("evicted"), 30, "a heartbeat after")
            assert box.proc.poll() is None, "boxd died"
        finally:
            box.stop()
    alert = next(a for a in cloud.store.alerts("FULL-1") if a.kind == "evicted")
    evicted = cloud.store.health("FULL-1")[1]["evicted"]
    assert isinstance(evicted, int) and evicted > 0 and str(evicted) in alert.message
    figures = assert_exactly_once(cloud.store, "FULL-1")
    # the oldest went: what survived of the outage is its end, up to the broker's return
    during = [t for _, t, _, _ in cloud.store.samples("FULL-1") if t > outage_ms]
    assert during, "nothing of the outage survived"
    print(f"\nqueue limit 1000 during an outage: {evicted} samples evicted and reported; {figures}; "
          f"backlog drained {drained:.1f} s after the broker came back")


POWER_CUTS = 5


@pytest.mark.skipif(not Path("/dev/fuse").exists(), reason="no /dev/fuse for the power-loss file system")
def test_power_loss_loses_nothing_that_was_kept(fresh_cloud: Cloud, tmp_path: Path) -> None:
    """Power cuts, not just crashes: the Box's state directory is on a LazyFS-style file system that
    drops every byte not fsync'ed when the power goes (tests.support.lazyfs)."""
    from tests.support.lazyfs import LazyFS

    cloud, rng = fresh_cloud, random.Random(4242)
    backing = tmp_path / "disk"
    provision(cloud, backing, "POWER-1")
    with SimThread(update_interval_s=0.05) as building:
        conf = tmp_path / "boxd.toml"
        conf.write_text("[uplink]\nbatch_delay_ms = 20\nreconnect_max_s = 1\nmax_batch_samples = 200\n\n"
                        + building.sim.points_toml(0.1))
        recovery = []  # seconds from power-on (mount) to new data stored in the cloud
        for life in range(POWER_CUTS + 1):
            started = time.monotonic()
            fs = LazyFS(backing)
            mnt = fs.mount()
            before = len(cloud.store.batch_keys("POWER-1"))
            box = BoxProcess.start(mnt, conf)
            try:
                box.wait_connected()
                if life == POWER_CUTS:  # the last life: drain what the power cuts left, shut down cleanly
                    wait_for(lambda b=box: int(b.status().get("queue_samples", 10**6)) < 60, 60, "the queue to drain")
                    box.stop()
                    fs.unmount()
                    break
                wait_for(lambda b=before: len(cloud.store.batch_keys("POWER-1")) > b, 30, "new batches")
                recovery.append(time.monotonic() - started)
                time.sleep(rng.uniform(0.0, 0.5))  # the random moment of the power cut (fault injection)
                fs.crash()  # the disk loses what was not synced ...
                box.kill()  # ... and the Box dies with it
            except BaseException:
                box.kill()
                if fs.mounted:
                    fs.crash()
                raise
    figures = assert_exactly_once(cloud.store, "POWER-1")
    assert figures["epochs"] == 1, "the queue itself was lost at a power cut"
    assert assert_counters_monotonic(cloud.store, "POWER-1", "meter1.energy_counter") > 30
    print(f"\npower cut x{POWER_CUTS}: {figures}; power-on to new data stored: "
          f"median {statistics.median(recovery):.2f} s, max {max(recovery):.2f} s")
