"""Measure the Box image: its build (cold, warm, up to date), its size, and a boot to READY.

- cold: image/build.sh with an empty cache (every .deb and wheel downloaded, mmdebstrap, then the
  tree and the disk), into a temporary directory; only with ``--cold`` (~1 GB of scratch space);
- warm: the cache this tree uses, an output directory of its own: the base comes from the cache,
  the tree and the disk are made again (what a change to boxd costs `make test`);
- up to date: the same again, nothing to do;
- size: the raw disk, what it holds (allocated blocks), and zstd -3 of it (what a factory or a
  download would carry);
- boot: power-on to boxd READY under QEMU's software emulation (2 vCPUs, 512 MiB), the Box
  enrolling with a reference cloud at first boot, by the host's clock (when the self-check's line
  appears on the console); the kernel's share from systemd (boxd's ActiveEnterTimestamp).

    .venv/bin/python -m bench.image [--cold] [--json FILE]

Figures, never assertions (this machine: x86-64, no KVM, 2 cores shared; not an ARM Box).
Needs root, like the build.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.measure import print_figures
from tests.support import boximage
from tests.support.qemu import Vm
from tests.support.wait import wait_for

BUILD = boximage.ROOT / "image" / "build.sh"


def _build(out: Path, env: dict[str, str] | None = None) -> float:
    t0 = time.monotonic()
    subprocess.run([str(BUILD), str(out)], check=True, env={**os.environ, **(env or {})},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=3600)
    return round(time.monotonic() - t0, 1)


def _size(img: Path) -> dict[str, object]:
    figures: dict[str, object] = {"disk_mib": img.stat().st_size // 2**20,
                                  "allocated_mib": img.stat().st_blocks * 512 // 2**20}
    if shutil.which("zstd"):
        with subprocess.Popen(["zstd", "-3", "-T2", "-c", str(img)], stdout=subprocess.PIPE) as z:
            out = z.stdout
            assert out is not None
            n = 0
            while chunk := out.read(1 << 20):
                n += len(chunk)
            figures["zstd3_mib"] = n // 2**20
    return figures


def _boot(image: boximage.Image, work: Path) -> dict[str, object]:
    with boximage.host_address() as address:
        cloud = boximage.vm_platform(image, work / "cloud", address)
        cloud.start()
        try:
            token, _ = cloud.add_box("BENCH-BOX", 3600)
            vm = Vm(image.path, work / "vm", watch=('"check": "boot"', '"check": "ready"'), credentials={
                "boxd.enroll": json.dumps({"server": f"https://{address}:{cloud.settings.enroll_port}",
                                           "token": token, "serial": "BENCH-BOX"}),
                "boxd.selftest": json.dumps({"mode": "ready"}),
            })
            vm.start()
            try:
                ready = wait_for(lambda: vm.result("ready") if vm.alive() else None, 900, "boxd READY in the VM",
                                 step=0.2)
                assert ready is not None
                to_ready = vm.seen('"check": "ready"') or 0.0
                # systemd-boot's own firmware and loader times need a TSC frequency that TCG does not
                # give: the host's clock minus the kernel's is the firmware's and the boot loader's share
                return {"boot_to_ready_s": round(to_ready, 1), "kernel_to_ready_s": ready["kernel_to_ready_s"],
                        "firmware_and_loader_s": round(to_ready - float(ready["kernel_to_ready_s"]), 1),
                        "connected": ready["connected"]}
            finally:
                vm.stop()
        finally:
            cloud.stop()


def measure(work: Path, cold: bool) -> dict[str, object]:
    figures: dict[str, object] = {}
    if cold:
        figures["cold_build_s"] = _build(work / "cold", {"BOXD_IMAGE_CACHE": str(work / "cache")})
    figures["warm_build_s"] = _build(work / "warm")
    figures["up_to_date_s"] = _build(work / "warm")
    image = boximage.Image(work / "warm" / "box.img", json.loads((work / "warm" / "box.json").read_text()))
    figures.update(_size(image.path))
    figures["root_used_mib"] = image.manifest["root_used_mib"]
    figures.update(_boot(image, work))
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.image", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--cold", action="store_true", help="also build with an empty cache (downloads everything)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    why = boximage.unavailable()
    if why:
        p.error(why)
    with tempfile.TemporaryDirectory(prefix="bench-image-") as tmp:
        print_figures(measure(Path(tmp), args.cold), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
