"""The Box side of OTA (issue 7): python-tuf's ngclient over HTTPS (requests, `ota._fetch`) with the
Box's own TLS identity.

Files under the state directory::

    ota/root.json        the trusted root the Box starts from: shipped in the Box image (a copy
                         of the repository's 1.root.json, put there when the image is built);
                         the client walks the root chain from it to the newest root
    ota/metadata/        the metadata the client trusts now (ngclient's metadata dir)
    ota/downloads/       verified downloads; ``.<name>.part`` while one is being written

The Box downloads only the target a deployment names, after TUF has verified it (signatures,
versions, expiry, length, hashes), and refuses a target whose custom ``version`` is not greater
than the running one (a downgrade instruction) or whose ``hardware`` list lacks the Box's
hardware id. A download is written to a temporary file, then renamed: a download cut by a power
loss leaves a temporary file that the next call removes before it starts.

A flaky link is retried: a refused, reset or timed-out connection, a TLS connection cut, HTTP 5xx,
a slow retrieval or a body cut short is tried again (``attempts`` in all, exponential backoff with
full jitter, capped at `BACKOFF_CAP_S`); each try starts over (metadata refresh, then the whole
target, which TUF verifies as a whole). A verification refusal or an HTTP 4xx answer is final at
once. An ``abort`` event, set from another thread, stops the work before the next request, between
chunks, during a backoff wait, and (with `BoxFetcher`, whose sockets a watcher thread shuts down) in a
blocked read or TLS handshake: `OtaAbortedError`, nothing left. ``progress`` gets the target's bytes.
This module does not install anything, nor decide when to update (the caller's job).
"""

from __future__ import annotations

import logging
import os
import random
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from tuf.api import exceptions
from tuf.api.metadata import TargetFile
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface

from boxkit.files import fsync_dir, write_atomic
from ota._fetch import (
    BoxFetcher,
    CapExceededError,
    LinkError,
    Progress,
    _AbortError,
    _glitch,
    _Guard,
    _interrupting,
)
from ota.errors import OtaAbortedError, OtaError
from proto import names
from trust import identity
from trust.errors import IdentityError
from trust.identity import Identity

PART_SUFFIX = ".part"
ATTEMPTS = 5
BACKOFF_S = 2.0
BACKOFF_CAP_S = 60.0
_rng = random.SystemRandom()
log = logging.getLogger("ota.client")
T = TypeVar("T")


__all__ = ["ATTEMPTS", "BACKOFF_S", "BoxFetcher", "OtaAbortedError", "OtaError", "Release", "check_for_update",
           "download", "main"]


@dataclass(frozen=True)
class Release:
    """A target the repository offers, verified by TUF, that fits this Box."""

    name: str
    version: str
    length: int
    sha256: str
    hardware: tuple[str, ...]


# What each failure means, most specific first (subclasses before their bases).
_MEANINGS: tuple[tuple[type[Exception], str], ...] = (
    (CapExceededError, "the server sent more than the Box reads in one request (endless data)"),
    (exceptions.DownloadLengthMismatchError,
     "the server sent more data than the signed metadata allows (endless data)"),
    (exceptions.LengthOrHashMismatchError,
     "a file does not match the length or hash in the signed metadata (tampered or mixed versions)"),
    (exceptions.UnsignedMetadataError,
     "metadata is not signed by enough trusted keys (forged, or from a malicious mirror)"),
    (exceptions.BadVersionNumberError,
     "metadata is older than what the Box already trusts, or versions do not match (rollback or mix-and-match)"),
    (exceptions.ExpiredMetadataError, "metadata has expired (the repository is frozen or the Box's clock is wrong)"),
    (exceptions.SlowRetrievalError, "the download was too slow"),
    (LinkError, "the link to the repository failed (refused, reset, timed out or cut short)"),
    (exceptions.DownloadError, "the repository could not be reached or the download failed"),
    (exceptions.RepositoryError, "the repository's metadata is invalid"),
)


def _explain(e: Exception) -> str:
    """A TUF exception's meaning in words."""
    if isinstance(e, exceptions.DownloadHTTPError):
        what = f"the repository answered HTTP {e.status_code}"
    else:
        what = next((text for kind, text in _MEANINGS if isinstance(e, kind)), "the update failed")
    cause = f" ({e.__cause__})" if type(e) is exceptions.DownloadError and e.__cause__ is not None else ""
    return f"{what}: {e}{cause}"


def _transient(e: Exception) -> bool:
    """Whether a failure is a glitch of the link worth another try (never a verification refusal or a 4xx)."""
    if isinstance(e, LinkError | exceptions.SlowRetrievalError):
        return True
    if isinstance(e, exceptions.DownloadHTTPError):
        return e.status_code >= 500
    if type(e) is exceptions.DownloadError:  # a foreign fetcher's failure, wrapped by FetcherInterface.fetch
        return e.__cause__ is not None and _glitch(e.__cause__)
    return False


