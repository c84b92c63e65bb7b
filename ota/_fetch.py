"""The Box's HTTPS fetcher for python-tuf's ngclient (used by `ota.client`): GETs with the Box's own
TLS identity and a hard cap on bytes per request; a guard that honours an abort event and counts
progress; a watcher that shuts a blocked connection down when the abort comes. Failures of the link
are `LinkError` (worth another try), everything else keeps python-tuf's exception types.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

from tuf.api import exceptions
from tuf.ngclient.fetcher import FetcherInterface

from boxd import tls
from boxd.identity import Identity

TIMEOUT_S = 30.0
MAX_BYTES = 256 * 1024 * 1024  # hard cap per request, whatever TUF allows (a bundle is far smaller)
CHUNK = 64 * 1024
PROGRESS_STEPS = 20  # progress is reported about every 5 %
_POLL_S = 0.1  # how often the abort watcher looks at the download's end
_TLS_GLITCHES = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)
Progress = Callable[[int, int], None]


class CapExceeded(exceptions.DownloadLengthMismatchError):
    """The server sent more than the Box reads in one request (`MAX_BYTES`)."""


class LinkError(exceptions.DownloadError):
    """The link failed (refused, reset, timed out, TLS cut, body cut short): worth another try."""


class _Abort(exceptions.DownloadError):
    """Raised through ngclient when the abort event is set; turned into `OtaAborted`."""


def _glitch(e: BaseException) -> bool:
    """Whether a network exception is a passing fault of the link (a TLS refusal is not)."""
    if isinstance(e, ssl.SSLError):
        return isinstance(e, _TLS_GLITCHES)
    return isinstance(e, OSError | http.client.HTTPException)


def _link_error(url: str, e: BaseException) -> exceptions.DownloadError:
    kind = LinkError if _glitch(e) else exceptions.DownloadError
    return kind(f"{url}: {e or type(e).__name__}")


class _Connection(http.client.HTTPSConnection):
    """An HTTPS connection that reports its TLS socket before the handshake (so that it can be shut down)."""

    def __init__(self, host: str, port: int, ctx: ssl.SSLContext, timeout: float,
                 on_socket: Callable[[socket.socket], None]) -> None:
        super().__init__(host, port, context=ctx, timeout=timeout)
        self.tls_ctx, self.on_socket = ctx, on_socket
        self.tls_sock: socket.socket | None = None

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)  # TCP only
        self.tls_sock = self.tls_ctx.wrap_socket(self.sock, server_hostname=self.host, do_handshake_on_connect=False)
        self.sock = self.tls_sock
        self.on_socket(self.tls_sock)
        self.tls_sock.do_handshake()


class BoxFetcher(FetcherInterface):
    """HTTPS GETs with the Box's client certificate; at most `max_bytes` read per request."""

    def __init__(self, ident: Identity, *, timeout: float = TIMEOUT_S, max_bytes: int = MAX_BYTES) -> None:
        self._ctx = tls.client_context(ident.ca_file, ident.cert_file, ident.key_file, crl_file=ident.crl_file)
        self._timeout, self._max = timeout, max_bytes
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()  # of the requests in flight

    def interrupt(self) -> None:
        """Shut down the connections in flight (call from any thread): a read blocked on one ends now."""
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the socket's own: leaves the TLS state alone

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.add(sock)

    def _close(self, conn: _Connection, resp: http.client.HTTPResponse | None = None) -> None:
        if conn.tls_sock is not None:
            with self._lock:
                self._socks.discard(conn.tls_sock)
        if resp is not None:
            resp.close()
        conn.close()

    def _fetch(self, url: str) -> Iterator[bytes]:
        u = urlsplit(url)
        if u.scheme != "https" or not u.hostname:
            raise exceptions.DownloadError(f"only https URLs are fetched, not {url!r}")
        conn = _Connection(u.hostname, u.port or 443, self._ctx, self._timeout, self._track)
        try:
            conn.request("GET", u.path + (f"?{u.query}" if u.query else ""))
            resp = conn.getresponse()
            if resp.status != 200:
                detail = resp.read(512).decode(errors="replace")
                raise exceptions.DownloadHTTPError(f"{url}: HTTP {resp.status} {detail}", resp.status)
            declared = resp.getheader("Content-Length")
            length = int(declared) if declared is not None and declared.isdigit() else None
            if length is not None and length > self._max:
                raise CapExceeded(f"{url}: {declared} bytes announced, at most {self._max} are read")
        except (OSError, http.client.HTTPException) as e:
            self._close(conn)
            raise _link_error(url, e) from e
        except BaseException:
            self._close(conn)
            raise
        return self._chunks(conn, resp, url, length)

    def _chunks(self, conn: _Connection, resp: http.client.HTTPResponse, url: str,
                length: int | None) -> Iterator[bytes]:
        total = 0
        try:
            while data := resp.read(CHUNK):
                total += len(data)
                if total > self._max:
                    raise CapExceeded(f"{url}: more than {self._max} bytes")
                yield data
        except (OSError, http.client.HTTPException) as e:
            raise _link_error(url, e) from e
        finally:
            self._close(conn, resp)
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
            raise _Abort(f"stopped while fetching {url}")

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
        except _Abort:
            raise
        except exceptions.DownloadError:
            self._stop_if_aborted(url)
            raise
        except (OSError, http.client.HTTPException) as e:  # a foreign fetcher's broken stream
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
