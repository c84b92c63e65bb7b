"""The cloud's HTTPS server: an ASGI app (FastAPI) over uvicorn's HTTP/1.1 protocol, with limits.

Why not `uvicorn.Server` as it is (0.54.0, read in its source): it has no connection cap at
accept (`limit_concurrency` answers 503 only once a request is complete: a client that never
completes one holds its connection for ever), no deadline for receiving a request
(`timeout_keep_alive` applies between requests; a client trickling a byte every few seconds is
never closed), a TLS handshake timeout of asyncio's 60 s, and it does not give the application
the verified client certificate (the ASGI TLS extension is an open pull request). So this module
keeps uvicorn's protocol (`HttpToolsProtocol`: llhttp, Node.js's C parser, through httptools) and
its `Config`, and replaces the server around them:

- its own accept loop: at most `MAX_CONNECTIONS` connections at once (beyond, it stops accepting:
  the kernel's bounded backlog holds the rest) and `MAX_PER_SOURCE` per client address (beyond,
  closed at once); the TLS handshake must finish within `HANDSHAKE_S`;
- a deadline per request: the request line, headers and body must have arrived `REQUEST_S` after
  the handshake (or after the previous response), else the connection is closed; a connection
  lives at most `LIFETIME_S` (a download included);
- a request's line and headers are at most `MAX_HEAD` bytes (llhttp has no such limit; h11, which
  this server used before, had one): beyond, a 431 and the connection closed;
- the verified client certificate (ssl's `getpeercert()` dict, {} when none was presented) in
  `scope["extensions"]["tls"]["client_cert_dict"]`, as uvicorn's pending TLS extension names it;
- no log line per connection or malformed request (uvicorn's warnings go to a logger at ERROR).

Everything runs in one event loop (uvloop: libuv's loop and its TLS transport, in C) in a thread of
its own: slow or idle clients cost a small protocol object each, never a thread. httptools and
uvloop are uvicorn's own "standard" choices; with pure-Python h11 and asyncio's loop, the parsing,
the loop and the TLS records took ~40 % of the CPU of an API request (docs/performance.md). The
constructor does no I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvloop
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

log = logging.getLogger("boxcloud.https")

# Each TLS connection costs ~270 KB (uvloop's SSL protocol has asyncio's 256 KiB read buffer): 128 at most
MAX_CONNECTIONS = 128
MAX_PER_SOURCE = 32
HANDSHAKE_S = 5.0
REQUEST_S = 10.0
LIFETIME_S = 1800.0
BACKLOG = 128
MAX_HEAD = 16 * 1024

Scope = MutableMapping[str, Any]
Asgi = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]

_quiet = logging.getLogger("boxcloud.https.protocol")
_quiet.setLevel(logging.ERROR)  # "Invalid HTTP request received." would be a line per hostile request


class _Protocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with a deadline per request, a bound on its head, and the client
    certificate in the scope."""

    def __init__(self, config: Config, server_state: ServerState, closed: asyncio.Future[None]) -> None:
        super().__init__(config, server_state, {})
        self.logger = _quiet
        self._closed = closed
        self._deadline: asyncio.TimerHandle | None = None
        self._lifetime: asyncio.TimerHandle | None = None
        self._in_head, self._head = True, 0  # in a request's line and headers; their bytes so far
        self._read, self._ended_in_read = 0, False  # this read's size; whether a request ended in it

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        peer = transport.get_extra_info("peercert") or {}
        self.app = _with_client_cert(self.app, peer)
        self._arm()
        self._lifetime = self.loop.call_later(LIFETIME_S, self._expire, "its lifetime is over")

    def data_received(self, data: bytes) -> None:
        self._read, self._ended_in_read = len(data), False
        if self._in_head:
            self._head += len(data)
        super().data_received(data)
        if self._in_head and self._head > MAX_HEAD and not self.transport.is_closing():
            self._refuse_head()  # what the parser holds is bounded: MAX_HEAD and one read

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # The parser tells where a request begins, not at which byte of the read. With no request
        # ended earlier in this read, it began at its start: the whole read is its head so far (a
        # head that arrives in one read is counted, not forgotten). After a pipelined request's
        # end, its line and headers are counted as the parser hands them over, below.
        self._in_head, self._head = True, 0 if self._ended_in_read else self._read

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if self._ended_in_read:
            self._head += len(url) + 16  # the method, the version and the line's end

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        if self._ended_in_read:
            self._head += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        self._in_head, self._head = False, 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._ended_in_read = True
        if self._deadline is not None:
            self._deadline.cancel()  # the whole request is in: the answer may take its time
            self._deadline = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # a next request on the connection has its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        for timer in (self._deadline, self._lifetime):
            if timer is not None:
                timer.cancel()
        if not self._closed.done():
            self._closed.set_result(None)

    def _refuse_head(self) -> None:
        body = f"a request's line and headers are at most {MAX_HEAD} bytes".encode()
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; "
                             b"charset=utf-8\r\nconnection: close\r\ncontent-length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)
        self.transport.close()

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(REQUEST_S, self._expire, "the request did not arrive in time")

    def _expire(self, why: str) -> None:
        log.debug("closing a connection from %s: %s", self.client, why)
        self.transport.abort()


