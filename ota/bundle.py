"""A Box software bundle: what a release is, built by the cloud and unpacked by the Box.

A bundle is a gzip-compressed tar whose first member is ``manifest.json``::

    {"format": 1, "name": "boxd", "version": "1.2.0", "hardware": ["generic-x86-64"],
     "files": {"boxd/__init__.py": "<sha256 hex>", ...}}

followed by the files it lists under ``payload/`` (the Python packages the daemon runs:
``boxd``, ``drivers``, ``ota``), regular files and directories only. TUF has verified the
bundle as a whole (length, hash, signatures) before the Box opens it; `extract` still treats it
as untrusted: it refuses links, devices, absolute paths, ``..``, names not in the manifest,
more than `MAX_FILES` files or `MAX_UNPACKED` bytes, and checks every file's SHA-256 against
the manifest while writing it (a bundle that lies about its content, or a disk that corrupts
it, gives an error, never a half-installed release).

Built reproducibly: sorted names, fixed times, owner 0, modes 0644/0755, no ``__pycache__``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import re
import shutil
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO
from zlib import error as zlib_error  # a corrupt gzip stream

from boxd.errors import BoxdError
from boxd.files import create_new, fsync_dir, temp_path

FORMAT = 1
MANIFEST = "manifest.json"
PAYLOAD = "payload"
PACKAGES = ("boxd", "drivers", "ota")
MAX_MANIFEST = 1024 * 1024
MAX_FILES = 5_000
MAX_UNPACKED = 64 * 1024 * 1024
_VERSION_LINE = re.compile(r'^__version__ = "[^"]*"$', re.M)  # a search, line by line
_VERSION = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+(?:-[0-9A-Za-z.-]{1,32})?")
_HARDWARE = re.compile(r"[a-z0-9-]{1,32}")
_PATH_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class BundleError(BoxdError):
    """A bundle that cannot be built, read or unpacked; the message says why."""


@dataclass(frozen=True)
class Manifest:
    """What a bundle says it is."""

    version: str
    hardware: tuple[str, ...]
    files: dict[str, str]  # relative path -> sha256 hex

    def to_json(self) -> bytes:
        return json.dumps({"format": FORMAT, "name": "boxd", "version": self.version,
                           "hardware": list(self.hardware), "files": self.files},
                          indent=1, sort_keys=True).encode()


def hardware_id() -> str:
    """This machine's hardware id: $BOXD_HARDWARE, else /etc/boxd/hardware, else generic-<machine>."""
    value = os.environ.get("BOXD_HARDWARE", "").strip()
    if not value:
        try:
            value = Path("/etc/boxd/hardware").read_text().split("\n", 1)[0].strip()
        except OSError:
            value = ""
    if not value:
        value = "generic-" + platform.machine().lower().replace("_", "-")
    return value


def _check_path(name: str) -> str:
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or any(not _PATH_PART.fullmatch(p) for p in parts):
        raise BundleError(f"{name!r} is not an acceptable file name in a bundle")
    return "/".join(parts)


