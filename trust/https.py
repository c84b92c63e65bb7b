"""HTTPS on `requests`, trusting exactly one TLS context (`trust.tls`): the Box's two HTTPS clients use it
(enrollment and renewal, `trust.enroll`; the TUF downloads, `ota._fetch`).

`session(ctx)` gives a `requests.Session` whose every connection goes through `ctx` (the
platform CA pinned, the Box's client certificate, the platform's CRL) by a transport adapter
(`PinnedAdapter`). `requests` would otherwise add its own CA bundle (certifi) to a verified
connection's context, take proxies, CA files and credentials from the environment, follow
redirects and ask for compressed answers: the adapter loads nothing into the context, and the
session ignores the environment, follows no redirect and asks for the bytes as they are.
Connections are kept open between requests (one TLS handshake for a TUF refresh and its
download). `Sockets` follows each connection's socket, so that another thread can shut every
connection down at once (`interrupt`): a read or handshake blocked on one ends there and then.
`read_capped` reads an answer's body up to a limit. `root_cause` finds the socket or TLS error
under an exception of requests or urllib3 (for `tls.explain` and for retry decisions).

The `requests` package costs the process that imports it about 10 MB: the resident daemon never
does (renewal runs as `python -m trust.enroll`, downloads as `python -m ota.client`).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPSConnection
from urllib3.connectionpool import HTTPSConnectionPool


class Sockets:
    """The sockets of a session's connections, for `interrupt` from any thread.

    While a connection is being made (TCP, then the TLS handshake) a duplicate of its socket is
    kept (the handshake replaces the socket object); once made, the TLS socket itself, weakly:
    nothing here keeps a connection open after its owners let it go.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connecting: dict[int, socket.socket] = {}
        self._open: weakref.WeakSet[socket.socket] = weakref.WeakSet()

    def connecting(self, sock: socket.socket) -> int:
        """A connection is being made on `sock`: keep a duplicate until `connected`; returns its key."""
        dup = sock.dup()
        with self._lock:
            self._connecting[dup.fileno()] = dup
        return dup.fileno()

    def connected(self, key: int, sock: socket.socket | None) -> None:
        """The connection is made (`sock`, its TLS socket) or failed (None)."""
        with self._lock:
            dup = self._connecting.pop(key, None)
            if sock is not None:
                self._open.add(sock)
        if dup is not None:
            dup.close()

    def interrupt(self) -> None:
        """Shut down every connection now (a blocked read, write or TLS handshake on one ends)."""
        with self._lock:
            socks = [*self._connecting.values(), *self._open]
        for sock in socks:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the socket's own: leaves the TLS state alone

    def __len__(self) -> int:
        """Connections being made or open."""
        with self._lock:
            return len(self._connecting) + sum(1 for s in self._open if s.fileno() != -1)


def _tracked_pool(sockets: Sockets) -> type[HTTPSConnectionPool]:
    """An HTTPS pool class whose connections register their sockets with `sockets`."""

    class Connection(HTTPSConnection):
        _key: int | None = None

        def _new_conn(self) -> socket.socket:
            sock = super()._new_conn()
            self._key = sockets.connecting(sock)  # before the handshake: an abort ends a blocked one too
            return sock

        def connect(self) -> None:
            made = False
            try:
                super().connect()
                made = True
            finally:
                if self._key is not None:
                    sockets.connected(self._key, self.sock if made else None)
                    self._key = None

    class Pool(HTTPSConnectionPool):
        ConnectionCls = Connection

    return Pool


class PinnedAdapter(HTTPAdapter):
    """A transport adapter that trusts `ctx` and nothing else, and retries nothing (callers decide)."""

    def __init__(self, ctx: ssl.SSLContext, sockets: Sockets | None = None) -> None:
        assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname  # never an unverified context
        self._ctx, self._sockets = ctx, sockets
        super().__init__(pool_connections=1, pool_maxsize=1, max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        """The pool manager, with `ctx` for every connection (and the tracked pool class)."""
        super().init_poolmanager(connections, maxsize, block, ssl_context=self._ctx, **pool_kwargs)
        if self._sockets is not None:
            self.poolmanager.pool_classes_by_scheme = {"https": _tracked_pool(self._sockets)}

    def build_connection_pool_key_attributes(self, request: requests.PreparedRequest, verify: Any,
                                             cert: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """The pool's key: the host, and `ctx` (never a CA file or a client certificate of requests')."""
        host_params, _ = super().build_connection_pool_key_attributes(request, True, None)
        return host_params, {"ssl_context": self._ctx, "cert_reqs": "CERT_REQUIRED"}

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """Load nothing: `ctx` holds the trust anchors (requests would add its CA bundle here)."""
        conn.cert_reqs = "CERT_REQUIRED"
        conn.ca_certs = None
        conn.ca_cert_dir = None


def session(ctx: ssl.SSLContext, sockets: Sockets | None = None) -> requests.Session:
    """A session whose HTTPS goes through `ctx` only; plain HTTP is refused (no adapter for it)."""
    s = requests.Session()
    s.trust_env = False  # no proxy, CA bundle or .netrc from the environment
    s.max_redirects = 0
    s.headers["Accept-Encoding"] = "identity"  # the bytes as they are (TUF hashes them; no inflation bombs)
    s.adapters.clear()
    s.mount("https://", PinnedAdapter(ctx, sockets))
    return s


class CapExceededError(Exception):
    """An answer's body is longer than the caller reads."""


def chunks(resp: requests.Response, size: int, limit: int) -> Iterator[bytes]:
    """The body of a streamed answer in chunks, raw (no decoding); `CapExceededError` past `limit` bytes."""
    total = 0
    for data in resp.raw.stream(size, decode_content=False):
        total += len(data)
        if total > limit:
            raise CapExceededError(f"more than {limit} bytes")
        yield data


def read_capped(resp: requests.Response, limit: int) -> bytes:
    """The whole body of a streamed answer, at most `limit` bytes.

    Raises:
        CapExceededError: it is longer.
    """
    return b"".join(chunks(resp, 64 * 1024, limit))


def root_cause(e: BaseException) -> BaseException:
    """The socket or TLS error under an exception of requests or urllib3 (or `e` itself)."""
    seen: set[int] = set()
    todo: list[BaseException] = [e]
    while todo:
        x = todo.pop(0)
        if id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, ssl.SSLError | OSError) and not isinstance(x, requests.RequestException):
            return x
        reason = getattr(x, "reason", None)
        nested = [a for a in (*x.args, reason, x.__cause__, x.__context__) if isinstance(a, BaseException)]
        todo.extend(nested)
    return e


def is_glitch(e: BaseException) -> bool:
    """Whether a failure of the link is passing (refused, reset, timed out, cut short), not a TLS refusal."""
    cause = root_cause(e)
    if isinstance(cause, ssl.SSLError):
        return isinstance(cause, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLSyscallError)
    if isinstance(cause, OSError):
        return True
    return isinstance(e, requests.ConnectionError | requests.Timeout | requests.exceptions.ChunkedEncodingError
                      | urllib3.exceptions.ProtocolError | urllib3.exceptions.TimeoutError)
