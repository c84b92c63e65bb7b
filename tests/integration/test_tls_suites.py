"""Issue 12, finding 6: the platform's TLS servers offer TLS 1.3 and TLS 1.2 with AEAD suites only
(no CBC, no SHA-1 MACs), on the real Mosquitto and the real HTTPS endpoint."""

from __future__ import annotations

import socket
import ssl

import pytest

from cloud.platform import Cloud
from trust import tls

CBC_SHA1 = "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES128-SHA:AES128-SHA:AES256-SHA"
CBC_SHA2 = "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384"
AEAD = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305"


def _handshake(cloud: Cloud, port: int, ciphers: str | None, version: ssl.TLSVersion) -> str:
    ctx = tls.client_context(cloud.pki.root_cert, cloud.pki.dir / "svc-admin.crt", cloud.pki.dir / "svc-admin.key")
    ctx.minimum_version = ctx.maximum_version = version
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    try:
        with socket.create_connection(("localhost", port), timeout=10) as s, \
                ctx.wrap_socket(s, server_hostname="localhost") as t:
            cipher = t.cipher()
            assert cipher is not None  # a finished handshake
            return cipher[0]
    except ssl.SSLError as e:
        return f"refused: {e.reason}"


@pytest.mark.parametrize("which", ["broker", "enroll"])
def test_only_aead_suites_are_offered(cloud: Cloud, which: str) -> None:
    port = cloud.settings.broker_port if which == "broker" else cloud.settings.enroll_port
    for weak in (CBC_SHA1, CBC_SHA2):
        got = _handshake(cloud, port, weak, ssl.TLSVersion.TLSv1_2)
        assert got.startswith("refused"), f"{which} accepted {got} over TLS 1.2"
    assert "GCM" in _handshake(cloud, port, AEAD, ssl.TLSVersion.TLSv1_2)
    assert _handshake(cloud, port, None, ssl.TLSVersion.TLSv1_3).startswith("TLS_")
    assert _handshake(cloud, port, None, ssl.TLSVersion.TLSv1_1).startswith("refused")
