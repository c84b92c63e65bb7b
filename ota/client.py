"""The Box side of OTA (issue 7): python-tuf's ngclient over HTTPS with the Box's own TLS identity.

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
"""

from __future__ import annotations

import http.client
import os
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tuf.api import exceptions
from tuf.api.metadata import TargetFile
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface

from boxd import identity, tls
from boxd.errors import BoxdError
from boxd.files import fsync_dir, write_atomic
from boxd.identity import Identity
from ota.repository import RepositoryError, version_greater

TIMEOUT_S = 30.0
MAX_BYTES = 256 * 1024 * 1024  # hard cap per request, whatever TUF allows (a bundle is far smaller)
CHUNK = 64 * 1024
PART_SUFFIX = ".part"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


class OtaError(BoxdError):
    """An update refused or failed; the message says why in words."""


class CapExceeded(exceptions.DownloadLengthMismatchError):
    """The server sent more than the Box reads in one request (`MAX_BYTES`)."""


@dataclass(frozen=True)
class Release:
    """A target the repository offers, verified by TUF, that fits this Box."""

    name: str
    version: str
    length: int
    sha256: str
    hardware: tuple[str, ...]


class BoxFetcher(FetcherInterface):
    """HTTPS GETs with the Box's client certificate; at most `max_bytes` read per request."""

    def __init__(self, ident: Identity, *, timeout: float = TIMEOUT_S, max_bytes: int = MAX_BYTES) -> None:
        self._ctx = tls.client_context(ident.ca_file, ident.cert_file, ident.key_file)
        self._timeout, self._max = timeout, max_bytes

    def _fetch(self, url: str) -> Iterator[bytes]:
        u = urlsplit(url)
        if u.scheme != "https" or not u.hostname:
            raise exceptions.DownloadError(f"only https URLs are fetched, not {url!r}")
        conn = http.client.HTTPSConnection(u.hostname, u.port or 443, context=self._ctx, timeout=self._timeout)
        try:
            conn.request("GET", u.path + (f"?{u.query}" if u.query else ""))
            resp = conn.getresponse()
            if resp.status != 200:
                detail = resp.read(512).decode(errors="replace")
                raise exceptions.DownloadHTTPError(f"{url}: HTTP {resp.status} {detail}", resp.status)
            declared = resp.getheader("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > self._max:
                raise CapExceeded(f"{url}: {declared} bytes announced, at most {self._max} are read")
        except BaseException:
            conn.close()
            raise
        return self._chunks(conn, resp, url)

    def _chunks(self, conn: http.client.HTTPSConnection, resp: http.client.HTTPResponse, url: str) -> Iterator[bytes]:
        try:
            total = 0
            while True:
                data = resp.read(CHUNK)
                if not data:
                    return
                total += len(data)
                if total > self._max:
                    raise CapExceeded(f"{url}: more than {self._max} bytes")
                yield data
        finally:
            conn.close()


# What each failure means, most specific first (subclasses before their bases).
_MEANINGS: tuple[tuple[type[Exception], str], ...] = (
    (CapExceeded, "the server sent more than the Box reads in one request (endless data)"),
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
    (exceptions.DownloadError, "the repository could not be reached or the download failed"),
    (exceptions.RepositoryError, "the repository's metadata is invalid"),
)


def _explain(e: Exception) -> str:
    """A TUF exception's meaning in words."""
    if isinstance(e, exceptions.DownloadHTTPError):
        what = f"the repository answered HTTP {e.status_code}"
    else:
        what = next((text for kind, text in _MEANINGS if isinstance(e, kind)), "the update failed")
    return f"{what}: {e}"


def _dirs(state_dir: Path) -> tuple[Path, Path, Path]:
    base = state_dir / "ota"
    return base / "root.json", base / "metadata", base / "downloads"


def _clean_partial(downloads: Path) -> None:
    """Remove what a download cut by a power loss left behind."""
    for p in downloads.glob(f".*{PART_SUFFIX}"):
        p.unlink(missing_ok=True)


def _updater(state_dir: Path, base_url: str, fetcher: FetcherInterface | None, ident: Identity | None) -> Updater:
    bootstrap, meta, downloads = _dirs(state_dir)
    meta.mkdir(parents=True, exist_ok=True)
    downloads.mkdir(parents=True, exist_ok=True)
    _clean_partial(downloads)
    if not (meta / "root.json").exists():
        if not bootstrap.exists():
            raise OtaError(f"no trusted root: {bootstrap} (shipped in the Box image) is missing")
        write_atomic(meta / "root.json", bootstrap.read_bytes())
    if fetcher is None:
        try:
            fetcher = BoxFetcher(ident if ident is not None else identity.load(state_dir))
        except (BoxdError, OSError, ssl.SSLError) as e:
            raise OtaError(f"cannot use the Box's TLS identity: {e}") from e
    base = base_url.rstrip("/")
    return Updater(str(meta), f"{base}/tuf/metadata/", str(downloads), f"{base}/tuf/targets/", fetcher=fetcher,
                   bootstrap=None)


def _check(info: TargetFile, current_version: str, hardware: str) -> Release:
    custom = info.custom if isinstance(info.custom, dict) else {}
    version, hw = custom.get("version"), custom.get("hardware")
    if not isinstance(version, str) or not isinstance(hw, list):
        raise OtaError(f"target {info.path} has no version and hardware in its metadata")
    try:
        newer = version_greater(version, current_version)
    except RepositoryError as e:
        raise OtaError(f"target {info.path}: {e}") from e
    if not newer:
        raise OtaError(f"refused: target {info.path} is version {version}, not newer than the running "
                       f"{current_version} (a downgrade instruction)")
    if hardware not in hw:
        raise OtaError(f"refused: target {info.path} is for hardware {hw}, this Box is {hardware!r}")
    return Release(info.path, version, info.length, info.hashes.get("sha256", ""), tuple(hw))


def _find(updater: Updater, target_name: str) -> TargetFile | None:
    try:
        updater.refresh()
        return updater.get_targetinfo(target_name)
    except (exceptions.RepositoryError, exceptions.DownloadError) as e:
        raise OtaError(_explain(e)) from e


def check_for_update(state_dir: Path, base_url: str, current_version: str, hardware: str, target_name: str,
                     *, ident: Identity | None = None, fetcher: FetcherInterface | None = None) -> Release | None:
    """Refresh the metadata through TUF and return the named target if it fits; None if not offered.

    Raises:
        OtaError: TUF refused the metadata, or the target is a downgrade or for other hardware.
    """
    info = _find(_updater(state_dir, base_url, fetcher, ident), target_name)
    return None if info is None else _check(info, current_version, hardware)


def download(state_dir: Path, base_url: str, current_version: str, hardware: str, target_name: str,
             *, ident: Identity | None = None, fetcher: FetcherInterface | None = None) -> tuple[Release, Path]:
    """Download the named target, verified by TUF, into ``ota/downloads/<name>``.

    Raises:
        OtaError: as `check_for_update`, the target is not offered, or its download failed
            verification (nothing is left in the download directory then).
    """
    if not _NAME.match(target_name):
        raise OtaError(f"{target_name!r} is not a plain file name")
    updater = _updater(state_dir, base_url, fetcher, ident)
    info = _find(updater, target_name)
    if info is None:
        raise OtaError(f"the repository offers no target named {target_name!r}")
    release = _check(info, current_version, hardware)
    downloads = _dirs(state_dir)[2]
    final = downloads / info.path
    part = downloads / f".{info.path}{PART_SUFFIX}"
    try:
        updater.download_target(info, str(part))
        with part.open("rb+") as f:
            os.fsync(f.fileno())
        part.replace(final)
        fsync_dir(downloads)
    except (exceptions.RepositoryError, exceptions.DownloadError) as e:
        part.unlink(missing_ok=True)
        raise OtaError(_explain(e)) from e
    except OSError as e:
        part.unlink(missing_ok=True)
        raise OtaError(f"cannot write the download {final}: {e}") from e
    return release, final
