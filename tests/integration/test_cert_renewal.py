"""Certificate renewal on real parts: the Box's current certificate authenticates it to the
enrollment endpoint (HTTPS, client certificate), the new one works at the broker, the old one
is kept until then, and revoking the Box revokes both."""

from __future__ import annotations

import http.client
import json
import shutil
from pathlib import Path

import pytest
from cryptography import x509

from cloud.platform import Cloud
from tests.support.cloudkit import connect_fails, mqtt_client, provision
from tests.support.wait import wait_for
from trust import identity, tls
from trust.enroll import renew
from trust.errors import EnrollError


def _connects(cloud: Cloud, ident: identity.Identity) -> bool:
    c = mqtt_client(cloud, ident.box_id, ident.cert_file, ident.key_file)
    try:
        wait_for(lambda: c.connected.is_set() or bool(c.refused) or c.disconnected.is_set(), 10, "a verdict")
        return c.connected.is_set()
    finally:
        c.close()


def test_renew_switch_commit_and_revoke(fresh_cloud: Cloud, tmp_path: Path) -> None:
    cloud = fresh_cloud
    old = provision(cloud, tmp_path, "RENEW-1")
    old_pem = old.cert_file.read_bytes()
    staged = renew(tmp_path)
    assert staged == tmp_path / identity.NEXT_DIR
    assert (staged / "box.key").stat().st_mode & 0o777 == 0o600
    assert identity.load(tmp_path).cert_file.read_bytes() == old_pem  # still in use until switched

    identity.activate_next(tmp_path)
    new = identity.load(tmp_path)
    assert new.box_id == "RENEW-1" and new.cert_file.read_bytes() != old_pem
    assert new.not_after() >= identity.cert_not_after(old_pem)
    assert _connects(cloud, new)
    # the previous certificate is kept until the new one has proved itself, and still works
    prev = identity.Identity("RENEW-1", new.broker_host, new.broker_port, tmp_path / identity.PREV_DIR)
    assert _connects(cloud, prev)
    kept = shutil.copytree(prev.directory, tmp_path / "kept-old")  # a thief's copy of the old identity
    identity.commit(tmp_path)
    assert not (tmp_path / identity.PREV_DIR).exists()

    # revoking the Box revokes the renewed certificate and the one it replaced
    cloud.revoke("RENEW-1")
    revoked = {serial for serial, _ in cloud.store.revoked_certs()}
    for d in (new.directory, kept):
        pem = (d / "box.crt").read_bytes()
        assert x509.load_pem_x509_certificate(pem).serial_number in revoked  # on the CRL, both
        assert not connect_fails(cloud, "RENEW-1", d / "box.crt", d / "box.key").startswith("connected")
    with pytest.raises(EnrollError, match=r"revoked|refused"):
        renew(tmp_path)


def test_revert_goes_back_to_the_previous_identity(fresh_cloud: Cloud, tmp_path: Path) -> None:
    cloud = fresh_cloud
    old = provision(cloud, tmp_path, "RENEW-2")
    old_pem = old.cert_file.read_bytes()
    renew(tmp_path)
    identity.activate_next(tmp_path)
    identity.revert(tmp_path)
    assert identity.load(tmp_path).cert_file.read_bytes() == old_pem
    assert _connects(cloud, identity.load(tmp_path))


def test_a_switch_cut_by_a_power_loss_is_finished_at_start(fresh_cloud: Cloud, tmp_path: Path) -> None:
    provision(fresh_cloud, tmp_path, "RENEW-3")
    renew(tmp_path)
    (tmp_path / identity.IDENTITY_DIR).rename(tmp_path / identity.PREV_DIR)  # the first rename, then the cut
    assert identity.recover(tmp_path) == "finished switching to the renewed identity"
    assert identity.load(tmp_path).box_id == "RENEW-3"
    assert identity.recover(tmp_path) is None


def test_renewal_needs_a_valid_box_certificate(fresh_cloud: Cloud, tmp_path: Path) -> None:
    cloud = fresh_cloud
    ident = provision(cloud, tmp_path, "RENEW-4")
    port = cloud.settings.enroll_port

    def post(client: tuple[Path, Path] | None) -> tuple[int, str]:
        ctx = tls.client_context(ident.ca_file, *(client or (None, None)))
        conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)
        try:
            conn.request("POST", "/v1/renew", json.dumps({"csr": "not a csr"}), {"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())["error"]
        finally:
            conn.close()

    status, error = post(None)
    assert status == 401 and "current certificate" in error
    status, error = post((ident.cert_file, ident.key_file))
    assert status == 400 and "CSR" in error  # authenticated, but the request is refused for what it is
    # a service identity of the cloud is not a Box
    svc = (cloud.pki.dir / "svc-receiver.crt", cloud.pki.dir / "svc-receiver.key")
    status, error = post(svc)
    assert status == 403 and "not a Box" in error