def parse_manifest(raw: bytes) -> Manifest:
    """Validate a manifest's bytes.

    Raises:
        BundleError: not JSON, or a field missing or of the wrong kind (the message names it).
    """
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise BundleError(f"{MANIFEST} is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise BundleError(f"{MANIFEST} must be an object")
    if doc.get("format") != FORMAT or doc.get("name") != "boxd":
        raise BundleError(f"{MANIFEST}: not a boxd bundle of format {FORMAT}")
    version, hardware, files = doc.get("version"), doc.get("hardware"), doc.get("files")
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise BundleError(f"{MANIFEST}: version must look like 1.2.3, not {version!r}")
    if (not isinstance(hardware, list) or not hardware
            or not all(isinstance(h, str) and _HARDWARE.fullmatch(h) for h in hardware)):
        raise BundleError(f"{MANIFEST}: hardware must be a list of ids (a-z, 0-9, -)")
    if not isinstance(files, dict) or not 0 < len(files) <= MAX_FILES:
        raise BundleError(f"{MANIFEST}: files must map 1 to {MAX_FILES} paths to SHA-256 digests")
    checked: dict[str, str] = {}
    for name, digest in files.items():
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise BundleError(f"{MANIFEST}: the digest of {name!r} is not a SHA-256 in hex")
        checked[_check_path(name)] = digest
    if "boxd/__init__.py" not in checked:
        raise BundleError(f"{MANIFEST}: the bundle has no boxd package")
    return Manifest(version, tuple(hardware), checked)


def _first_manifest(tar: tarfile.TarFile) -> Manifest:
    first = tar.next()
    if first is None or first.name != MANIFEST or not first.isfile() or first.size > MAX_MANIFEST:
        raise BundleError(f"the first member must be {MANIFEST} (at most {MAX_MANIFEST} bytes)")
    f = tar.extractfile(first)
    assert f is not None
    return parse_manifest(f.read(MAX_MANIFEST + 1))


def read_manifest(path: Path) -> Manifest:
    """The manifest of the bundle at `path` (the first member only is read).

    Raises:
        BundleError: unreadable, not a bundle, or a bad manifest.
    """
    try:
        with tarfile.open(path, "r:gz") as tar:
            return _first_manifest(tar)
    except (OSError, tarfile.TarError, EOFError, gzip.BadGzipFile) as e:
        raise BundleError(f"{path.name} is not a readable bundle: {e}") from None


def _source_files(root: Path) -> Iterable[tuple[str, Path]]:
    for package in PACKAGES:
        base = root / package
        if not (base / "__init__.py").is_file():
            raise BundleError(f"{base} is not a Python package: cannot build a bundle from {root}")
        for p in sorted(base.rglob("*")):
            rel = p.relative_to(root).as_posix()
            if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith((".pyc", ".pyo")):
                yield rel, p


def _set_version(text: str, version: str) -> str:
    if not _VERSION_LINE.search(text):
        raise BundleError('boxd/__init__.py has no line __version__ = "..." to set the version in')
    return _VERSION_LINE.sub(f'__version__ = "{version}"', text, count=1)


def build(source_root: Path, out_dir: Path, version: str, hardware: list[str],
          *, replace: dict[str, bytes] | None = None) -> Path:
    """Build ``boxd-<version>.tar.gz`` in `out_dir` from the packages under `source_root`.

    `replace` substitutes file contents (relative path -> bytes): for tests that need a broken release.

    Raises:
        BundleError: bad version or hardware, or `source_root` is not a boxd source tree.
    """
    if not _VERSION.fullmatch(version):
        raise BundleError(f"version must look like 1.2.3, not {version!r}")
    if not hardware or not all(_HARDWARE.fullmatch(h) for h in hardware):
        raise BundleError(f"hardware ids: a-z, 0-9 and '-', 1 to 32 characters, not {hardware!r}")
    contents: dict[str, bytes] = {rel: p.read_bytes() for rel, p in _source_files(source_root)}
    contents["boxd/__init__.py"] = _set_version(contents["boxd/__init__.py"].decode(), version).encode()
    for rel, data in (replace or {}).items():
        contents[_check_path(rel)] = data
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


def extract(bundle: Path, dest: Path) -> Manifest:
    """Unpack `bundle` into the new directory `dest` (files under it, without ``payload/``),
    checking every member against the manifest; on any error `dest` is removed.

    Raises:
        BundleError: what is wrong with the bundle, or the disk.
    """
    if dest.exists():
        raise BundleError(f"{dest} exists already")
    dest.mkdir(parents=True, mode=0o755)
    try:
        manifest = _extract(bundle, dest)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return manifest


def _extract(bundle: Path, dest: Path) -> Manifest:
    seen: set[str] = set()
    total = 0
    try:
        with tarfile.open(bundle, "r:gz") as tar:
            manifest = _first_manifest(tar)
            while (member := tar.next()) is not None:
                if not member.name.startswith(f"{PAYLOAD}/"):
                    raise BundleError(f"member {member.name!r} is outside {PAYLOAD}/")
                rel = _check_path(member.name[len(PAYLOAD) + 1:])
                if member.isdir():
                    (dest / rel).mkdir(parents=True, exist_ok=True, mode=0o755)
                    continue
                if not member.isfile():
                    raise BundleError(f"member {member.name!r} is not a regular file or directory (links refused)")
                if rel not in manifest.files:
                    raise BundleError(f"{rel} is in the bundle but not in its manifest")
                if rel in seen:
                    raise BundleError(f"{rel} appears twice in the bundle")
                total += member.size
                if total > MAX_UNPACKED:
                    raise BundleError(f"the bundle unpacks to more than {MAX_UNPACKED} bytes")
                src = tar.extractfile(member)
                assert src is not None
                _write_checked(src, dest / rel, manifest.files[rel], rel)
                seen.add(rel)
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib_error) as e:
        raise BundleError(f"the bundle is damaged: {e}") from None
    except OSError as e:
        raise BundleError(f"cannot unpack the bundle into {dest}: {e}") from None
    missing = sorted(set(manifest.files) - seen)
    if missing:
        raise BundleError(f"{len(missing)} file(s) of the manifest are missing from the bundle, e.g. {missing[0]}")
    for d in sorted({(dest / rel).parent for rel in seen} | {dest}, key=lambda p: len(p.parts), reverse=True):
        fsync_dir(d)
    (dest / MANIFEST).write_bytes(manifest.to_json())
    fsync_dir(dest)
    return manifest


def _write_checked(src: IO[bytes], path: Path, digest: str, rel: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    h = hashlib.sha256()
    with path.open("xb") as out:
        while chunk := src.read(65536):
            h.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    path.chmod(0o644)
    if h.hexdigest() != digest:
        raise BundleError(f"{rel}: its SHA-256 does not match the manifest (the bundle lies or the disk corrupts)")


def verify(release_dir: Path) -> Manifest:
    """Check an unpacked release against its manifest (every file present, same SHA-256).

    Raises:
        BundleError: what is missing or different.
    """
    try:
        manifest = parse_manifest((release_dir / MANIFEST).read_bytes())
    except OSError as e:
        raise BundleError(f"{release_dir} has no readable {MANIFEST}: {e.strerror or e}") from None
    for rel, digest in manifest.files.items():
        try:
            data = (release_dir / rel).read_bytes()
        except OSError as e:
            raise BundleError(f"{release_dir.name}: {rel} is unreadable: {e.strerror or e}") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise BundleError(f"{release_dir.name}: {rel} differs from the manifest")
    return manifest

