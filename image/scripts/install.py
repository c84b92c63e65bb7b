"""Install an image release into the other root slot (boxd-install.service, as root).

boxd downloads a release through TUF (ota.client: signatures, version, hardware, length, hash)
and asks for it to be installed by writing ``/var/lib/boxd/ota/install.json``
(``{"deployment", "version", "bundle", "trial_s"}``); the path unit starts this. It:

1. checks the request (names, bounds, the bundle a regular file in boxd's download directory)
   and the bundle (an image bundle, cloud/release.py: a tar of ``manifest.json`` then
   ``root.img.gz``; the manifest's version is the request's, the root image fits the slot);
2. writes the inactive root partition (the one the running entry does not name) from the
   gzip stream, hashing what it writes: the SHA-256 and size must be the manifest's; at each
   quarter it says how far it got on the console and in ``/var/lib/boxd/ota/install-progress.json``
   (with the boot's id: an install cut by a power loss is started again from the beginning at
   the next boot, by the same request, and says so; its records then keep the cut one's, under
   ``cut``, for boxd to report whenever it starts);
3. mounts the written slot read-only (its own mount namespace) and copies its kernel and
   initramfs to the ESP (``/efi/<slot>/``), through temporary files;
4. writes the slot's boot entry with a boot counter, ``box-<slot>+<tries>.conf`` (after removing
   any older entry of that slot), whose options carry ``boxd.trial_s`` (image/README.md, "A/B");
5. records ``/var/lib/boxd/boot/pending.json`` (what the next boot is a trial of, for boxd to
   report the outcome: committed, or rolled back and why) and exits 0: the unit's
   ``SuccessAction=reboot`` reboots into the new slot on trial.

Anything wrong: nothing is switched (the running slot's entry is never touched; a half-written
inactive slot has no entry), the reason goes to ``/var/lib/boxd/ota/install-failed.json`` for
boxd to report, and the exit status is 1 (no reboot). Standard library only: it runs with
/usr/bin/python3 whatever the slot's boxd is.

It does not verify TUF metadata itself (boxd's download process did, as the boxd user); it
trusts the bundle only as far as its manifest's hashes go.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

STATE = Path("/var/lib/boxd")
REQUEST = STATE / "ota" / "install.json"
FAILED = STATE / "ota" / "install-failed.json"
DOWNLOADS = STATE / "ota" / "downloads"
PENDING = STATE / "boot" / "pending.json"
PROGRESS = STATE / "ota" / "install-progress.json"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
LAYOUT = Path("/usr/share/boxd/layout.json")
ESP = Path("/efi")
VERSION = re.compile(r"[0-9]{1,6}\.[0-9]{1,6}\.[0-9]{1,6}(-[0-9A-Za-z.]{1,32})?")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_MANIFEST = 64 * 1024
CHUNK = 1 << 20


class InstallError(Exception):
    """Why the release is not installed (the message is for the platform)."""


def _say(text: str) -> None:
    print(f"box: {text}", flush=True)


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _boxd_dir(path: Path) -> None:
    """A directory of boxd's state, owned by boxd (0700), made if missing."""
    if not path.is_dir():
        path.mkdir(mode=0o700, parents=True)
        user = pwd.getpwnam("boxd")
        os.chown(path, user.pw_uid, user.pw_gid)


