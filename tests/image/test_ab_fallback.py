"""A/B at boot level: a slot that never proves itself healthy falls back to the other one by itself.

The test installs slot B as an update on trial (its boot entry with one try left,
box-b+1.conf, newer than the factory's slot A) on a copy of the image, powers the VM on, and
watches the serial console: nothing from the host chooses between the boots (the reboot is a cold
reset: a new QEMU on the same disk and firmware variables, tests.support.qemu). The image's
self-check runs in "boot" mode: it only says which entry came up (``BOXTEST`` lines). The
release's entry masks boxd (``systemd.mask=boxd.service``) and gives the trial 10 s: boxd never
says it is healthy, the boot check fails its trial with the reason, the Box reboots, the try is
spent, and A comes up.

A release whose kernel panics is shown end to end, installed through an OTA update and reported
with its reason, by the HIL suite (tests/hil/test_update_power.py, vm target).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support import boximage
from tests.support.qemu import Vm
from tests.support.wait import wait_for

# one booted VM at a time: the "box-vm" group (tests/conftest.py); the wait below ends first, with the console
pytestmark = pytest.mark.timeout(900)

SELFTEST = {"boxd.selftest": json.dumps({"mode": "boot"})}
A_UP, B_UP = '"entry": "box-a', '"entry": "box-b'  # in the self-check's boot line


def _boot_with_trial(image: boximage.Image, work: Path, entry: str) -> Vm:
    vm = Vm(image.path, work / "vm", copy_disk=True, credentials=SELFTEST,
            watch=(A_UP, B_UP, "failed its boot trial", "Kernel panic"))
    vm.prepare()
    boximage.Esp(vm.disk, image).write("loader/entries/box-b+1.conf", entry, work)
    vm.start()
    return vm


def _finish(vm: Vm, image: boximage.Image, name: str) -> None:
    vm.stop()
    (image.path.parent / f"last-{name}-console.log").write_text(vm.console())


def test_a_release_that_never_becomes_healthy_falls_back_to_the_other_slot(box_image: boximage.Image,
                                                                           tmp_path: Path) -> None:
    unhealthy = boximage.boot_entry(box_image, "b", "0.1.1", options="boxd.trial_s=10 systemd.mask=boxd.service")
    vm = _boot_with_trial(box_image, tmp_path, unhealthy)
    try:
        def a_up() -> dict[str, Any] | None:
            if not vm.alive():
                raise AssertionError(f"QEMU ended:\n{vm.console()[-3000:]}")
            boots = [r for r in vm.results() if r.get("check") == "boot"]
            return next((r for r in boots if str(r.get("entry", "")).startswith("box-a")), None)
        try:
            fallen_back = wait_for(a_up, 600, "slot A to come up after slot B's failed trial", step=0.5)
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- console (tail) ---\n{vm.console()[-3000:]}") from None
        assert fallen_back is not None
        console = vm.console()
        assert "box-b+1.conf failed its boot trial: boxd" in console, console[-3000:]  # the reason, on the console
        assert fallen_back["entry"] == "box-a.conf" and fallen_back["root"] == "/dev/vda2", fallen_back
        assert fallen_back["entries"] == ["box-a.conf", "box-b+0-1.conf"], fallen_back
        print(f"\ntrial failed at {vm.seen('failed its boot trial'):.0f} s, slot A up at {vm.seen(A_UP):.0f} s, "
              f"{vm.resets} reset(s)")
    finally:
        _finish(vm, box_image, "unhealthy")
