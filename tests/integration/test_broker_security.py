"""The broker's security model, on a real Mosquitto with TLS client certificates.

Asserts on what the broker really delivers or refuses, never on client-side behaviour.
"""

from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path

import pytest

from cloud.platform import Cloud
from proto import topics
from proto.topics import Down, Up
from tests.support.cloudkit import Client, connect_fails, forge_cert, mqtt_client, provision, service_client
from tests.support.wait import wait_for

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def boxes(cloud: Cloud, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two enrolled Boxes, A and B: their state directories."""
    out = {}
    for serial in ("BOX-A", "BOX-B"):
        d = tmp_path_factory.mktemp(serial)
        provision(cloud, d, serial)
        out[serial] = d
    return out


def box_client(cloud: Cloud, state: Path, client_id: str) -> Client:
    ident = state / "identity"
    w = mqtt_client(cloud, client_id, ident / "box.crt", ident / "box.key")
    wait_for(w.connected.is_set, 10, f"{client_id} to connect")
    return w


def test_a_box_cannot_publish_to_another_box_topics(cloud: Cloud, boxes: dict[str, Path]) -> None:
    watcher = service_client(cloud, "receiver", "watch-pub")
    watcher.client.subscribe(topics.up_filter(), 1)
    wait_for(lambda: watcher.subacks == [[1]], 5, "the watcher's subscription")
    b = box_client(cloud, boxes["BOX-B"], "BOX-B")
    b.client.subscribe(topics.down_filter("BOX-B"), 1)
    wait_for(lambda: b.subacks == [[1]], 5, "B's subscription")
    a = box_client(cloud, boxes["BOX-A"], "BOX-A")
    try:
        a.client.publish(topics.up("BOX-B", Up.DATA), b"forged", 1).wait_for_publish(5)
        a.client.publish(topics.down("BOX-B", Down.CMD), b"forged", 1).wait_for_publish(5)
        a.client.publish(topics.up("BOX-A", Up.EVENTS), b"mine", 1).wait_for_publish(5)
        wait_for(lambda: (topics.up("BOX-A", Up.EVENTS), b"mine") in watcher.messages, 5, "A's own message")
        # Mosquitto routes a QoS 1 message before it acknowledges it, and A waited for each
        # acknowledgement: had a forged message passed, it was on its way before A's own.
        assert not [t for t in watcher.topics() if "BOX-B" in t], "A's forged uplink was delivered"
        assert b.messages == [], "A's forged command reached B"
    finally:
        a.close()
        b.close()
        watcher.close()


def test_a_box_cannot_subscribe_to_another_box_topics(cloud: Cloud, boxes: dict[str, Path]) -> None:
    a = box_client(cloud, boxes["BOX-A"], "BOX-A")
    receiver = service_client(cloud, "receiver", "sender")
    wait_for(receiver.connected.is_set, 5, "the sender")
    try:
        a.client.subscribe([(topics.down_filter("BOX-B"), 1), (topics.up_filter("BOX-B"), 1), ("boxes/#", 1),
                            (topics.down_filter("BOX-A"), 1)])
        wait_for(lambda: a.subacks, 5, "the SUBACK")
        assert a.subacks[0][:3] == [0x87, 0x87, 0x87]  # not authorised
        assert a.subacks[0][3] == 1  # its own downlink: granted QoS 1
        receiver.client.publish(topics.down("BOX-B", Down.CMD), b"for B only", 1).wait_for_publish(5)
        receiver.client.publish(topics.down("BOX-A", Down.CMD), b"for A", 1).wait_for_publish(5)
        wait_for(lambda: a.messages, 5, "A's own command")
        assert a.topics() == [topics.down("BOX-A", Down.CMD)]
    finally:
        a.close()
        receiver.close()


def test_client_id_of_another_box_does_not_take_over_its_session(cloud: Cloud, boxes: dict[str, Path]) -> None:
    b = box_client(cloud, boxes["BOX-B"], "BOX-B")
    try:
        intruder = box_client(cloud, boxes["BOX-A"], "BOX-B")  # A's certificate, B's client id
        # the broker forces the client id to the certificate's identity: B stays connected
        b.client.publish(topics.up("BOX-B", Up.EVENTS), b"still here", 1).wait_for_publish(5)
        assert not b.disconnected.is_set()
        intruder.close()
    finally:
        b.close()


def test_no_certificate_is_refused(cloud: Cloud) -> None:
    verdict = connect_fails(cloud, "anon", None, None)
    assert verdict.startswith(("handshake failed", "disconnected")), verdict


def test_certificate_from_another_ca_is_refused(cloud: Cloud, tmp_path: Path) -> None:
    cert, key = forge_cert(cloud, tmp_path, "BOX-A", not_before=NOW - dt.timedelta(days=1),
                           not_after=NOW + dt.timedelta(days=30), own_ca=True)
    verdict = connect_fails(cloud, "BOX-A", cert, key)
    assert verdict.startswith(("handshake failed", "disconnected")), verdict


def test_expired_certificate_is_refused(cloud: Cloud, tmp_path: Path) -> None:
    cert, key = forge_cert(cloud, tmp_path, "BOX-A", not_before=NOW - dt.timedelta(days=400),
                           not_after=NOW - dt.timedelta(days=1))
    verdict = connect_fails(cloud, "BOX-A", cert, key)
    assert verdict.startswith(("handshake failed", "disconnected")), verdict


def test_platform_certificate_for_an_unenrolled_name_gets_no_rights(cloud: Cloud, tmp_path: Path) -> None:
    cert, key = forge_cert(cloud, tmp_path, "GHOST", not_before=NOW - dt.timedelta(days=1),
                           not_after=NOW + dt.timedelta(days=1))
    ghost = mqtt_client(cloud, "GHOST", cert, key)
    try:
        wait_for(ghost.connected.is_set, 10, "the ghost to connect")
        ghost.client.subscribe(topics.down_filter("GHOST"), 1)
        wait_for(lambda: ghost.subacks, 5, "the SUBACK")
        assert ghost.subacks[0] == [0x87]  # default deny
    finally:
        ghost.close()


def test_plaintext_connection_is_refused(cloud: Cloud) -> None:
    with socket.create_connection(("localhost", cloud.settings.broker_port), timeout=5) as s:
        # an MQTT 3.1.1 CONNECT in the clear
        s.sendall(bytes.fromhex("101000044d5154540402003c0004746573740000")[:18])
        s.settimeout(5)
        try:
            answer = s.recv(64)
        except (ConnectionResetError, TimeoutError):
            answer = b""
    assert not answer.startswith(b"\x20"), "the broker sent a CONNACK to a plaintext client"


def test_revoked_box_is_cut_off_and_cannot_reconnect(cloud: Cloud, tmp_path: Path) -> None:
    state = tmp_path / "victim"
    provision(cloud, state, "BOX-REVOKED")
    live = box_client(cloud, state, "BOX-REVOKED")
    try:
        assert cloud.revoke("BOX-REVOKED") is True
        wait_for(live.disconnected.is_set, 10, "the revoked Box's session to end")
    finally:
        live.close()
    ident = state / "identity"
    verdict = connect_fails(cloud, "BOX-REVOKED", ident / "box.crt", ident / "box.key")
    assert verdict.startswith(("handshake failed", "disconnected")), verdict
    assert cloud.box("BOX-REVOKED").revoked is not None


def test_broker_files_and_keys_are_private(cloud: Cloud, boxes: dict[str, Path]) -> None:
    keys = [*cloud.pki.dir.glob("*.key"), *cloud.pki.dir.glob("offline/*.key"), cloud.broker.dir / "broker.key"]
    keys += [d / "identity" / "box.key" for d in boxes.values()]
    assert len(keys) >= 8
    for k in keys:
        assert k.stat().st_mode & 0o777 == 0o600, k


def test_boxcloud_run_restarts_a_broker_that_died(fresh_cloud: Cloud) -> None:
    old_pid = fresh_cloud.broker.running_pid()
    proc = fresh_cloud.broker._proc
    assert proc is not None
    proc.kill()  # a crash, not a stop
    wait_for(fresh_cloud.broker.exited, 10, "the broker to die")
    fresh_cloud.supervise()
    assert fresh_cloud.broker.running_pid() not in (None, old_pid)
    receiver = fresh_cloud.receiver
    assert receiver is not None
    wait_for(receiver.connected.is_set, 15, "the receiver to reconnect")
