"""A Box software bundle, on the Box: its manifest read, the bundle unpacked and checked, a release verified.

The format is `proto.release` (built by the cloud, `cloud.release`): a gzip-compressed tar whose
first member is ``manifest.json``, then the files it lists under ``payload/`` (the Python packages
the daemon runs), regular files and directories only. TUF has verified the bundle as a whole
(length, hash, signatures) before the Box opens it; `extract` still treats it as untrusted: it
refuses links, devices, absolute paths, ``..``, names not in the manifest, more than `MAX_FILES`
files or `MAX_UNPACKED` bytes, and checks every file's SHA-256 against the manifest while writing
it (a bundle that lies about its content, or a disk that corrupts it, gives an error, never a
half-installed release).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
from pathlib import Path
from typing import IO
from zlib import error as zlib_error  # a corrupt gzip stream

from boxkit.files import fsync_dir
from ota.errors import BundleError
from proto.errors import ManifestError
from proto.release import MANIFEST, MAX_UNPACKED, PAYLOAD, Manifest, check_path, first_manifest, parse_manifest

__all__ = ["BundleError", "Manifest", "extract", "read_manifest", "verify"]


def _check_path(name: str) -> str:
    try:
        return check_path(name)
    except ManifestError as e:
        raise BundleError(str(e)) from None


def _first_manifest(tar: tarfile.TarFile) -> Manifest:
    try:
        return first_manifest(tar)
    except ManifestError as e:
        raise BundleError(str(e)) from None


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
    except ManifestError as e:
        raise BundleError(str(e)) from None
    for rel, digest in manifest.files.items():
        try:
            data = (release_dir / rel).read_bytes()
        except OSError as e:
            raise BundleError(f"{release_dir.name}: {rel} is unreadable: {e.strerror or e}") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise BundleError(f"{release_dir.name}: {rel} differs from the manifest")
    return manifest

