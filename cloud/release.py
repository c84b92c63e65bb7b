"""Building a Box software bundle from this source tree (`boxcloud release build`).

The bundle's format is `proto.release` (a manifest, then the files under ``payload/``); this
module writes one: the Python packages the Box's daemon runs (`PACKAGES`: every package of this
project that `boxd` imports, directly or not; `tests/unit/cloud/test_release.py` proves the list
is whole), with ``boxd/__init__.py``'s ``__version__`` set to the release's. Built
reproducibly: sorted names, fixed times, owner 0, modes 0644/0755, no ``__pycache__``.
A Box unpacks it with `ota.bundle`; the cloud never imports the Box's side.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import tarfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from boxkit.files import create_new, temp_path
from cloud.errors import CloudError
from proto import names
from proto.errors import ManifestError
from proto.release import MANIFEST, PAYLOAD, VERSION_FILE, Manifest, check_path, first_manifest

# What the daemon runs from a release (it imports nothing else of this project).
PACKAGES = ("boxd", "boxconfig", "boxkit", "drivers", "ota", "proto", "trust")
_VERSION_LINE = re.compile(r'^__version__ = "[^"]*"$', re.M)  # a search, line by line


class ReleaseError(CloudError):
    """A bundle cannot be built (bad version or hardware, not a source tree); the message says why."""


def _source_files(root: Path) -> Iterable[tuple[str, Path]]:
    for package in PACKAGES:
        base = root / package
        if not (base / "__init__.py").is_file():
            raise ReleaseError(f"{base} is not a Python package: cannot build a bundle from {root}")
        for p in sorted(base.rglob("*")):
            rel = p.relative_to(root).as_posix()
            if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith((".pyc", ".pyo")):
                yield rel, p


def _set_version(text: str, version: str) -> str:
    if not _VERSION_LINE.search(text):
        raise ReleaseError('boxd/__init__.py has no line __version__ = "..." to set the version in')
    return _VERSION_LINE.sub(f'__version__ = "{version}"', text, count=1)


def build(source_root: Path, out_dir: Path, version: str, hardware: list[str],
          *, replace: dict[str, bytes] | None = None) -> Path:
    """Build ``boxd-<version>.tar.gz`` in `out_dir` from the packages under `source_root`.

    `replace` substitutes file contents (relative path -> bytes): for tests that need a broken release.

    Raises:
        ReleaseError: bad version or hardware, or `source_root` is not a boxd source tree.
    """
    if not names.VERSION.fullmatch(version):
        raise ReleaseError(f"version must look like 1.2.3, not {version!r}")
    if not hardware or not all(names.HARDWARE.fullmatch(h) for h in hardware):
        raise ReleaseError(f"hardware ids: a-z, 0-9 and '-', 1 to 32 characters, not {hardware!r}")
    contents: dict[str, bytes] = {rel: p.read_bytes() for rel, p in _source_files(source_root)}
    contents[VERSION_FILE] = _set_version(contents[VERSION_FILE].decode(), version).encode()
    for rel, data in (replace or {}).items():
        try:
            contents[check_path(rel)] = data
        except ManifestError as e:
            raise ReleaseError(str(e)) from None
    manifest = Manifest(version, tuple(hardware), {rel: hashlib.sha256(data).hexdigest()
                                                   for rel, data in sorted(contents.items())})
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"boxd-{version}.tar.gz"
    tmp = temp_path(out)
    with os.fdopen(create_new(tmp), "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, MANIFEST, manifest.to_json())
        dirs = sorted({str(PurePosixPath(rel).parent) for rel in contents})
        for d in dirs:
            info = tarfile.TarInfo(f"{PAYLOAD}/{d}")
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for rel in sorted(contents):
            _add(tar, f"{PAYLOAD}/{rel}", contents[rel])
    tmp.replace(out)
    return out


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def read_manifest(path: Path) -> Manifest:
    """The manifest of the bundle at `path` (what `release publish` signs it as).

    Raises:
        ReleaseError: unreadable, not a bundle, or a bad manifest.
    """
    try:
        with tarfile.open(path, "r:gz") as tar:
            return first_manifest(tar)
    except ManifestError as e:
        raise ReleaseError(str(e)) from None
    except (OSError, tarfile.TarError, EOFError, gzip.BadGzipFile) as e:
        raise ReleaseError(f"{path.name} is not a readable bundle: {e}") from None
