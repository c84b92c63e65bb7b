"""A virtual Box's bench: the reference cloud it trusts, on an address it can reach, and its enrollment.

Shared by the image tests (tests/image) and the HIL suite's `vm` target (tests/hil): both boot the
image under QEMU (`tests.support.qemu.Vm`) against a copy of the development platform the image
trusts (`boximage.vm_platform`), listening on an address of this machine that QEMU's user
networking lets the guest reach (`boximage.host_address`). The Box enrolls at first boot from the
``boxd.enroll`` credential (the key is made inside the VM) and gets its configuration pushed by
the cloud once it is known there (`configure_when_enrolled`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cloud.platform import Cloud
from tests.support import boximage


@dataclass(frozen=True)
class Bench:
    address: str  # the cloud's (and the host's simulators') address, as the VM reaches it
    cloud: Cloud

    def enroll_credential(self, box_id: str, ttl_s: float = 3600) -> dict[str, str]:
        """The ``boxd.enroll`` system credential of a new Box (a one-time token of the cloud's)."""
        token, _ = self.cloud.add_box(box_id, ttl_s)
        return {"boxd.enroll": json.dumps({"server": f"https://{self.address}:{self.cloud.settings.enroll_port}",
                                           "token": token, "serial": box_id})}


@contextlib.contextmanager
def bench(image: boximage.Image, work: Path) -> Iterator[Bench]:
    """A started reference cloud that a VM booted from `image` trusts and reaches; stopped on exit."""
    with boximage.host_address() as address:
        cloud = boximage.vm_platform(image, work / "cloud", address)
        cloud.start()
        try:
            yield Bench(address, cloud)
        finally:
            cloud.stop()


def configure_when_enrolled(cloud: Cloud, box_id: str, toml_text: str, pushed: list[int]) -> bool:
    """Push `toml_text` to the Box once it has enrolled (once: the version goes into `pushed`);
    True once pushed. For a polling loop (`wait_for`)."""
    if not pushed and cloud.store.box(box_id) is not None:
        pushed.append(cloud.push_config(box_id, toml_text))
    return bool(pushed)


def image_release(image: boximage.Image, work: Path, version: str, *, broken: bool = False,
                  boot_tries: int = 3, shrink: bool = False) -> Path:
    """An image release (cloud.image_release) of the built root file system, as version `version`.

    The root image is `make image`'s release artefact with its release file saying `version`
    (edited with debugfs, no mount); `broken`: with a drop-in that keeps boxd from ever starting
    (``ExecStart=/bin/false``): a release that boots and never becomes healthy; `shrink`: the file
    system made as small as resize2fs can (about 535 of the slot's 640 MiB: less for the installer
    to write under emulation; a file system smaller than its partition mounts as well).
    """
    from cloud.image_release import build_image

    root = work / f"root-{version}.img"
    subprocess.run(["cp", "--sparse=always", str(image.release), str(root)], check=True, timeout=120)
    (work / "release.json").write_text(json.dumps({"version": version}) + "\n")
    script = ["rm /usr/share/boxd/release.json",
              f"write {work / 'release.json'} /usr/share/boxd/release.json"]
    if broken:
        (work / "99-broken.conf").write_text("[Service]\nExecStart=\nExecStart=/bin/false\n")
        script += [f"write {work / '99-broken.conf'} /usr/lib/systemd/system/boxd.service.d/99-broken.conf"]
    r = subprocess.run(["debugfs", "-w", "-f", "-", str(root)], input="\n".join(script) + "\n",
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0 or "rror" in r.stderr.replace("debugfs 1.", ""):
        raise AssertionError(f"debugfs on {root}: {r.stderr}")
    try:
        if shrink:
            _run(["e2fsck", "-fy", str(root)], ok=(0, 1))
            _run(["resize2fs", "-M", str(root)])
        return build_image(root, work / "releases", version, ["generic-x86-64"], boot_tries=boot_tries, level=1)
    finally:
        root.unlink()


def panic_release(image: boximage.Image, work: Path, version: str) -> Path:
    """A tiny image release whose kernel panics at once (one boot try): a 32 MiB root file system
    with the image's kernel and an initramfs that is not one, so the kernel cannot mount its root.
    What a bad kernel or a broken early boot looks like to the boot loader, for the price of a
    few megabytes to download and write."""
    from cloud.image_release import build_image

    kernel = str(image.manifest["kernel"])
    tree = work / f"panic-{version}"
    (tree / "boot").mkdir(parents=True)
    (tree / "usr" / "share" / "boxd").mkdir(parents=True)
    _run(["debugfs", "-R", f"dump /boot/vmlinuz-{kernel} {tree / 'boot' / f'vmlinuz-{kernel}'}", str(image.release)])
    (tree / "boot" / f"initrd.img-{kernel}").write_bytes(b"not an initramfs\n")
    (tree / "usr" / "share" / "boxd" / "release.json").write_text(json.dumps({"version": version}) + "\n")
    root = work / f"root-{version}.img"
    _run(["truncate", "-s", "32M", str(root)])
    _run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(tree), str(root)])
    try:
        return build_image(root, work / "releases", version, ["generic-x86-64"], boot_tries=1, level=1)
    finally:
        root.unlink()


