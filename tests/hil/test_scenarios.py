"""HIL scenarios: the same steps on every target that has what they need (tests/hil/README.md).

They run in this order on one bench per target (the VM boots once for all of them):

1. boot to READY: power on; the Box enrolls (sim: the installer's ``boxctl provision``; vm: at
   first boot, from a credential; lab: done at the provisioning station), gets its devices'
   configuration and delivers every configured point, good, to the platform;
2. a broker restart, then a power cut during queue writes: the platform's broker goes down, the
   Box queues on its disk (every poll is a committed write), the power is cut in the middle of
   that, the broker comes back, the power comes back: every value the Box owed (the building
   simulator's served log says which) is stored by the platform, none twice (both levels of
   `tests/support/proofs.py`, on every target).

Then test_update_power.py, on the same bench: factory image -> update -> rollback, with the power
cut during the download, the A/B switch and the new slot's first boot (targets with an image).
"""

from __future__ import annotations

import time

import pytest

from drivers.sim._served import Served
from tests.hil.conftest import Hil
from tests.support.proofs import assert_nothing_lost, tally, wait_stored
from tests.support.wait import wait_for

# a guard against a hang only: the scenarios' own waits are bounded (two deployments of up to 900 s each,
# the boot check's blessing 300 s); at load 16 the update scenario took more than 1200 s
pytestmark = pytest.mark.timeout(3000)


def test_boot_to_ready_the_box_enrolls_and_delivers_every_point(hil: Hil) -> None:
    hil.need("power")
    started = time.monotonic()
    hil.strategy.transition("ready")
    hil.timings["boot to every point delivered"] = round(time.monotonic() - started, 1)
    box = hil.cloud.store.box(hil.box_id)
    assert box is not None and box.online, box
    assert hil.every_point_good()
    console = hil.console()
    assert "login:" not in console and "Password:" not in console
    print(f"\n{hil.name}: {hil.timings}")


def test_broker_restart_and_a_power_cut_during_queue_writes_lose_nothing(hil: Hil) -> None:
    hil.need("power", "building")
    building = hil.building
    assert building is not None
    hil.strategy.transition("ready")
    cloud = hil.cloud
    batches = len(cloud.store.batch_keys(hil.box_id))
    wait_for(lambda: len(cloud.store.batch_keys(hil.box_id)) > batches, 120, "data flowing")
    cloud.broker.stop()  # the platform's broker goes down: the Box's readings pile up on its disk
    served = len(building.served)
    wait_for(lambda: len(building.served) > served + 100, 120, "polls (queue writes) while nothing gets out")
    cut_ms = time.time_ns() // 1_000_000
    hil.strategy.power_cut()  # in the middle of the polls' commits
    building.end_life()
    cloud.broker.start()
    started = time.monotonic()
    hil.strategy.transition("ready")
    reads = building.served.reads()
    try:
        wait_stored(cloud.store, hil.box_id, reads, 300)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{_where_lost(hil, reads, cut_ms)}") from None
    hil.timings["power on to everything owed stored"] = round(time.monotonic() - started, 1)
    figures = assert_nothing_lost(cloud.store, hil.box_id, reads, log=building.served)
    assert figures["owed"] > 0 and figures["epochs"] == 1, figures  # one queue, kept across the cut
    print(f"\n{hil.name}: {figures}; {hil.timings}")


def _where_lost(hil: Hil, reads: list[Served], cut_ms: int) -> str:
    """For a failure: each lost value's read (index, life, time against the cut), the reads of its
    device around it, and what the platform stored for that device around that time (with quality)."""
    samples = hil.cloud.store.samples(hil.box_id)
    t = tally(reads, samples)
    lines = [f"power cut at {cut_ms} (this machine's clock); {len(reads)} reads"]
    for point, values in t.missing.items():
        for v in values:
            device = point.partition(".")[0]
            for i, r in enumerate(reads):
                if (point, v) not in r.values:
                    continue
                unit_reads = [(j, x.key, x.at_ms - cut_ms) for j, x in enumerate(reads)
                              if x.unit == r.unit and x.life == r.life and abs(j - i) <= 12]
                near = sorted((ts - cut_ms, p, got, q) for p, ts, got, q in samples
                              if p.startswith(f"{device}.") and abs(ts - r.at_ms) <= 3000)
                lines.append(f"{point}={v!r}: read {i} (life {r.life}, {r.at_ms - cut_ms} ms from the cut, "
                             f"request {r.key}); the device's reads around it (index, request, ms from the cut): "
                             f"{unit_reads}; stored for {device} within 3 s (ms from the cut, point, value, "
                             f"quality): {near}")
    return "\n".join([*lines, f"conflicts: {hil.cloud.store.conflicts(hil.box_id)}",
                      f"--- console ---\n{hil.console()[-2000:]}"])