def backoff_delay(attempt: int, backoff_s: float, u: float) -> float:
    """Seconds to wait after failed `attempt` (1, 2...): full jitter, ``u`` uniform in [0, 1)."""
    return u * min(BACKOFF_CAP_S, backoff_s * 2.0 ** min(attempt - 1, 30))


def _retrying(work: Callable[[], T], abort: threading.Event, attempts: int, backoff_s: float, what: str) -> T:
    """Run `work` up to `attempts` times while it fails with a glitch; OtaError when it gives up or is refused."""
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, not {attempts}")
    last: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            if abort.is_set():
                raise _AbortError(f"before {what}")
            return work()
        except _AbortError as e:
            raise OtaAbortedError(f"aborted: {what} was stopped ({e})") from None
        except (exceptions.RepositoryError, exceptions.DownloadError) as e:
            if not _transient(e):
                raise OtaError(_explain(e)) from e
            last = e
        if attempt < attempts:
            delay = backoff_delay(attempt, backoff_s, _rng.random())
            log.warning("%s: attempt %d of %d failed, next in %.1f s: %s", what, attempt, attempts, delay,
                        _explain(last))
            if abort.wait(delay):
                raise OtaAbortedError(f"aborted: {what} was stopped while waiting to try again") from None
    assert last is not None
    raise OtaError(f"{what}: gave up after {attempts} attempts; the last failure: {_explain(last)}") from last


def _dirs(state_dir: Path) -> tuple[Path, Path, Path]:
    base = state_dir / "ota"
    return base / "root.json", base / "metadata", base / "downloads"


def _clean_partial(downloads: Path) -> None:
    """Remove what a download cut by a power loss left behind."""
    for p in downloads.glob(f".*{PART_SUFFIX}"):
        p.unlink(missing_ok=True)


def _prepare(state_dir: Path, fetcher: FetcherInterface | None, ident: Identity | None) -> FetcherInterface:
    """Create the directories, install the bootstrap root, clean leftovers; the fetcher to use."""
    bootstrap, meta, downloads = _dirs(state_dir)
    meta.mkdir(parents=True, exist_ok=True)
    downloads.mkdir(parents=True, exist_ok=True)
    _clean_partial(downloads)
    if not (meta / "root.json").exists():
        if not bootstrap.exists():
            raise OtaError(f"no trusted root: {bootstrap} (shipped in the Box image) is missing")
        write_atomic(meta / "root.json", bootstrap.read_bytes())
    if fetcher is not None:
        return fetcher
    try:
        return BoxFetcher(ident if ident is not None else identity.load(state_dir))
    except (IdentityError, OSError, ssl.SSLError) as e:
        raise OtaError(f"cannot use the Box's TLS identity: {e}") from e


def _find(state_dir: Path, base_url: str, fetcher: FetcherInterface,
          target_name: str) -> tuple[Updater, TargetFile | None]:
    """A fresh Updater (from the trusted metadata on disk), refreshed, and the named target's info."""
    _, meta, downloads = _dirs(state_dir)
    base = base_url.rstrip("/")
    updater = Updater(str(meta), f"{base}/tuf/metadata/", str(downloads), f"{base}/tuf/targets/", fetcher=fetcher,
                      bootstrap=None)
    updater.refresh()
    return updater, updater.get_targetinfo(target_name)


def _check(info: TargetFile, current_version: str, hardware: str) -> Release:
    custom = info.custom if isinstance(info.custom, dict) else {}
    version, hw = custom.get("version"), custom.get("hardware")
    if not isinstance(version, str) or not isinstance(hw, list):
        raise OtaError(f"target {info.path} has no version and hardware in its metadata")
    try:
        newer = names.version_greater(version, current_version)
    except ValueError as e:
        raise OtaError(f"target {info.path}: {e}") from e
    if not newer:
        raise OtaError(f"refused: target {info.path} is version {version}, not newer than the running "
                       f"{current_version} (a downgrade instruction)")
    if hardware not in hw:
        raise OtaError(f"refused: target {info.path} is for hardware {hw}, this Box is {hardware!r}")
    return Release(info.path, version, info.length, info.hashes.get("sha256", ""), tuple(hw))


def check_for_update(state_dir: Path, base_url: str, current_version: str, hardware: str, target_name: str,
                     *, ident: Identity | None = None, fetcher: FetcherInterface | None = None,
                     abort: threading.Event | None = None, attempts: int = ATTEMPTS,
                     backoff_s: float = BACKOFF_S) -> Release | None:
    """Refresh the metadata through TUF and return the named target if it fits; None if not offered.

    Args:
        abort: when set (from another thread), the work stops before its next request or chunk.
        attempts: tries in all while the link fails (see the module docstring); backoff_s the first backoff.

    Raises:
        OtaAbortedError: `abort` was set.
        OtaError: TUF refused the metadata, the target is a downgrade or for other hardware, or the
            repository stayed unreachable for `attempts` tries.
    """
    inner = _prepare(state_dir, fetcher, ident)
    guard = _Guard(inner, abort if abort is not None else threading.Event())
    with _interrupting(abort, inner):
        _, info = _retrying(lambda: _find(state_dir, base_url, guard, target_name), guard.abort, attempts,
                            backoff_s, "the update check")
    return None if info is None else _check(info, current_version, hardware)


