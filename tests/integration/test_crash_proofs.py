"""Nothing lost across crashes: boxd killed with SIGKILL at random moments while publishing heavily.

After every kill, boxd starts again on the same state directory; at the end the cloud
must hold every batch of the queue's epoch exactly once, and the values must make sense
(the meter's energy counter never goes backwards).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

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
        for _ in range(KILLS):
            before = len(cloud.store.batch_keys("CRASH-1"))
            box = BoxProcess.start(tmp_path, conf)
            box.wait_connected()
            wait_for(lambda b=before: len(cloud.store.batch_keys("CRASH-1")) > b, 30, "new batches")
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
    print(f"\nSIGKILL x{KILLS}: {figures}")
