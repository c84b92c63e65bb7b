"""A software bundle's manifest: what a release says it is, built by the cloud, checked by a Box.

A bundle is a gzip-compressed tar whose first member is ``manifest.json``::

    {"format": 1, "name": "boxd", "version": "1.2.0", "hardware": ["generic-x86-64"],
     "files": {"boxd/__init__.py": "<sha256 hex>", ...}}

followed by the files it lists under ``payload/``. This module defines the manifest, checks one
(`parse_manifest`, with `names.VERSION` and `names.HARDWARE`) and the file names a bundle may
hold (`check_path`), and reads the manifest from a tar the caller opened (`first_manifest`).
Building is the cloud's (`cloud.release`); unpacking the Box's (`ota.bundle`).
"""

from __future__ import annotations

import json
import re
import tarfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Final

from proto import names
from proto.errors import ManifestError

FORMAT: Final = 1
MANIFEST: Final = "manifest.json"
PAYLOAD: Final = "payload"
VERSION_FILE: Final = "boxd/__init__.py"  # the one file a bundle must have; its __version__ is the release's
MAX_MANIFEST: Final = 1024 * 1024
MAX_FILES: Final = 5_000
MAX_UNPACKED: Final = 64 * 1024 * 1024
_PATH_PART: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")
_HEX64: Final = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Manifest:
    """What a bundle says it is."""

    version: str
    hardware: tuple[str, ...]
    files: dict[str, str]  # relative path -> sha256 hex

    def to_json(self) -> bytes:
        """The manifest's bytes, as written in a bundle (sorted keys: reproducible)."""
        return json.dumps({"format": FORMAT, "name": "boxd", "version": self.version,
                           "hardware": list(self.hardware), "files": self.files},
                          indent=1, sort_keys=True).encode()


def check_path(name: str) -> str:
    """A relative file name a bundle may hold, normalised.

    Raises:
        ManifestError: absolute, empty, with ``..`` or a part outside letters, digits, ``_.+-``.
    """
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or any(not _PATH_PART.fullmatch(p) for p in parts):
        raise ManifestError(f"{name!r} is not an acceptable file name in a bundle")
    return "/".join(parts)


def parse_manifest(raw: bytes) -> Manifest:
    """Validate a manifest's bytes.

    Raises:
        ManifestError: not JSON, or a field missing or of the wrong kind (the message names it).
    """
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ManifestError(f"{MANIFEST} is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"{MANIFEST} must be an object")
    if doc.get("format") != FORMAT or doc.get("name") != "boxd":
        raise ManifestError(f"{MANIFEST}: not a boxd bundle of format {FORMAT}")
    version, hardware, files = doc.get("version"), doc.get("hardware"), doc.get("files")
    if not names.VERSION.fullmatch(version):
        raise ManifestError(f"{MANIFEST}: version must look like 1.2.3, not {version!r}")
    if not isinstance(hardware, list) or not hardware or not all(names.HARDWARE.fullmatch(h) for h in hardware):
        raise ManifestError(f"{MANIFEST}: hardware must be a list of ids (a-z, 0-9, -)")
    if not isinstance(files, dict) or not 0 < len(files) <= MAX_FILES:
        raise ManifestError(f"{MANIFEST}: files must map 1 to {MAX_FILES} paths to SHA-256 digests")
    checked: dict[str, str] = {}
    for name, digest in files.items():
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise ManifestError(f"{MANIFEST}: the digest of {name!r} is not a SHA-256 in hex")
        checked[check_path(name)] = digest
    if VERSION_FILE not in checked:
        raise ManifestError(f"{MANIFEST}: the bundle has no boxd package")
    return Manifest(str(version), tuple(hardware), checked)


def first_manifest(tar: tarfile.TarFile) -> Manifest:
    """The manifest of a bundle, from the tar the caller opened (its first member only is read).

    Raises:
        ManifestError: the first member is not a manifest, or not a valid one.
        tarfile.TarError, OSError, EOFError: the tar itself is unreadable (the caller's to say).
    """
    first = tar.next()
    if first is None or first.name != MANIFEST or not first.isfile() or first.size > MAX_MANIFEST:
        raise ManifestError(f"the first member must be {MANIFEST} (at most {MAX_MANIFEST} bytes)")
    f = tar.extractfile(first)
    assert f is not None
    return parse_manifest(f.read(MAX_MANIFEST + 1))
