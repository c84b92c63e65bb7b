"""Issue 12, finding 1: re-enrolling a Box ends every certificate it ever had; only the current
certificate (or, during a rotation, the pending one) renews and is served; tokens are explicit.

On real parts: the cloud's Mosquitto with mTLS and CRL, its HTTPS endpoint (enrollment, renewal,
TUF repository), `boxctl`'s enrollment and renewal code, `boxcloud` as a process.
"""

from __future__ import annotations

import http.client
import json
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from cloud.platform import Cloud
from proto import topics
from proto.topics import Up
from tests.support.cloudkit import connect_fails, mqtt_client, provision
from tests.support.wait import wait_for
from trust import identity, tls
from trust.enroll import confirm, enroll, renew
from trust.errors import EnrollError


def _keep(src: Path, dst: Path) -> Path:
    """A thief's copy of an identity directory (key and certificate)."""
    return Path(shutil.copytree(src, dst))


def _connects(cloud: Cloud, d: Path, box_id: str) -> bool:
    verdict = connect_fails(cloud, box_id, d / "box.crt", d / "box.key")
    return verdict.startswith("connected")


def _https(cloud: Cloud, method: str, path: str, d: Path, body: dict[str, object] | None = None) -> int:
    ctx = tls.client_context(cloud.pki.root_cert, d / "box.crt", d / "box.key")
    conn = http.client.HTTPSConnection("localhost", cloud.settings.enroll_port, context=ctx, timeout=10)
    try:
        conn.request(method, path, json.dumps(body) if body is not None else None,
                     {"Content-Type": "application/json"} if body is not None else {})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (ssl.SSLError, OSError):
        return 0  # refused in the handshake
    finally:
        conn.close()


def _renew_with(state: Path, ident_dir: Path) -> None:
    """Renew as the holder of `ident_dir` would (its key and certificate in a state directory)."""
    fake = state / "thief"
    if fake.exists():
        shutil.rmtree(fake)
    shutil.copytree(ident_dir, fake / identity.IDENTITY_DIR)
    renew(fake)


def test_reenrolment_ends_every_certificate_the_box_ever_had(fresh_cloud: Cloud, tmp_path: Path) -> None:
    cloud = fresh_cloud
    state = tmp_path / "box"
    provision(cloud, state, "REENROL-1")
    cert1 = _keep(state / identity.IDENTITY_DIR, tmp_path / "cert1")
    renew(state)  # cert 2, staged
    identity.activate_next(state)
    identity.commit(state)
    cert2 = _keep(state / identity.IDENTITY_DIR, tmp_path / "cert2")

    token, _ = cloud.add_box("REENROL-1", 600, replace=True)  # the operator replaces the Box
    enroll(state, f"https://localhost:{cloud.settings.enroll_port}", token, cloud.pki.root_cert, force=True)
    cert3 = state / identity.IDENTITY_DIR

    for old in (cert1, cert2):
        assert not _connects(cloud, old, "REENROL-1"), f"{old.name} still connects to the broker"
        assert _https(cloud, "GET", "/tuf/metadata/timestamp.json", old) == 403, f"{old.name} is served updates"
        with pytest.raises(EnrollError, match="refused"):
            _renew_with(tmp_path, old)
    assert _connects(cloud, cert3, "REENROL-1")
    assert _https(cloud, "GET", "/tuf/metadata/timestamp.json", cert3) == 200


def test_a_live_session_of_an_old_certificate_ends_at_reenrolment(fresh_cloud: Cloud, tmp_path: Path) -> None:
    cloud = fresh_cloud
    state = tmp_path / "box"
    provision(cloud, state, "REENROL-2")
    stolen = _keep(state / identity.IDENTITY_DIR, tmp_path / "stolen")
    thief = mqtt_client(cloud, "REENROL-2", stolen / "box.crt", stolen / "box.key")
    wait_for(thief.connected.is_set, 10, "the thief to connect")
    try:
        token, _ = cloud.add_box("REENROL-2", 600, replace=True)
        enroll(state, f"https://localhost:{cloud.settings.enroll_port}", token, cloud.pki.root_cert, force=True)
        wait_for(thief.disconnected.is_set, 10, "the old certificate's session to end")
    finally:
        thief.close()
    assert not _connects(cloud, stolen, "REENROL-2")


