"""Bulk enrolment (`Cloud.enroll_keys`, issue 20): many Boxes enrolled from their public keys at once,
their rights given to the running broker in a few dynamic-security messages (`BrokerControl.add_boxes`),
each Box then a Box like any other: connected with its own certificate, its own downlink only, its
status stored by the receiver. A malformed Box ID refuses the whole batch, nothing enrolled. The
operator's command, `boxcloud box enroll-bulk DIR`, does the same from a directory of public keys.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from boxkit.files import write_secret
from cloud import broker
from cloud.errors import CloudError
from cloud.platform import Cloud
from proto import topics
from proto.topics import Up
from proto.uplink import Status
from tests.support.cloudkit import mqtt_client
from tests.support.wait import wait_for


def test_boxes_enrolled_in_bulk_connect_with_their_own_rights_only(
    cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker, "ADD_PER_MESSAGE", 2)  # three Boxes: two admin messages
    ids = ["BULK-1", "BULK-2", "BULK-3"]
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in ids]
    chains = cloud.enroll_keys([(b, k.public_key()) for b, k in zip(ids, keys, strict=True)])
    clients = []
    try:
        for b, k, chain in zip(ids, keys, chains, strict=True):
            cert, key = tmp_path / f"{b}.crt", tmp_path / f"{b}.key"
            cert.write_bytes(chain)
            write_secret(key, k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
            c = mqtt_client(cloud, b, cert, key)
            wait_for(c.connected.is_set, 15, f"{b} to connect")
            clients.append(c)
        for b, c in zip(ids, clients, strict=True):
            other = ids[(ids.index(b) + 1) % len(ids)]
            c.client.subscribe([(topics.down_filter(other), 1), (topics.down_filter(b), 1)])
            c.client.publish(topics.up(b, Up.STATUS), Status(True, 1, "bulk").encode(), 1, retain=True)
        wait_for(lambda: all(len(c.subacks) == 1 for c in clients), 10, "the SUBACKs")
        assert [c.subacks[0] for c in clients] == [[0x87, 1]] * 3  # another's downlink refused, its own granted
        wait_for(lambda: all((row := cloud.store.box(b)) is not None and row.online for b in ids), 15,
                 "each Box's status stored as online")
    finally:
        for c in clients:
            c.close()


def test_a_malformed_box_id_refuses_the_whole_batch(cloud: Cloud) -> None:
    keys = [("BULK-OK", ec.generate_private_key(ec.SECP256R1()).public_key()),
            ("bad/id", ec.generate_private_key(ec.SECP256R1()).public_key())]
    with pytest.raises(CloudError, match="bad/id"):
        cloud.enroll_keys(keys)
    assert cloud.store.box("BULK-OK") is None


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pub(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _boxcloud(cloud: Cloud, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cloud.cli", "--home", str(cloud.home), *argv],
                          capture_output=True, text=True, timeout=120)


def test_the_operator_enrols_a_directory_of_public_keys(cloud: Cloud, tmp_path: Path) -> None:
    keys_dir, certs = tmp_path / "batch", tmp_path / "certs"
    keys_dir.mkdir()
    key = ec.generate_private_key(ec.SECP256R1())
    (keys_dir / "CLI-BULK-1.pub.pem").write_bytes(_pub(key))
    (keys_dir / "CLI-BULK-2.pub.pem").write_bytes(b"not a key")
    r = _boxcloud(cloud, "box", "enroll-bulk", str(keys_dir), "--out", str(certs))
    assert r.returncode == 1 and "CLI-BULK-2.pub.pem is not a PEM public key" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and cloud.store.box("CLI-BULK-1") is None  # nothing enrolled
    (keys_dir / "CLI-BULK-2.pub.pem").unlink()
    r = _boxcloud(cloud, "box", "enroll-bulk", str(keys_dir), "--out", str(certs))
    assert r.returncode == 0 and "1 Boxes enrolled" in r.stdout, r.stderr
    write_secret(tmp_path / "k.pem", _pem_key(key))
    c = mqtt_client(cloud, "CLI-BULK-1", certs / "CLI-BULK-1.crt", tmp_path / "k.pem")
    try:
        wait_for(c.connected.is_set, 15, "the Box enrolled in bulk to connect")
    finally:
        c.close()
