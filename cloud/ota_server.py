"""Serving the TUF repository (issue 7) on the cloud's HTTPS endpoint (`cloud.endpoint`).

`GET /tuf/metadata/<file>` and `GET /tuf/targets/<file>` answer files of the repository
directory (see `cloud.tufrepo`), only to a client that presented the current (or, during a
rotation, the pending) certificate of an enrolled Box in the TLS handshake (401 without one,
403 with one that is not a Box's or no longer valid). File names are plain names
(`[A-Za-z0-9._-]`, no path), so nothing outside the repository can be named; a missing file is
404. Files are streamed with a Content-Length. This module reads files; the server does the rest.
"""

from __future__ import annotations

import re
from pathlib import Path

PREFIX = "/tuf/"
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}")  # no leading dot: no "." or ".."
_DIRS = ("metadata", "targets")


def resolve(repo_dir: Path, url_path: str) -> Path | None:
    """The file `url_path` (under PREFIX) names in `repo_dir`, or None when it names none."""
    parts = url_path[len(PREFIX):].split("/")
    if len(parts) != 2 or parts[0] not in _DIRS or not _NAME.fullmatch(parts[1]):
        return None
    path = repo_dir / parts[0] / parts[1]
    return path if path.is_file() else None
