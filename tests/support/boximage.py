"""The Box image for tests: built by image/build.sh (quick when up to date), its layout, its ESP,
and a reference cloud that a VM can reach.

- `ensure_built()` runs the build (a no-op when build/image/box.img matches the tree) and returns
  the image with its manifest (build/image/box.json: partitions, kernel, the development platform).
- `Esp` reads and writes the boot partition of a disk *file* with mtools (no loop device, no
  mount): the boot entries, as an installer would write them.
- `vm_platform()` runs a reference cloud from a copy of the development platform the image
  trusts (its CA and TUF root are in the image), listening on an address of an interface of its
  own (a veth pair in the root namespace, both ends here; TEST-NET-3, 203.0.113.0/24, a
  documentation range with no route anywhere: nothing leaves the machine). The
  VM reaches it through QEMU's user networking, and the host's receiver reaches it too, so the
  name the Box is given at enrollment is the same on both sides.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cloud.platform import Cloud, Settings
from tests.support import qemu
from tests.support.wait import free_port

ROOT = Path(__file__).resolve().parents[2]
IMAGE_DIR = ROOT / "build" / "image"
_TOOLS = ("mmdebstrap", "mkfs.ext4", "mkfs.vfat", "mcopy", "sfdisk", "qemu-img")


def unavailable() -> str | None:
    """None if the image can be built and booted here, else why not."""
    if os.geteuid() != 0:
        return "building the Box image needs root (chroot, file ownership)"
    missing = [t for t in _TOOLS if shutil.which(t) is None]
    if missing:
        return f"missing {', '.join(missing)} (scripts/bootstrap.sh installs them)"
    return qemu.available()


@dataclass(frozen=True)
class Image:
    path: Path
    manifest: dict[str, Any]

    def partition_offset(self, name: str) -> int:
        return int(self.manifest["partitions"][name]["start_mib"]) * 1024 * 1024

    @property
    def release(self) -> Path:
        """The root file system alone (build/image/release/root.img): what an image update writes."""
        return self.path.parent / "release" / "root.img"

    @property
    def version(self) -> str:
        return str(self.manifest.get("version", self.manifest["boxd_version"]))

    @property
    def dev_platform(self) -> Path | None:
        p = self.manifest.get("dev_platform")
        return Path(p) if p else None


def ensure_built(timeout: float = 1800) -> Image:
    """Build the image unless it is up to date; the build's own log goes to build/image/build.log."""
    IMAGE_DIR.mkdir(parents=True, exist_ok=True)
    with (IMAGE_DIR / "build.log").open("ab") as log:
        r = subprocess.run([str(ROOT / "image" / "build.sh"), str(IMAGE_DIR)], stdout=log, stderr=log,
                           timeout=timeout)
    if r.returncode != 0:
        tail = (IMAGE_DIR / "build.log").read_text(errors="replace")[-3000:]
        raise AssertionError(f"image/build.sh failed ({r.returncode}):\n{tail}")
    return Image(IMAGE_DIR / "box.img", json.loads((IMAGE_DIR / "box.json").read_text()))


class Esp:
    """The EFI system partition of a disk image file, through mtools."""

    def __init__(self, disk: Path, image: Image) -> None:
        self._target = f"{disk}@@{image.partition_offset('esp')}"

    def _m(self, *args: str) -> str:
        r = subprocess.run(list(args), capture_output=True, text=True, timeout=60,
                           env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def entries(self) -> list[str]:
        """The boot entries' file names (loader/entries/*.conf)."""
        out = self._m("mdir", "-b", "-i", self._target, "::/loader/entries")
        return sorted(Path(line.strip()).name for line in out.splitlines() if line.strip().endswith(".conf"))

    def read(self, path: str) -> str:
        return self._m("mtype", "-i", self._target, f"::/{path}")

    def write(self, path: str, text: str, scratch: Path) -> None:
        local = scratch / Path(path).name
        local.write_text(text)
        self._m("mcopy", "-o", "-i", self._target, str(local), f"::/{path}")
        local.unlink()

    def remove(self, path: str) -> None:
        self._m("mdel", "-i", self._target, f"::/{path}")


# -- a reference cloud the VM can reach ---------------------------------------------------------------

_LINK_PREFIX = "boxvm"
# one process may hold several at once: the HIL vm target's bench for the session, tests/image's for a module
_links = itertools.count()


def _ip(*args: str, check: bool = True) -> str:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


@contextlib.contextmanager
def host_address() -> Iterator[str]:
    """A /32 of TEST-NET-3 on an interface of this process's own; removed on exit.

    A veth pair whose two ends stay here (this kernel may have no dummy interfaces): the address
    is local, so the host's own sockets, and QEMU's user networking for the guest, reach it.
    """
    for name in re.findall(rf"^\d+: ({_LINK_PREFIX}(\d+)x\d+)[:@]", _ip("-o", "link", "show"), re.M):
        if not Path(f"/proc/{name[1]}").exists():  # left by a run that was killed
            _ip("link", "del", name[0], check=False)
    used = set(re.findall(r"inet (203\.0\.113\.\d+)/", _ip("-o", "-4", "addr", "show")))
    address = next(f"203.0.113.{n}" for n in [*range(1 + os.getpid() % 250, 251), *range(1, 251)]
                   if f"203.0.113.{n}" not in used)
    link = f"{_LINK_PREFIX}{os.getpid()}x{next(_links) % 10}"  # at most 15 characters with the peer's "p"
    _ip("link", "add", link, "type", "veth", "peer", "name", f"{link}p")
    try:
        _ip("addr", "add", f"{address}/32", "dev", link)
        _ip("link", "set", f"{link}p", "up")
        _ip("link", "set", link, "up")
        yield address
    finally:
        _ip("link", "del", link, check=False)


def vm_platform(image: Image, home: Path, address: str) -> Cloud:
    """A copy of the image's development platform, set to listen on `address` (not started)."""
    dev = image.dev_platform
    if dev is None:
        raise AssertionError("the image trusts a production platform (PLATFORM_CA): no cloud to test it with")
    shutil.copytree(dev, home, symlinks=True)
    for stale in ("cloud.db", "cloud.db-wal", "cloud.db-shm"):
        (home / stale).unlink(missing_ok=True)
    settings = Settings(host=address, broker_port=free_port(), enroll_port=free_port(), bind=address,
                        api_port=free_port())
    (home / "cloud.json").write_text(json.dumps(asdict(settings), indent=1))
    cloud = Cloud(home)
    names = [address, "localhost", "127.0.0.1"]
    cloud.pki.issue_server("broker", names)
    cloud.pki.issue_server("enroll", names)
    return cloud


def boot_entry(image: Image, slot: str, version: str, *, options: str = "", initrd: bool = True) -> str:
    """A boot loader entry (Boot Loader Specification, type 1) for slot "a" or "b", as image/build.sh
    writes the factory's and an installer writes an update's: its file name carries the boot
    counter (``box-b+3.conf``: three tries)."""
    partuuid = image.manifest["partitions"][f"root-{slot}"]["partuuid"]
    lines = [f"title Box {version} (slot {slot.upper()})", "sort-key box", f"version {version}",
             f"linux /{slot}/vmlinuz"]
    if initrd:
        lines.append(f"initrd /{slot}/initrd.img")
    lines.append(f"options root=PARTUUID={partuuid} {image.manifest['cmdline']} {options}".rstrip())
    return "\n".join(lines) + "\n"
