"""The Box's HTTPS on requests (`trust.https`) against a real TLS server on loopback: the pinned CA
and nothing else is trusted, the environment is ignored, answers are capped, and an interrupt ends
a read that blocks."""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import urllib3

from cloud.pki import Pki
from tests.support.wait import wait_for
from trust import https, tls


class _Handler(http.server.BaseHTTPRequestHandler):
    release = threading.Event()

    def do_GET(self) -> None:
        body = {"/ok": b'{"ok": true}', "/big": b"x" * (80 * 1024), "/stall": b"y" * 4096}[self.path]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) * (100 if self.path == "/stall" else 1)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if self.path == "/stall":  # then nothing: the client's read blocks
            self.release.wait(30)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="module")
def pkis(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pki, Pki]:
    real, other = Pki(tmp_path_factory.mktemp("real")), Pki(tmp_path_factory.mktemp("other"))
    real.init()
    other.init()
    return real, other


@pytest.fixture(scope="module")
def server(pkis: tuple[Pki, Pki]) -> Iterator[str]:
    real, _ = pkis
    files = real.issue_server("test-https", ["localhost", "127.0.0.1"])
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.socket = tls.server_context(files.cert, files.key).wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://localhost:{httpd.server_address[1]}"
    finally:
        _Handler.release.set()
        httpd.shutdown()


def test_the_pinned_ca_and_only_it_is_trusted(pkis: tuple[Pki, Pki], server: str) -> None:
    real, other = pkis
    ctx = tls.client_context(real.root_cert)
    with https.session(ctx) as s, s.get(f"{server}/ok", timeout=10) as r:
        assert r.status_code == 200 and r.json() == {"ok": True}
    assert len(ctx.get_ca_certs()) == 1  # requests added no CA bundle of its own (certifi) to the context
    with https.session(tls.client_context(other.root_cert)) as s, pytest.raises(requests.exceptions.SSLError) as e:
        s.get(f"{server}/ok", timeout=10)
    cause = https.root_cause(e.value)
    assert isinstance(cause, ssl.SSLCertVerificationError)
    assert "does not vouch for" in tls.explain(cause, server) and not https.is_glitch(e.value)


def test_the_environment_is_ignored(pkis: tuple[Pki, Pki], server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real, other = pkis
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # a proxy that is not there
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(real.root_cert))  # would trust the server
    with https.session(tls.client_context(real.root_cert)) as s, s.get(f"{server}/ok", timeout=10) as r:
        assert r.status_code == 200  # straight to the server, not through the proxy
    with https.session(tls.client_context(other.root_cert)) as s, pytest.raises(requests.exceptions.SSLError):
        s.get(f"{server}/ok", timeout=10)  # the environment's CA bundle is not trusted either


def test_an_answer_over_the_cap_is_refused(pkis: tuple[Pki, Pki], server: str) -> None:
    with https.session(tls.client_context(pkis[0].root_cert)) as s:
        with s.get(f"{server}/big", timeout=10, stream=True) as r, pytest.raises(https.CapExceededError):
            https.read_capped(r, 64 * 1024)
        with s.get(f"{server}/big", timeout=10, stream=True) as r:
            assert len(https.read_capped(r, 80 * 1024)) == 80 * 1024


def test_an_interrupt_ends_a_read_that_blocks(pkis: tuple[Pki, Pki], server: str) -> None:
    sockets = https.Sockets()
    outcome: list[BaseException | bytes] = []

    def fetch() -> None:
        with https.session(tls.client_context(pkis[0].root_cert), sockets) as s:
            try:
                with s.get(f"{server}/stall", timeout=600, stream=True) as r:  # only the interrupt ends it in time
                    outcome.append(https.read_capped(r, 10 * 1024 * 1024))
            except (requests.RequestException, OSError, urllib3.exceptions.HTTPError) as e:
                outcome.append(e)

    reader = threading.Thread(target=fetch, daemon=True)
    reader.start()
    wait_for(lambda: len(sockets) == 1, 10, "the connection to be open")  # the server then sends nothing more
    sockets.interrupt()
    reader.join(15)
    assert not reader.is_alive(), "the interrupt did not end the blocked read"
    assert len(outcome) == 1 and isinstance(outcome[0], BaseException) and https.is_glitch(outcome[0])
    assert len(sockets) == 0  # the session closed its connection: nothing holds it


def test_the_client_needs_a_verified_context(tmp_path: Path) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with pytest.raises(AssertionError):
        https.session(ctx)