def read_request(raw: bytes) -> dict[str, Any]:
    """The request, checked: deployment and version names, the trial's time, the bundle's path."""
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise InstallError(f"install.json is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise InstallError("install.json is not an object")
    deployment, version, bundle, trial_s = (doc.get(k) for k in ("deployment", "version", "bundle", "trial_s"))
    if not isinstance(deployment, str) or not NAME.fullmatch(deployment):
        raise InstallError(f"install.json: bad deployment {deployment!r}")
    if not isinstance(version, str) or not VERSION.fullmatch(version):
        raise InstallError(f"install.json: bad version {version!r}")
    if not isinstance(trial_s, int) or isinstance(trial_s, bool) or not 10 <= trial_s <= 86400:
        raise InstallError(f"install.json: trial_s must be 10..86400 seconds, not {trial_s!r}")
    if not isinstance(bundle, str) or not NAME.fullmatch(Path(bundle).name) or Path(bundle).parent != DOWNLOADS:
        raise InstallError(f"install.json: the bundle must be a file of {DOWNLOADS}, not {bundle!r}")
    return {"deployment": deployment, "version": version, "bundle": Path(bundle), "trial_s": trial_s}


def read_manifest(tar: tarfile.TarFile, version: str, slot_bytes: int) -> tuple[dict[str, Any], tarfile.TarInfo]:
    """The bundle's manifest (first member) and its root image member (second), checked."""
    first = tar.next()
    if first is None or first.name != "manifest.json" or not first.isfile() or first.size > MAX_MANIFEST:
        raise InstallError("not an image release: its first member is not manifest.json")
    f = tar.extractfile(first)
    assert f is not None
    try:
        doc = json.loads(f.read())
    except ValueError as e:
        raise InstallError(f"manifest.json is not JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != 1 or doc.get("name") != "box-image":
        raise InstallError("not an image release (manifest name is not box-image, format 1): a software "
                           "bundle cannot update a Box image")
    if doc.get("version") != version:
        raise InstallError(f"the bundle is version {doc.get('version')!r}, the update says {version}")
    root = doc.get("root")
    size, digest = (root.get("size"), root.get("sha256")) if isinstance(root, dict) else (None, None)
    if not isinstance(size, int) or not 0 < size <= slot_bytes:
        raise InstallError(f"the root image's size {size!r} does not fit the slot ({slot_bytes} bytes)")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise InstallError("the manifest has no sha256 of the root image")
    tries = doc.get("boot_tries", 3)
    if not isinstance(tries, int) or isinstance(tries, bool) or not 1 <= tries <= 5:
        raise InstallError(f"boot_tries must be 1..5, not {tries!r}")
    member = tar.next()
    if member is None or member.name != "root.img.gz" or not member.isfile():
        raise InstallError("the bundle's second member is not root.img.gz")
    return {"size": size, "sha256": digest, "tries": tries}, member


def write_slot(src: IO[bytes], device: Path, size: int, digest: str,
               progress: Callable[[int], None] = lambda _written: None) -> None:
    """Write the gunzipped root image to `device`, checking its size and SHA-256 as it goes;
    `progress(bytes written)` at the start and at each quarter."""
    h, n = hashlib.sha256(), 0
    marks = [size * q // 4 for q in (1, 2, 3)]
    progress(0)
    try:
        with gzip.GzipFile(fileobj=src) as z, device.open("r+b", buffering=0) as out:
            while chunk := z.read(CHUNK):
                n += len(chunk)
                if n > size:
                    raise InstallError(f"the root image is longer than its manifest's {size} bytes")
                h.update(chunk)
                out.write(chunk)
                if marks and n >= marks[0]:
                    while marks and n >= marks[0]:
                        marks.pop(0)
                    progress(n)
            out.flush()
            os.fsync(out.fileno())
    except (OSError, EOFError, zlib.error) as e:
        raise InstallError(f"writing {device}: {e}") from None
    if n != size or h.hexdigest() != digest:
        raise InstallError(f"the root image written ({n} bytes, sha256 {h.hexdigest()[:16]}...) is not the "
                           f"manifest's ({size} bytes, {digest[:16]}...): the slot is left without an entry")


def cut_short(earlier: dict[str, Any] | None, req: dict[str, Any], boot: str) -> str | None:
    """What the progress record of an earlier boot says of this request: its install was cut
    (a power loss, a reset) after so much was written; None when there was no such install."""
    if not earlier or earlier.get("deployment") != req["deployment"] or earlier.get("boot_id") == boot:
        return None
    written, size = earlier.get("written"), earlier.get("size")
    share = f"{100 * written // size} %" if isinstance(written, int) and isinstance(size, int) and size > 0 else "?"
    return (f"the install of {req['version']} into slot {str(earlier.get('slot', '?')).upper()} was cut with "
            f"{share} written (a power loss or a reset): writing it again from the start")


def _progress(req: dict[str, Any], slot: str, size: int, boot: str,
              cut: dict[str, Any] | None) -> Callable[[int], None]:
    """Record and say how far the write got; `cut`: the record of an earlier boot's write of this
    request that a power loss ended, kept in this boot's records (boxd reports it)."""
    def say(written: int) -> None:
        doc = {"deployment": req["deployment"], "version": req["version"], "slot": slot, "written": written,
               "size": size, "boot_id": boot}
        if cut is not None:
            doc["cut"] = {"written": cut.get("written"), "size": cut.get("size"), "boot_id": cut.get("boot_id")}
        _write_atomic(PROGRESS, json.dumps(doc).encode())
        _say(f"{req['version']} into slot {slot.upper()}: {100 * written // size} % written")
    return say


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def slots(layout: dict[str, Any], cmdline: str) -> tuple[str, str]:
    """(running slot, the other one) from the root the kernel was booted with."""
    booted = next((w.split("=", 2)[2].lower() for w in cmdline.split() if w.startswith("root=PARTUUID=")), "")
    for running, other in (("a", "b"), ("b", "a")):
        if layout["partitions"][f"root-{running}"]["partuuid"] == booted:
            return running, other
    raise InstallError(f"the running root (PARTUUID {booted or '?'}) is not a slot of this layout")


def boot_files(device: Path, slot: str) -> None:
    """The written slot's kernel and initramfs, copied to the ESP (/efi/<slot>/)."""
    with tempfile.TemporaryDirectory() as mnt:
        subprocess.run(["mount", "-o", "ro,noload", str(device), mnt], check=True, capture_output=True, timeout=60)
        try:
            boot = Path(mnt) / "boot"
            kernels = sorted(boot.glob("vmlinuz-*"))
            if not kernels:
                raise InstallError("the root image has no /boot/vmlinuz-*")
            kver = kernels[-1].name.removeprefix("vmlinuz-")
            (ESP / slot).mkdir(exist_ok=True)
            for src, name in ((kernels[-1], "vmlinuz"), (boot / f"initrd.img-{kver}", "initrd.img")):
                tmp = ESP / slot / f"{name}.new"
                shutil.copyfile(src, tmp)
                with tmp.open("rb") as f:
                    os.fsync(f.fileno())
                tmp.replace(ESP / slot / name)
        finally:
            subprocess.run(["umount", mnt], check=False, capture_output=True, timeout=60)


def entry(layout: dict[str, Any], slot: str, version: str, trial_s: int) -> str:
    partuuid = layout["partitions"][f"root-{slot}"]["partuuid"]
    return (f"title Box {version} (slot {slot.upper()})\nsort-key box\nversion {version}\n"
            f"linux /{slot}/vmlinuz\ninitrd /{slot}/initrd.img\n"
            f"options root=PARTUUID={partuuid} {layout['cmdline']} boxd.trial_s={trial_s}\n")


def install(req: dict[str, Any], layout: dict[str, Any], cmdline: str, running_version: str) -> dict[str, Any]:
    running, slot = slots(layout, cmdline)
    device = Path("/dev/disk/by-partuuid") / layout["partitions"][f"root-{slot}"]["partuuid"]
    slot_bytes = int(layout["partitions"][f"root-{slot}"]["size_mib"]) * 1024 * 1024
    bundle: Path = req["bundle"]
    if bundle.is_symlink() or not bundle.is_file():
        raise InstallError(f"no bundle at {bundle}")
    entries = ESP / "loader" / "entries"
    for old in entries.glob(f"box-{slot}*.conf"):  # the slot's previous release: not bootable from here on
        old.unlink()
    boot = BOOT_ID.read_text().strip()
    earlier = _read_json(PROGRESS)
    cut = cut_short(earlier, req, boot)
    if cut:
        _say(cut)
    _say(f"installing {req['version']} into slot {slot.upper()} ({device}); slot {running.upper()} runs")
    try:
        with tarfile.open(bundle, "r:") as tar:
            manifest, member = read_manifest(tar, req["version"], slot_bytes)
            src = tar.extractfile(member)
            assert src is not None
            progress = _progress(req, slot, manifest["size"], boot, earlier if cut else None)
            write_slot(src, device, manifest["size"], manifest["sha256"], progress)
    except (OSError, tarfile.TarError) as e:
        raise InstallError(f"the bundle cannot be read: {e}") from None
    try:
        boot_files(device, slot)
    except (OSError, subprocess.SubprocessError) as e:
        raise InstallError(f"copying the new slot's kernel to the ESP: {e}") from None
    name = f"box-{slot}+{manifest['tries']}.conf"
    _write_atomic(entries / name, entry(layout, slot, req["version"], req["trial_s"]).encode())
    return {"deployment": req["deployment"], "version": req["version"], "slot": slot, "entry": name,
            "previous": running_version, "trial_s": req["trial_s"], "ts": int(time.time())}


def main() -> int:
    try:
        raw = REQUEST.read_bytes()
    except FileNotFoundError:
        return 0  # started by hand, or the request was taken already
    deployment, version = "", ""
    try:
        req = read_request(raw)
        deployment, version = req["deployment"], req["version"]
        layout = json.loads(LAYOUT.read_text())
        running_version = json.loads(Path("/usr/share/boxd/release.json").read_text()).get("version", "")
        pending = install(req, layout, Path("/proc/cmdline").read_text(), running_version)
    except (InstallError, OSError, ValueError, KeyError) as e:
        _say(f"the update to {version or '?'} is not installed: {e}")
        _write_atomic(FAILED, json.dumps({"deployment": deployment, "version": version, "reason": str(e)[:900],
                                          "ts": int(time.time())}).encode())
        REQUEST.unlink(missing_ok=True)
        return 1
    finally:
        with contextlib.suppress(OSError, UnboundLocalError):
            req["bundle"].unlink(missing_ok=True)
        PROGRESS.unlink(missing_ok=True)
    _boxd_dir(PENDING.parent)
    _write_atomic(PENDING, json.dumps(pending).encode())
    REQUEST.unlink(missing_ok=True)
    _say(f"{version} installed in slot {pending['slot'].upper()} ({pending['entry']}): rebooting on trial")
    return 0


if __name__ == "__main__":
    sys.exit(main())
