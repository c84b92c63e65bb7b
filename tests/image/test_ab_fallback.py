"""A/B at boot level: a slot whose kernel panics falls back to the other one by itself.

The test installs slot B as an update on trial (its boot entry with one try left,
box-b+1.conf, newer than the factory's slot A) on a copy of the image, powers the VM on, and
watches the serial console: nothing from the host intervenes between the boots. The image's
self-check runs in "boot" mode: it only says which entry came up (``BOXTEST`` lines). The
release's entry has no initramfs (the root file system cannot be mounted): the kernel panics,
reboots after ``panic=5``, the try is spent, and A comes up.

A release that boots but never becomes healthy is shown end to end, installed through an OTA
update and reported with its reason, by the HIL suite (tests/hil/test_scenarios.py, vm target).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support import boximage
from tests.support.qemu import Vm
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(900)  # one booted VM at a time: the "box-vm" group (tests/conftest.py)

SELFTEST = {"boxd.selftest": json.dumps({"mode": "boot"})}
A_UP, B_UP = '"entry": "box-a', '"entry": "box-b'  # in the self-check's boot line


def _boot_with_trial(image: boximage.Image, work: Path, entry: str) -> Vm:
    vm = Vm(image.path, work / "vm", copy_disk=True, credentials=SELFTEST,
            watch=(A_UP, B_UP, "failed its boot trial", "Kernel panic"))
    vm.prepare()
    boximage.Esp(vm.disk, image).write("loader/entries/box-b+1.conf", entry, work)
    vm.start()
    return vm


def _wait_boots(vm: Vm, n: int, timeout: float) -> list[dict[str, Any]]:
    """The first `n` boots the self-check reported (which entry came up, what the ESP holds)."""
    def enough() -> list[dict[str, Any]] | None:
        if not vm.alive():
            raise AssertionError(f"QEMU ended:\n{vm.console()[-3000:]}")
        boots = [r for r in vm.results() if r.get("check") == "boot"]
        return boots[:n] if len(boots) >= n else None
    try:
        boots = wait_for(enough, timeout, f"{n} boot(s) reported on the console", step=0.5)
        assert boots is not None
        return boots
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- console (tail) ---\n{vm.console()[-3000:]}") from None


def _finish(vm: Vm, image: boximage.Image, name: str) -> None:
    vm.stop()
    (image.path.parent / f"last-{name}-console.log").write_text(vm.console())


def test_a_release_whose_kernel_panics_falls_back_to_the_other_slot(box_image: boximage.Image, tmp_path: Path) -> None:
    broken = boximage.boot_entry(box_image, "b", "0.1.1", initrd=False)  # no initramfs: root cannot be mounted
    vm = _boot_with_trial(box_image, tmp_path, broken)
    try:
        (fallen_back,) = _wait_boots(vm, 1, 600)  # slot B never gets as far as the self-check
        assert "Kernel panic - not syncing" in vm.console()
        assert fallen_back["entry"] == "box-a.conf" and fallen_back["root"] == "/dev/vda2", fallen_back
        assert fallen_back["entries"] == ["box-a.conf", "box-b+0-1.conf"], fallen_back
        print(f"\npanic at {vm.seen('Kernel panic'):.0f} s, slot A up at {vm.seen(A_UP):.0f} s")
    finally:
        _finish(vm, box_image, "panic")
