"""HIL: factory image -> update -> rollback, with the power cut at each moment of an image update.

One update serves all the cuts (the vm target: the disk is read between the cuts; sim has no
image and skips; a lab bench would need the Box's own account of its slots, not built). They run
after test_scenarios.py on the same bench, in this order:

1. **during the download**: an update of 9.0.1 is sent, the power is cut once the Box reports a
   quarter downloaded. Power back: the Box reports the update failed ("restarted before the
   update was switched to"), runs the factory release, both slots and the boot entries are as
   they were.
2. **during the A/B switch, then during the new slot's first boot**: 9.0.1 is sent again; the
   power is cut once the installer says a quarter of slot B is written (its console line).
   Then the disk holds the factory's slot A whole and its entry only: the half-written slot B
   has none. Power back: the installer starts again from the beginning (the request and the
   bundle are on the data partition), says so, and boxd reports how far the first write got;
   the Box reboots into 9.0.1 on trial, and the power is cut again as its boot check starts.
   Then slot B is the whole 9.0.1 (the manifest's SHA-256) under an entry with one try used.
   Power back: 9.0.1 boots again, proves itself, and is committed.
3. **rollback**: 9.0.2, whose kernel panics at once (one try), is installed into slot A; the boot
   loader falls back to slot B by itself and the Box reports "rolled_back" with the reason.

After each power-on: nothing lost and nothing duplicated, counted per sample the building
simulator served (`tests/support/proofs.py`), each boot of the Box a life of the served log (the
console's boot lines say when one ends). The moments are conditions (the platform's view of the
download, the console's lines), never a sleep.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from cloud.deploy import ENDED
from cloud.tufrepo import publish_release
from tests.hil.boxlab import BoxVmPowerDriver
from tests.hil.conftest import Hil
from tests.support import boximage, boxvm
from tests.support.proofs import assert_nothing_lost, wait_stored
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(1800)  # a guard against a hang only: every wait below is bounded

GOOD, BAD = "9.0.1", "9.0.2"
BOOT = "EFI stub: Loaded initrd"  # on the console at each boot's start (the kernel's EFI stub)
T = TypeVar("T")


@dataclass
class Bench:
    """The update's bench: the releases (published once), the factory's slots, the Box's boots."""

    hil: Hil
    image: boximage.Image
    scratch: Path
    good: Path
    good_root: tuple[int, str]  # (size, sha256) of 9.0.1's root image
    factory: dict[str, str]  # slot -> SHA-256 of the factory image's whole slot
    slot_bytes: int
    boots: int = 1  # boots seen on the console since power-on (the first is a life begun at power-on)
    said: list[str] = field(default_factory=list)  # every distinct ota event detail the platform got

    def lives(self) -> None:
        """A new boot on the console is a new life of the Box: the served log is told (timely: boxd
        starts tens of seconds after the boot line, the old boot's boxd is gone before it)."""
        n = self.hil.console().count(BOOT)
        while self.boots < n:
            assert self.hil.building is not None
            self.hil.building.end_life()
            self.boots += 1

    def wait(self, check: Callable[[], T | None], timeout: float, what: str) -> T:
        def step() -> T | None:
            self.lives()
            return check()
        try:
            result = wait_for(step, timeout, what, step=0.5)
        except AssertionError as e:
            tail = self.hil.console()[-3000:]
            raise AssertionError(f"{e}\nthe Box said: {self.said}\n--- console ---\n{tail}") from None
        assert result is not None
        return result

    def cut(self) -> None:
        self.hil.strategy.power_cut()
        assert self.hil.building is not None
        self.hil.building.end_life()

    def power_on(self) -> float:
        since = time.time()
        self.boots = 1
        self.hil.power.on()
        return since

    def slots(self) -> boxvm.Slots:
        """The disk, read while the power is off."""
        power = self.hil.power
        assert isinstance(power, BoxVmPowerDriver), "reading the slots needs the disk: a vm target"
        assert power.vm is not None and not power.vm.alive()
        return boxvm.read_slots(power.vm.disk, self.image, self.scratch, (self.slot_bytes, self.good_root[0]))

    def deploy(self, target: str, health_s: int) -> str:
        return self.hil.cloud.create_deployment(target, boxes=[self.hil.box_id], health_s=health_s).id

    def event(self, dep: str) -> dict[str, object]:
        """The latest ota event of the Box in deployment `dep` (what it said last), noted."""
        got = self.hil.cloud.store.ota_events(dep).get(self.hil.box_id)
        doc = got[1] if got else {}
        detail = str(doc.get("detail", ""))
        if detail and detail not in self.said:
            self.said.append(detail)
        return doc

    def outcome(self, dep: str, ends: tuple[str, ...], timeout: float) -> tuple[str, str]:
        def ended() -> tuple[str, str] | None:
            self.event(dep)
            rows = self.hil.cloud.store.deployment_boxes(dep)
            over = self.hil.cloud.deployment(dep).status in ENDED
            return (rows[0].state, rows[0].detail) if over and rows and rows[0].state in ends else None
        return self.wait(ended, timeout, f"deployment {dep} to end ({', '.join(ends)})")

    def delivering(self, since: float, timeout: float = 600) -> dict[str, int]:
        """The Box delivers every point again, and has lost and duplicated nothing it owed."""
        self.wait(lambda: self.hil.every_point_good(since) or None, timeout, "every point delivered again")
        building = self.hil.building
        assert building is not None
        reads = building.served.reads()
        wait_stored(self.hil.cloud.store, self.hil.box_id, reads, 300)
        figures = assert_nothing_lost(self.hil.cloud.store, self.hil.box_id, reads, log=building.served)
        assert figures["owed"] > 0 and figures["epochs"] == 1, figures
        return figures

    def version(self) -> str | None:
        box = self.hil.cloud.store.box(self.hil.box_id)
        return box.version if box is not None else None


