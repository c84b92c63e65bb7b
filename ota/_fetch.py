"""The Box's HTTPS fetcher for python-tuf's ngclient (used by `ota.client`), on requests.

`BoxFetcher` implements `tuf.ngclient.FetcherInterface` (python-tuf 7 ships a `RequestsFetcher`,
deprecated, and a `Urllib3Fetcher`; neither takes a TLS context, a byte cap or an abort, so this is
our own) over `trust.https`: one session whose connections trust the platform CA only and present
the Box's certificate (the CRL checked), a hard cap on bytes per request (announced or sent), and
sockets that `interrupt` shuts down from another thread. `_Guard` wraps any fetcher: it honours an
abort event before each request and chunk and counts the target's progress; `_interrupting` runs a
watcher that interrupts a blocked read or handshake when the abort comes. Failures of the link are
`LinkError` (worth another try); every other failure keeps python-tuf's exception types.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import requests
import urllib3
from tuf.api import exceptions
from tuf.ngclient.fetcher import FetcherInterface

from trust import https, tls
from trust.identity import Identity

TIMEOUT_S = 30.0
MAX_BYTES = 256 * 1024 * 1024  # hard cap per request, whatever TUF allows (a bundle is far smaller)
CHUNK = 64 * 1024
PROGRESS_STEPS = 20  # progress is reported about every 5 %
_POLL_S = 0.1  # how often the abort watcher looks at the download's end
Progress = Callable[[int, int], None]
_LINK_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, OSError)


class CapExceededError(exceptions.DownloadLengthMismatchError):
    """The server sent more than the Box reads in one request (`MAX_BYTES`)."""


class LinkError(exceptions.DownloadError):
    """The link failed (refused, reset, timed out, TLS cut, body cut short): worth another try."""


class _AbortError(exceptions.DownloadError):
    """Raised through ngclient when the abort event is set; turned into `OtaAbortedError`."""


def _glitch(e: BaseException) -> bool:
    """Whether a network exception is a passing fault of the link (a TLS refusal is not)."""
    return https.is_glitch(e)


def _link_error(url: str, e: BaseException) -> exceptions.DownloadError:
    kind = LinkError if _glitch(e) else exceptions.DownloadError
    return kind(f"{url}: {https.root_cause(e) or type(e).__name__}")


class BoxFetcher(FetcherInterface):
    """HTTPS GETs with the Box's client certificate; at most `max_bytes` read per request."""

    def __init__(self, ident: Identity, *, timeout: float = TIMEOUT_S, max_bytes: int = MAX_BYTES) -> None:
        self._sockets = https.Sockets()
        ctx = tls.client_context(ident.ca_file, ident.cert_file, ident.key_file, crl_file=ident.crl_file)
        self._session = https.session(ctx, self._sockets)
        self._timeout, self._max = timeout, max_bytes

    def interrupt(self) -> None:
        """Shut down the connections (call from any thread): a read blocked on one ends now."""
        self._sockets.interrupt()

    def _fetch(self, url: str) -> Iterator[bytes]:
        u = urlsplit(url)
        if u.scheme != "https" or not u.hostname:
            raise exceptions.DownloadError(f"only https URLs are fetched, not {url!r}")
        try:
            resp = self._session.get(url, timeout=self._timeout, stream=True, allow_redirects=False)
        except _LINK_ERRORS as e:
            raise _link_error(url, e) from e
        try:
            if resp.status_code != 200:
                detail = resp.raw.read(512, decode_content=False).decode(errors="replace")
                raise exceptions.DownloadHTTPError(f"{url}: HTTP {resp.status_code} {detail}", resp.status_code)
            declared = resp.headers.get("Content-Length")
            length = int(declared) if declared is not None and declared.isdigit() else None
            if length is not None and length > self._max:
                raise CapExceededError(f"{url}: {declared} bytes announced, at most {self._max} are read")
        except _LINK_ERRORS as e:
            resp.close()
            raise _link_error(url, e) from e
        except BaseException:
            resp.close()
            raise
        return self._chunks(resp, url, length)

    def _chunks(self, resp: requests.Response, url: str, length: int | None) -> Iterator[bytes]:
        total = 0
        try:
            for data in https.chunks(resp, CHUNK, self._max):
                total += len(data)
                yield data
        except https.CapExceededError:
            raise CapExceededError(f"{url}: more than {self._max} bytes") from None
        except _LINK_ERRORS as e:
            raise _link_error(url, e) from e
        finally:
            resp.close()
        if length is not None and total < length:
            raise LinkError(f"{url}: cut short after {total} of {length} bytes")


class _Guard(FetcherInterface):
    """Wraps the fetcher: looks at the abort event before each request and chunk, counts the target's bytes."""

    def __init__(self, inner: FetcherInterface, abort: threading.Event) -> None:
        self._inner, self.abort = inner, abort
        self.progress: Progress | None = None
        self.total = 0

    def _stop_if_aborted(self, url: str) -> None:
        if self.abort.is_set():
            raise _AbortError(f"stopped while fetching {url}")

    def _fetch(self, url: str) -> Iterator[bytes]:
        self._stop_if_aborted(url)
        try:
            chunks = self._inner.fetch(url)
        except exceptions.DownloadError:
            self._stop_if_aborted(url)  # an interrupted request is an abort, not a glitch
            raise
        return self._pass(chunks, url)

    def _pass(self, chunks: Iterator[bytes], url: str) -> Iterator[bytes]:
        done, step = 0, max(1, self.total // PROGRESS_STEPS)
        mark = step
        try:
            for chunk in chunks:
                self._stop_if_aborted(url)
                done += len(chunk)
                if self.progress is not None and mark <= done < self.total:
                    self.progress(done, self.total)
                    mark = (done // step + 1) * step
                yield chunk
        except _AbortError:
            raise
        except exceptions.DownloadError:
            self._stop_if_aborted(url)
            raise
        except _LINK_ERRORS as e:  # a foreign fetcher's broken stream
            self._stop_if_aborted(url)
            raise _link_error(url, e) from e
        self._stop_if_aborted(url)


@contextlib.contextmanager
def _interrupting(abort: threading.Event | None, fetcher: FetcherInterface) -> Iterator[None]:
    """While the body runs, shut down `fetcher`'s connections as soon as `abort` is set (blocked reads end)."""
    if abort is None or not isinstance(fetcher, BoxFetcher):
        yield
        return
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if abort.wait(_POLL_S):
                fetcher.interrupt()  # again each poll: a connection opened meanwhile is shut down too
                done.wait(_POLL_S)

    watcher = threading.Thread(target=watch, name="ota-abort-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
