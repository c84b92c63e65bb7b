"""Serving the TUF repository (issue 7) on the enrollment endpoint's HTTPS server.

`GET /tuf/metadata/<file>` and `GET /tuf/targets/<file>` answer files of the repository
directory (see `ota.repository`), only to a client that presented a valid Box certificate
in the TLS handshake (401 without one, 403 with a certificate that is not a Box's). File
names are plain names (`[A-Za-z0-9._-]`, no path), so nothing outside the repository can
be named; a missing file is 404. Files are streamed with a Content-Length.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from cloud.errors import EnrollmentError

log = logging.getLogger("boxcloud.ota")

PREFIX = "/tuf/"
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}")  # no leading dot: no "." or ".."
_DIRS = ("metadata", "targets")


class Handler(Protocol):
    """The parts of the HTTP request handler this module uses."""

    path: str
    wfile: io.BufferedIOBase

    def send_response(self, code: int, message: str | None = None) -> None: ...
    def send_header(self, keyword: str, value: str) -> None: ...
    def end_headers(self) -> None: ...
    def _answer(self, status: int, body: dict[str, object]) -> None: ...


def resolve(repo_dir: Path, url_path: str) -> Path | None:
    """The file `url_path` (under PREFIX) names in `repo_dir`, or None when it names none."""
    parts = url_path[len(PREFIX):].split("/")
    if len(parts) != 2 or parts[0] not in _DIRS or not _NAME.fullmatch(parts[1]):
        return None
    return repo_dir / parts[0] / parts[1]


def serve(handler: Handler, repo_dir: Path, peer: dict[str, object],
          identify: Callable[[dict[str, object]], tuple[str, int]]) -> None:
    """Answer a GET under PREFIX; `identify(peer)` returns the Box or raises EnrollmentError."""
    if not peer:
        handler._answer(401, {"error": "the update repository needs the Box's certificate in the TLS handshake"})
        return
    try:
        box_id, _serial = identify(peer)
    except EnrollmentError as e:
        handler._answer(e.status, {"error": str(e)})
        return
    path = resolve(repo_dir, handler.path)
    if path is None:
        handler._answer(404, {"error": "not found"})
        return
    try:
        f = path.open("rb")
    except OSError:
        handler._answer(404, {"error": "not found"})
        return
    with f:
        size = os.fstat(f.fileno()).st_size
        handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(size))
        handler.send_header("Connection", "close")
        handler.end_headers()
        try:
            shutil.copyfileobj(f, handler.wfile, 64 * 1024)
        except OSError as e:  # the Box hung up (it stops reading past the length TUF allows)
            log.debug("%s stopped reading %s: %s", box_id, handler.path, e)
            return
    log.debug("served %s to %s", handler.path, box_id)