@pytest.fixture(scope="module")
def bench(hil: Hil, tmp_path_factory: pytest.TempPathFactory) -> Bench:
    hil.need("power", "image", "building", "console")
    image = boximage.ensure_built()
    work = tmp_path_factory.mktemp("update-power")
    good = boxvm.image_release(image, work, GOOD, shrink=True)  # ~535 MiB to write, not 640
    bad = boxvm.panic_release(image, work, BAD)  # ~11 MB
    for bundle, version in ((good, GOOD), (bad, BAD)):
        publish_release(hil.cloud.ota_repo, hil.cloud.ota_keys, bundle, version, ["generic-x86-64"])
    slot_bytes = int(image.manifest["partitions"]["root-a"]["size_mib"]) * 1024 * 1024
    factory = {s: boxvm.sha256_range(image.path, image.partition_offset(f"root-{s}"), slot_bytes) for s in "ab"}
    hil.strategy.transition("ready")
    return Bench(hil, image, work, good, boxvm.release_root(good), factory, slot_bytes)


def test_a_power_cut_during_an_update_s_download_installs_nothing_and_is_reported(bench: Bench) -> None:
    hil, started = bench.hil, time.monotonic()
    factory_version = bench.image.version
    assert bench.version() == factory_version
    dep = bench.deploy(bench.good.name, 600)

    def a_quarter() -> bool | None:
        progress = bench.event(dep).get("progress")
        return (isinstance(progress, float | int) and progress >= 0.25) or None
    bench.wait(a_quarter, 900, "the Box to report a quarter of 9.0.1 downloaded")
    bench.cut()  # mid-download: three quarters of the release still to come
    slots = bench.slots()
    assert slots.entries == ["box-a.conf"], slots.entries
    assert slots.digests["a"][bench.slot_bytes] == bench.factory["a"], "slot A changed"
    assert slots.digests["b"][bench.slot_bytes] == bench.factory["b"], "slot B was written"
    since = bench.power_on()
    state, detail = bench.outcome(dep, ("failed", "committed", "rolled_back"), 600)
    assert state == "failed" and "restarted before the update was switched to" in detail, (state, detail)
    figures = bench.delivering(since)
    assert bench.version() == factory_version
    hil.timings["power cut during the download, to the failure reported and every point delivered"] = round(
        time.monotonic() - started, 1)
    print(f"\n{hil.name}: {figures}; the Box said {bench.said}; {hil.timings}")