def _with_client_cert(app: Asgi, peer: dict[str, Any]) -> Asgi:
    async def with_cert(scope: Scope, receive: Callable[[], Awaitable[Any]],
                        send: Callable[[Any], Awaitable[None]]) -> None:
        scope.setdefault("extensions", {})["tls"] = {"client_cert_dict": peer}
        await app(scope, receive, send)
    return with_cert


class HttpsServer:
    """An ASGI app served over TLS on (bind, port) in a thread. The constructor does no I/O."""

    def __init__(self, app: Asgi, ctx: ssl.SSLContext, bind: str, port: int) -> None:
        self._config = Config(app, http=_Protocol, ws="none", lifespan="off", proxy_headers=False,
                              server_header=False, date_header=True, access_log=False, log_config=None,
                              timeout_keep_alive=5)
        self._ctx, self._addr = ctx, (bind, port)
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._main: asyncio.Task[None] | None = None
        self._ready = threading.Event()
        self.connections = 0  # open now (for tests and benchmarks)
        self._per_source: dict[str, int] = {}

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._sock is not None
        return int(self._sock.getsockname()[1])

    def start(self) -> None:
        """Bind, then serve in a thread."""
        self._config.load()
        family = socket.AF_INET6 if ":" in self._addr[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(self._addr)
        sock.listen(BACKLOG)
        sock.setblocking(False)
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name="https", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        """Stop accepting, close every connection, join the thread."""
        loop, main = self._loop, self._main
        if loop is not None and main is not None and not loop.is_closed():
            loop.call_soon_threadsafe(main.cancel)
        if self._thread is not None:
            self._thread.join(10)
        if self._sock is not None:
            self._sock.close()

    def _run(self) -> None:
        loop = uvloop.new_event_loop()
        self._loop = loop
        try:
            self._main = loop.create_task(self._serve())
            self._ready.set()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(self._main)
        finally:
            loop.close()

    async def _serve(self) -> None:
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        state = ServerState()
        slots = asyncio.Semaphore(MAX_CONNECTIONS)
        async with asyncio.TaskGroup() as tasks:
            try:
                while True:
                    await slots.acquire()  # at the cap, nothing more is accepted: the backlog waits
                    try:
                        conn, addr = await loop.sock_accept(self._sock)
                    except OSError as e:
                        slots.release()
                        log.warning("accept failed: %s", e)
                        await asyncio.sleep(0.1)
                        continue
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as asyncio's own servers do
                    source = str(addr[0])
                    if self._per_source.get(source, 0) >= MAX_PER_SOURCE:
                        slots.release()
                        conn.close()
                        continue
                    self._per_source[source] = self._per_source.get(source, 0) + 1
                    self.connections += 1
                    tasks.create_task(self._connection(conn, source, state, slots))
            finally:
                for proto in list(state.connections):
                    proto.shutdown()
                await asyncio.sleep(0)
                for task in list(state.tasks):
                    task.cancel()

    async def _connection(self, conn: socket.socket, source: str, state: ServerState,
                          slots: asyncio.Semaphore) -> None:
        """One connection, from the handshake to its end (this task holds its slot)."""
        loop = asyncio.get_running_loop()
        closed: asyncio.Future[None] = loop.create_future()
        try:
            await loop.connect_accepted_socket(
                lambda: _Protocol(self._config, state, closed), conn, ssl=self._ctx,
                ssl_handshake_timeout=HANDSHAKE_S)
            await closed
        except (OSError, ssl.SSLError, ConnectionError, TimeoutError) as e:
            log.debug("connection from %s ended: %s", source, e)
            conn.close()
        finally:
            slots.release()
            self.connections -= 1
            left = self._per_source.get(source, 1) - 1
            if left:
                self._per_source[source] = left
            else:
                self._per_source.pop(source, None)
