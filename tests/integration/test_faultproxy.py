"""Each fault of the FaultProxy does what it says, against a small echo server on loopback.

Timing is never asserted as a figure: only conditions (an echo has not come back yet, then it has, in order)
with deadlines. The only lower bounds used are the proxy's own guarantees (it never delivers early).
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support.faultproxy import Direction, FaultProxy
from tests.support.tcpproxy import CountingProxy
from tests.support.wait import wait_for


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.server.accepted += 1  # type: ignore[attr-defined]
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except OSError:
            pass


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    accepted = 0


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="echo", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", echo.server_address[1], seed=1) as p:
        yield p


def _connect(proxy: FaultProxy, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def _echoes(sock: socket.socket, msg: bytes) -> bool:
    sock.sendall(msg)
    return _recv_exactly(sock, len(msg)) == msg


# ---- the proxy -------------------------------------------------------------------------------------------------
def test_without_faults_it_forwards_and_counts_like_the_counting_proxy(echo: EchoServer) -> None:
    with CountingProxy("127.0.0.1", echo.server_address[1]) as p, _connect(p) as s:
        assert _echoes(s, b"x" * 100_000)
        assert p.connections == 1
        wait_for(lambda: p.upstream_bytes == p.downstream_bytes == 100_000, 10, "both counts")


def test_latency_delays_every_chunk_and_jitter_never_reorders(proxy: FaultProxy) -> None:
    with _connect(proxy) as s:
        assert _echoes(s, b"warm-up")
        proxy.set_latency(0.3, jitter=0.2)
        t0 = time.monotonic()
        msgs = [f"<{i:03d}>".encode() for i in range(30)]
        for m in msgs:
            s.sendall(m)
        back = _recv_exactly(s, sum(map(len, msgs)))
        assert time.monotonic() - t0 >= 0.6  # 0.3 s each way, at least: the proxy never delivers early
        assert back == b"".join(msgs)  # in order, whatever the jitter
        proxy.set_latency(0.0)
        assert _echoes(s, b"fast again")


def test_reset_all_gives_the_client_a_connection_reset(proxy: FaultProxy) -> None:
    with _connect(proxy) as s:
        assert _echoes(s, b"hello")
        assert proxy.reset_all() == 1
        with pytest.raises(ConnectionResetError):
            s.recv(10)
    assert proxy.active == 0
    with _connect(proxy) as s2:  # new connections are fine
        assert _echoes(s2, b"again")


def test_close_all_closes_gracefully(proxy: FaultProxy) -> None:
    with _connect(proxy) as s:
        assert _echoes(s, b"hello")
        assert proxy.close_all() == 1
        assert s.recv(10) == b""  # EOF, no error


def test_a_stall_holds_data_while_the_connection_stays_open(proxy: FaultProxy) -> None:
    with _connect(proxy) as s:
        assert _echoes(s, b"before")
        proxy.stall(Direction.DOWN)  # the server still gets what the client sends
        s.sendall(b"held")
        wait_for(lambda: proxy.upstream_bytes == len(b"before") + len(b"held"), 10, "the upstream bytes")
        s.settimeout(0.5)
        with pytest.raises(TimeoutError):
            s.recv(10)
        assert proxy.active == 1
        proxy.stall()  # both ways now
        s.sendall(b"-more")
        s.settimeout(0.3)
        with pytest.raises(TimeoutError):
            s.recv(10)
        proxy.resume()
        s.settimeout(10)
        assert _recv_exactly(s, len(b"held-more")) == b"held-more"  # nothing was lost, the connection lived


def test_the_bandwidth_cap_paces_a_transfer(proxy: FaultProxy) -> None:
    payload = bytes(range(256)) * 800  # 200 kB
    proxy.set_bandwidth(50_000, Direction.DOWN)
    got: list[bytes] = []
    done = threading.Event()
    with _connect(proxy, timeout=20) as s:

        def transfer() -> None:
            sender = threading.Thread(target=s.sendall, args=(payload,), daemon=True)
            sender.start()
            got.append(_recv_exactly(s, len(payload)))
            sender.join(10)
            done.set()

        threading.Thread(target=transfer, daemon=True).start()
        assert not done.wait(1.0), "200 kB went through a 50 kB/s cap within 1 s"
        assert done.wait(20), "the capped transfer did not complete"
    assert got == [payload]


def test_refuse_turns_new_connections_away_and_keeps_open_ones(proxy: FaultProxy) -> None:
    with _connect(proxy) as s:
        assert _echoes(s, b"in")  # accepted by the proxy, not just queued in the listen backlog
        proxy.refuse()
        with pytest.raises(ConnectionRefusedError):
            _connect(proxy)
        assert _echoes(s, b"still here")
        proxy.refuse(False)
        with _connect(proxy) as s2:
            assert _echoes(s2, b"welcome back")


def test_a_blackhole_accepts_but_never_forwards(proxy: FaultProxy, echo: EchoServer) -> None:
    with _connect(proxy) as open_before:
        assert _echoes(open_before, b"hi")
        proxy.blackhole()
        with _connect(proxy) as s:  # the connect succeeds...
            s.sendall(b"into the void")
            open_before.sendall(b"also lost")
            wait_for(lambda: proxy.dropped_bytes == len(b"into the void") + len(b"also lost"), 10, "the drops")
            s.settimeout(0.3)
            with pytest.raises(TimeoutError):
                s.recv(10)
            assert echo.accepted == 1  # ...but the target never saw it
            assert proxy.upstream_bytes == len(b"hi")
        proxy.heal()
        with _connect(proxy) as s3:
            assert _echoes(s3, b"healed")