def test_power_cuts_during_the_ab_switch_and_the_first_boot_end_in_the_whole_new_slot(bench: Bench) -> None:
    hil, started = bench.hil, time.monotonic()
    size, digest = bench.good_root
    dep = bench.deploy(bench.good.name, 600)
    quarter = f"box: {GOOD} into slot B: 25 % written"
    bench.wait(lambda: quarter in hil.console() or None, 900, "the installer to write a quarter of slot B")
    bench.cut()  # the installer is writing slot B
    hil.timings["update sent to a quarter of slot B written"] = round(time.monotonic() - started, 1)
    slots = bench.slots()
    assert slots.entries == ["box-a.conf"], slots.entries  # the half-written slot has no entry: never booted
    assert slots.digests["a"][bench.slot_bytes] == bench.factory["a"], "slot A changed"
    assert slots.digests["b"][size] != digest, "slot B was written whole before the cut: no cut mid-write"
    assert slots.digests["b"][bench.slot_bytes] != bench.factory["b"], "slot B was not being written"

    bench.power_on()
    installed = f"{GOOD} installed in slot B (box-b+3.conf): rebooting on trial"

    def trial_begun() -> bool | None:
        console = hil.console()
        at = console.find(installed)
        bench.event(dep)
        return (at >= 0 and "box: boot trial of box-b" in console[at:]) or None
    bench.wait(trial_begun, 900, "9.0.1's first boot, its boot check under way")
    assert "was cut with" in hil.console() and "writing it again from the start" in hil.console()
    resumed = re.compile(rf"the Box lost power or was reset with \d+ % of {re.escape(GOOD)} written into slot B: "
                         "the installer writes it again from the start")
    assert any(resumed.search(said) for said in bench.said), bench.said  # the Box's report of the cut install
    bench.cut()  # the new slot's first boot, on trial
    slots = bench.slots()
    assert slots.entries == ["box-a.conf", "box-b+2-1.conf"], slots.entries  # one try used, two left
    assert slots.digests["b"][size] == digest, "slot B is not the whole 9.0.1"
    assert slots.digests["a"][bench.slot_bytes] == bench.factory["a"], "slot A changed"

    since = bench.power_on()
    state, detail = bench.outcome(dep, ("committed", "failed", "rolled_back"), 900)
    assert state == "committed", (state, detail)
    bench.wait(lambda: bench.version() == GOOD or None, 120, "the Box to report 9.0.1")
    figures = bench.delivering(since)
    hil.timings["update with two power cuts (the switch, the first boot), to 9.0.1 committed"] = round(
        time.monotonic() - started, 1)
    print(f"\n{hil.name}: {figures}; the Box said {bench.said}; {hil.timings}")


def test_a_release_whose_kernel_panics_falls_back_by_itself_and_is_reported(bench: Bench) -> None:
    hil, started = bench.hil, time.monotonic()
    assert bench.version() == GOOD, "the update scenario before this one did not leave 9.0.1 running"
    since = time.time()
    dep = bench.deploy(f"box-image-{BAD}.tar", 10)
    state, detail = bench.outcome(dep, ("rolled_back", "committed", "failed"), 900)
    assert state == "rolled_back", (state, detail)
    assert detail.startswith(f"{BAD} never completed a boot") and f"fell back to {GOOD}" in detail, detail
    console = hil.console()
    assert f"{BAD} installed in slot A (box-a+1.conf)" in console and "Kernel panic - not syncing" in console
    assert bench.version() == GOOD
    figures = bench.delivering(since)
    hil.timings["9.0.2 (kernel panic) sent, to rolled back and every point delivered"] = round(
        time.monotonic() - started, 1)
    print(f"\n{hil.name}: {figures}; {hil.timings}")