def download(state_dir: Path, base_url: str, current_version: str, hardware: str, target_name: str,
             *, ident: Identity | None = None, fetcher: FetcherInterface | None = None,
             abort: threading.Event | None = None, progress: Progress | None = None,
             attempts: int = ATTEMPTS, backoff_s: float = BACKOFF_S) -> tuple[Release, Path]:
    """Download the named target, verified by TUF, into ``ota/downloads/<name>``.

    Args:
        abort: when set (from another thread), the download stops at once: `OtaAbortedError`.
        progress: called with (bytes so far, the target's length in the signed metadata) about every
            5 %, and once with (length, length) when the file is verified and in place; a retried
            download starts over from 0.
        attempts: tries in all while the link fails (see the module docstring); backoff_s the first backoff.

    Raises:
        OtaAbortedError: `abort` was set (nothing is left in the download directory).
        OtaError: as `check_for_update`, the target is not offered, or its download failed
            verification or kept failing (nothing is left in the download directory then).
    """
    if not names.TARGET.fullmatch(target_name):
        raise OtaError(f"{target_name!r} is not a plain file name")
    inner = _prepare(state_dir, fetcher, ident)
    guard = _Guard(inner, abort if abort is not None else threading.Event())
    downloads = _dirs(state_dir)[2]

    def attempt() -> tuple[Release, Path]:
        updater, info = _find(state_dir, base_url, guard, target_name)
        if info is None:
            raise OtaError(f"the repository offers no target named {target_name!r}")
        release = _check(info, current_version, hardware)
        final, part = downloads / info.path, downloads / f".{info.path}{PART_SUFFIX}"
        guard.total, guard.progress = info.length, progress
        try:
            updater.download_target(info, str(part))
            with part.open("rb+") as f:
                os.fsync(f.fileno())
            part.replace(final)
            fsync_dir(downloads)
        except OSError as e:
            raise OtaError(f"cannot write the download {final}: {e}") from e
        finally:
            guard.progress = None
            part.unlink(missing_ok=True)  # gone after the rename; a failed try leaves nothing
        return release, final

    with _interrupting(abort, inner):
        release, final = _retrying(attempt, guard.abort, attempts, backoff_s, f"the download of {target_name}")
    if progress is not None:
        progress(release.length, release.length)
    return release, final


# -- as a process of its own (what the daemon runs: `boxd.updates`) -------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m ota.client download ...``: one download, reported as JSON lines on stdout.

    Lines: ``{"progress": [done, total]}``, then ``{"release": {...}, "path": str}`` (exit 0),
    ``{"error": str}`` (exit 1) or ``{"aborted": str}`` (exit 3, after SIGTERM). The daemon runs
    downloads this way so that python-tuf and its crypto never live in the daemon's memory, and
    whatever happens in them cannot take the daemon down.
    """
    import argparse
    import json
    import signal
    import sys

    p = argparse.ArgumentParser(prog="python -m ota.client", description="Download one OTA target through TUF.")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("download")
    d.add_argument("--state-dir", type=Path, required=True)
    d.add_argument("--base-url", required=True)
    d.add_argument("--running", required=True, help="the version the Box runs")
    d.add_argument("--hardware", required=True)
    d.add_argument("--target", required=True)
    d.add_argument("--attempts", type=int, default=ATTEMPTS)
    d.add_argument("--backoff-s", type=float, default=BACKOFF_S)
    args = p.parse_args(argv)

    def say(doc: dict[str, object]) -> None:
        sys.stdout.write(json.dumps(doc) + "\n")
        sys.stdout.flush()

    abort = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: abort.set())
    # python-tuf stages a target in a temporary file before it checks and copies it: on the Box's
    # data partition beside the download, not in /tmp (a small tmpfs on the Box image: an image
    # release would not fit). Unlinked at once: nothing is left behind.
    import tempfile
    tempfile.tempdir = str(_dirs(args.state_dir)[2])
    try:
        release, path = download(args.state_dir, args.base_url, args.running, args.hardware, args.target,
                                 abort=abort, progress=lambda done, total: say({"progress": [done, total]}),
                                 attempts=max(1, args.attempts), backoff_s=max(0.0, args.backoff_s))
    except OtaAbortedError as e:
        say({"aborted": str(e)})
        return 3
    except OtaError as e:
        say({"error": str(e)})
        return 1
    say({"release": {"name": release.name, "version": release.version, "length": release.length,
                     "sha256": release.sha256, "hardware": list(release.hardware)}, "path": str(path)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