def test_only_the_current_or_pending_certificate_renews(fresh_cloud: Cloud, tmp_path: Path) -> None:
    cloud = fresh_cloud
    state = tmp_path / "box"
    provision(cloud, state, "ROTATE-1")
    cert1 = _keep(state / identity.IDENTITY_DIR, tmp_path / "cert1")
    renew(state)
    identity.activate_next(state)
    cert2 = state / identity.IDENTITY_DIR
    # during the rotation both work: the pending certificate at the broker and the HTTPS endpoints
    assert _connects(cloud, cert2, "ROTATE-1") and _connects(cloud, cert1, "ROTATE-1")
    assert _https(cloud, "GET", "/tuf/metadata/timestamp.json", cert2) == 200
    identity.commit(state)
    confirm(state)  # the Box says it uses cert 2: cert 1 ends
    assert not _connects(cloud, cert1, "ROTATE-1")
    assert _https(cloud, "GET", "/tuf/metadata/timestamp.json", cert1) == 403
    with pytest.raises(EnrollError, match="refused"):
        _renew_with(tmp_path, cert1)  # a superseded certificate can never renew itself into a fresh one
    assert _connects(cloud, cert2, "ROTATE-1")
    assert cloud.box("ROTATE-1").cert_serial == _serial(cert2)


def test_a_renewal_from_the_current_certificate_ends_an_unused_pending_one(fresh_cloud: Cloud, tmp_path: Path) -> None:
    cloud = fresh_cloud
    state = tmp_path / "box"
    provision(cloud, state, "ROTATE-2")
    renew(state)  # pending, never used (the Box could not connect with it and went back)
    unused = _keep(state / identity.NEXT_DIR, tmp_path / "unused")
    shutil.rmtree(state / identity.NEXT_DIR)
    renew(state)  # from the current certificate again
    assert not _connects(cloud, unused, "ROTATE-2")
    assert _connects(cloud, state / identity.NEXT_DIR, "ROTATE-2")
    assert _connects(cloud, state / identity.IDENTITY_DIR, "ROTATE-2")


def _serial(d: Path) -> int:
    from cryptography import x509

    return x509.load_pem_x509_certificate((d / "box.crt").read_bytes()).serial_number


def _boxcloud(cloud: Cloud, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cloud.cli", "--home", str(cloud.home), *args],
                          capture_output=True, text=True, timeout=60)


def test_a_token_for_an_enrolled_box_needs_replace_and_a_box_has_one_live_token(
        cloud: Cloud, tmp_path: Path) -> None:
    provision(cloud, tmp_path / "box", "TOKENS-1")
    live = mqtt_client(cloud, "TOKENS-1", tmp_path / "box/identity/box.crt", tmp_path / "box/identity/box.key")
    wait_for(live.connected.is_set, 10, "the Box to connect")
    live.client.publish(topics.up("TOKENS-1", Up.STATUS), b'{"v":1,"online":true}', 1, retain=True).wait_for_publish(5)
    wait_for(lambda: cloud.box("TOKENS-1").online, 10, "the cloud to see the Box online")
    try:
        r = _boxcloud(cloud, "box", "add", "TOKENS-1")
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert "enrolled and online" in r.stderr and "--replace" in r.stderr, r.stderr
        assert _boxcloud(cloud, "token", "list", "--json").stdout.strip() == "[]"

        first = _boxcloud(cloud, "box", "add", "TOKENS-1", "--replace")
        assert first.returncode == 0, first.stderr
        second = _boxcloud(cloud, "box", "add", "TOKENS-1", "--replace")
        assert "earlier token for TOKENS-1 is cancelled" in second.stdout
        listed = json.loads(_boxcloud(cloud, "token", "list", "--json").stdout)
        assert [t["serial"] for t in listed] == ["TOKENS-1"]
        first_token = next(w for w in first.stdout.split() if w.count("-") == 5)
        with pytest.raises(EnrollError, match="not valid"):  # the first token was cancelled
            enroll(tmp_path / "other", f"https://localhost:{cloud.settings.enroll_port}", first_token,
                   cloud.pki.root_cert)

        r = _boxcloud(cloud, "token", "cancel", "TOKENS-1")
        assert r.returncode == 0 and "Cancelled the pending token for TOKENS-1" in r.stdout
        again = _boxcloud(cloud, "token", "cancel", "TOKENS-1")  # a repeated action says nothing changed
        assert again.returncode == 0 and "nothing changed" in again.stdout
        assert json.loads(_boxcloud(cloud, "token", "list", "--json").stdout) == []
        assert "No pending enrollment tokens" in _boxcloud(cloud, "token", "list").stdout
        assert _connects(cloud, tmp_path / "box/identity", "TOKENS-1")  # nothing ended the Box meanwhile
    finally:
        live.close()
