"""HIL scenarios: the same steps on every target that has what they need (tests/hil/README.md).

They run in this order on one bench per target (the VM boots once for all of them):

1. boot to READY: power on; the Box enrolls (sim: the installer's ``boxctl provision``; vm: at
   first boot, from a credential; lab: done at the provisioning station), gets its devices'
   configuration and delivers every configured point, good, to the platform;
2. a broker restart, then a power cut during queue writes: the platform's broker goes down, the
   Box queues on its disk (every poll is a committed write), the power is cut in the middle of
   that, the broker comes back, the power comes back: every value the Box owed (the building
   simulator's served log says which) is stored by the platform, none twice (both levels of
   `tests/support/proofs.py`, on every target);
3. factory image, update, rollback (targets with an image): an image release installed into the
   other root slot boots on trial and commits; one that never becomes healthy falls back by the
   boot loader's counting, and the Box reports why.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cloud.deploy import ENDED
from cloud.tufrepo import publish_release
from drivers.sim._served import Served
from tests.hil.conftest import Hil
from tests.support import boximage, boxvm
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


def _version(hil: Hil) -> str | None:
    box = hil.cloud.store.box(hil.box_id)
    return box.version if box is not None else None


def _deployed(hil: Hil, target: str, health_s: int, ends: tuple[str, ...], timeout: float) -> tuple[str, str]:
    dep = hil.cloud.create_deployment(target, boxes=[hil.box_id], health_s=health_s)

    def ended() -> tuple[str, str] | None:  # the Box's outcome, and the deployment over (one Box, one wave)
        rows = hil.cloud.store.deployment_boxes(dep.id)
        over = hil.cloud.deployment(dep.id).status in ENDED
        return (rows[0].state, rows[0].detail) if over and rows and rows[0].state in ends else None
    try:
        result = wait_for(ended, timeout, f"deployment of {target} to end ({', '.join(ends)})", step=1.0)
    except AssertionError as e:
        rows = hil.cloud.store.deployment_boxes(dep.id)
        raise AssertionError(f"{e}: {rows}\n--- console ---\n{hil.console()[-3000:]}") from None
    assert result is not None
    return result


def test_factory_image_update_commits_and_a_bad_update_rolls_back_with_its_reason(hil: Hil, tmp_path: Path) -> None:
    """The image's own A/B: an image release written into the other root slot boots on trial and
    is committed; a release that never becomes healthy (boxd cannot start) is installed the same
    way, fails its trial, and the boot loader falls back by itself; the Box says why."""
    hil.need("power", "image")
    image = boximage.ensure_built()
    hil.strategy.transition("ready")
    assert _version(hil) == image.version  # the factory release, slot A
    publish = hil.cloud
    good = boxvm.image_release(image, tmp_path, "9.0.1")
    bad = boxvm.image_release(image, tmp_path, "9.0.2", broken=True, boot_tries=1)
    for bundle in (good, bad):
        version = bundle.name.removeprefix("box-image-").removesuffix(".tar")
        publish_release(publish.ota_repo, publish.ota_keys, bundle, version, ["generic-x86-64"])

    started = time.monotonic()
    state, detail = _deployed(hil, good.name, 600, ("committed", "rolled_back", "failed"), 900)
    hil.timings["update to 9.0.1 committed"] = round(time.monotonic() - started, 1)
    assert state == "committed", detail
    console = hil.console()
    assert "9.0.1 installed in slot B (box-b+3.conf): rebooting on trial" in console, console[-3000:]
    wait_for(lambda: _version(hil) == "9.0.1", 120, "the Box to report 9.0.1")
    wait_for(lambda: "box-b+3.conf is healthy" in hil.console() or "is healthy: boot complete" in hil.console(),
             300, "the boot check to bless slot B")

    started = time.monotonic()
    state, detail = _deployed(hil, bad.name, 10, ("committed", "rolled_back", "failed"), 900)  # 10 s: the least
    hil.timings["bad update 9.0.2 rolled back"] = round(time.monotonic() - started, 1)
    assert state == "rolled_back", detail
    # boxd (ExecStart=/bin/false) is never up: between two of systemd's restarts, or just started
    assert detail.startswith("the boot trial of 9.0.2 failed: boxd ") and any(
        why in detail for why in ("is not running", "has not written its status")), detail
    assert "9.0.2 installed in slot A (box-a+1.conf)" in hil.console()
    wait_for(lambda: _version(hil) == "9.0.1", 120, "the Box back on 9.0.1")
    hil.strategy.transition("ready")  # and it delivers again
    print(f"\n{hil.name}: {hil.timings}")