def _run(argv: list[str], ok: tuple[int, ...] = (0,)) -> None:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if r.returncode not in ok:
        raise AssertionError(f"{' '.join(argv)}: {r.returncode}: {r.stderr[-2000:]}")


def release_root(bundle: Path) -> tuple[int, str]:
    """(size, sha256) of an image release's root image, from its manifest."""
    with tarfile.open(bundle, "r:") as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        root = json.loads(member.read())["root"]
    return int(root["size"]), str(root["sha256"])


@dataclass(frozen=True)
class Slots:
    """What a Box's disk holds, read while it is off: its boot entries, and the SHA-256 of each root
    slot's first `size` bytes for the sizes asked (slot -> size -> digest)."""

    entries: list[str]
    digests: dict[str, dict[int, str]]


def read_slots(disk: Path, image: boximage.Image, scratch: Path, sizes: tuple[int, ...]) -> Slots:
    """The boot entries and root slots of a VM's disk (a qcow2 overlay or a raw copy) while the VM is off."""
    raw = scratch / "disk.raw"
    _run(["qemu-img", "convert", "-O", "raw", str(disk), str(raw)])
    try:
        entries = boximage.Esp(raw, image).entries()
        digests = {slot: {size: sha256_range(raw, image.partition_offset(f"root-{slot}"), size) for size in sizes}
                   for slot in ("a", "b")}
    finally:
        raw.unlink()
    return Slots(entries, digests)


def read_data_file(disk: Path, image: boximage.Image, scratch: Path, path: str) -> bytes:
    """A file of a VM's data partition (`path` inside it: /var's), read from its disk (a qcow2 overlay or a raw
    copy) while the VM is off: the partition copied out with `qemu-img dd`, its journal replayed (e2fsck), the
    file read with debugfs."""
    part = image.manifest["partitions"]["data"]
    raw = scratch / "data.raw"
    fmt = "qcow2" if disk.suffix == ".qcow2" else "raw"
    # qemu-img dd counts `count` from the start of the input, not from `skip`
    _run(["qemu-img", "dd", "-f", fmt, "-O", "raw", "bs=1M", f"skip={part['start_mib']}",
          f"count={part['start_mib'] + part['size_mib']}", f"if={disk}", f"of={raw}"])
    try:
        # what a mount would do first: the file system's journal replayed (after a power cut the newest
        # metadata may be there only; debugfs reads the file system as it is on the disk)
        _run(["e2fsck", "-E", "journal_only", "-y", str(raw)], ok=(0, 1))
        # -c: the bitmaps unread (a file is read through its inode; the bitmaps of a cut are the journal's business)
        r = subprocess.run(["debugfs", "-c", "-R", f"cat {path}", str(raw)], capture_output=True, timeout=60)
    finally:
        raw.unlink()
    if r.returncode != 0 or not r.stdout:
        raise AssertionError(f"{path} on the data partition of {disk}: {r.stderr.decode(errors='replace')}")
    return r.stdout


def sha256_range(path: Path, offset: int, size: int) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        f.seek(offset)
        left = size
        while left > 0 and (chunk := f.read(min(left, 1 << 22))):
            h.update(chunk)
            left -= len(chunk)
    assert left == 0, f"{path} ends before {offset + size}"
    return h.hexdigest()
