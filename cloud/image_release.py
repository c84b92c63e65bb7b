"""Image releases: a Box image's root file system as a TUF target (`boxcloud release build-image`).

`image/build.sh` keeps the root file system it built as ``build/image/release/root.img`` (an ext4
image the size of a root slot, mostly empty). An image release is an uncompressed tar of two
members, in this order:

- ``manifest.json``: ``{"format": 1, "name": "box-image", "version", "hardware", "boot_tries",
  "root": {"size", "sha256"}}`` (size and SHA-256 of the uncompressed root image);
- ``root.img.gz``: the root image, gzip-compressed (the empty blocks cost next to nothing).

The Box's installer (image/scripts/install.py) reads it as a stream: the manifest first, then the
root image written to the other slot while it is hashed. TUF signs the bundle as a whole like a
software bundle (`cloud.tufrepo.publish_release`); what tells them apart is the format (a
software bundle is gzip-compressed, `proto.release`). `boot_tries` is how many boots the release
gets to prove itself before the boot loader falls back (the boot entry's counter, 1..5).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

from boxkit.files import create_new, temp_path
from cloud.release import ReleaseError
from proto import names

NAME = "box-image"
MAX_MANIFEST = 64 * 1024
CHUNK = 1 << 20


def build_image(root_img: Path, out_dir: Path, version: str, hardware: list[str], *, boot_tries: int = 3,
                level: int = 6) -> Path:
    """Build ``box-image-<version>.tar`` in `out_dir` from the root file system image `root_img`.

    Raises:
        ReleaseError: bad version, hardware or tries, or `root_img` unreadable.
    """
    if not names.VERSION.fullmatch(version):
        raise ReleaseError(f"version must look like 1.2.3, not {version!r}")
    if not hardware or not all(names.HARDWARE.fullmatch(h) for h in hardware):
        raise ReleaseError(f"hardware ids: a-z, 0-9 and '-', 1 to 32 characters, not {hardware!r}")
    if not 1 <= boot_tries <= 5:
        raise ReleaseError(f"boot tries must be 1..5, not {boot_tries}")
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{NAME}-{version}.tar"
    packed = temp_path(out_dir / "root.img.gz")
    h, size = hashlib.sha256(), 0
    try:
        with root_img.open("rb") as src, os.fdopen(create_new(packed), "wb") as raw, \
                gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=level, mtime=0) as gz:
            while chunk := src.read(CHUNK):
                h.update(chunk)
                size += len(chunk)
                gz.write(chunk)
        manifest = json.dumps({"format": 1, "name": NAME, "version": version, "hardware": list(hardware),
                               "boot_tries": boot_tries, "root": {"size": size, "sha256": h.hexdigest()}},
                              indent=1, sort_keys=True).encode()
        tmp = temp_path(out)
        with os.fdopen(create_new(tmp), "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo("manifest.json")
            info.size, info.mode, info.mtime = len(manifest), 0o644, 0
            tar.addfile(info, io.BytesIO(manifest))
            info = tarfile.TarInfo("root.img.gz")
            info.size, info.mode, info.mtime = packed.stat().st_size, 0o644, 0
            with packed.open("rb") as gzf:
                tar.addfile(info, gzf)
        tmp.replace(out)
    except OSError as e:
        raise ReleaseError(f"cannot build an image release from {root_img}: {e.strerror or e}") from None
    finally:
        packed.unlink(missing_ok=True)
    return out


def is_image_release(path: Path) -> bool:
    """True if `path` looks like an image release (a plain tar), not a software bundle (gzip)."""
    with path.open("rb") as f:
        return f.read(2) != b"\x1f\x8b"


def read_manifest(path: Path) -> tuple[str, list[str]]:
    """(version, hardware) of the image release at `path`, checked.

    Raises:
        ReleaseError: not an image release, or a bad manifest.
    """
    try:
        with tarfile.open(path, "r:") as tar:
            first = tar.next()
            if first is None or first.name != "manifest.json" or not first.isfile() or first.size > MAX_MANIFEST:
                raise ReleaseError(f"{path.name}: the first member is not manifest.json")
            f = tar.extractfile(first)
            assert f is not None
            doc = json.loads(f.read())
    except (OSError, tarfile.TarError, ValueError) as e:
        raise ReleaseError(f"{path.name} is not a readable image release: {e}") from None
    if not isinstance(doc, dict) or doc.get("name") != NAME or doc.get("format") != 1:
        raise ReleaseError(f"{path.name}: not an image release (format 1, name {NAME})")
    version, hardware = doc.get("version"), doc.get("hardware")
    if not isinstance(version, str) or not names.VERSION.fullmatch(version):
        raise ReleaseError(f"{path.name}: bad version {version!r}")
    if not isinstance(hardware, list) or not hardware or not all(
            isinstance(h, str) and names.HARDWARE.fullmatch(h) for h in hardware):
        raise ReleaseError(f"{path.name}: bad hardware list {hardware!r}")
    return version, hardware
