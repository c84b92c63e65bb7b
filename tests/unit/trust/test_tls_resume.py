"""TLS session resumption on the client side (`trust.tls.ResumingContext`), against a real TLS 1.3
server on loopback (Python's ssl; the broker's side: tests/integration/test_reconnect_cost.py)."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.pki import Pki
from trust import tls


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    p = Pki(tmp_path_factory.mktemp("pki"))
    p.init()
    return p


@pytest.fixture(scope="module")
def server(pki: Pki) -> Iterator[int]:
    files = pki.issue_server("resume", ["localhost"])
    ctx = tls.server_context(files.cert, files.key)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with ctx.wrap_socket(conn, server_side=True) as s:
                    s.sendall(b"hello")  # after the handshake and the server's tickets
                    s.recv(1)
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()


def _connect(ctx: ssl.SSLContext, port: int, name: str = "localhost") -> ssl.SSLSocket:
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname=name)
    assert s.recv(5) == b"hello"
    return s


def _once(ctx: tls.ResumingContext, port: int) -> bool:
    """One connection; whether it resumed. Its session is remembered for the next."""
    with _connect(ctx, port) as s:
        ctx.remember(s)
        return bool(s.session_reused)


def test_a_reconnection_resumes_and_a_new_crl_makes_the_next_handshake_full(pki: Pki, server: int,
                                                                             tmp_path: Path) -> None:
    ctx = tls.client_context(pki.root_cert, resume=True)
    assert isinstance(ctx, tls.ResumingContext) and ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert _once(ctx, server) is False
    assert ctx.has_session
    assert _once(ctx, server) is True
    assert _once(ctx, server) is True  # with the ticket of the connection before
    crl = tmp_path / "crl.pem"
    crl.write_bytes(pki.crl.read_bytes())
    tls.add_crl(ctx, crl)  # the server's certificate must be checked against it: no resumption
    assert not ctx.has_session
    assert _once(ctx, server) is False
    assert _once(ctx, server) is True


def test_a_session_is_offered_only_to_the_server_name_it_came_from(pki: Pki, server: int) -> None:
    ctx = tls.client_context(pki.root_cert, resume=True)
    assert isinstance(ctx, tls.ResumingContext)
    _once(ctx, server)
    with pytest.raises(ssl.SSLCertVerificationError):  # another name: a full handshake, which checks it
        _connect(ctx, server, "127.0.0.1")
    assert _once(ctx, server) is True
