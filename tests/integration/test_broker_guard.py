"""Issue 12, findings 4 and 6: what a Box may publish, on the real Mosquitto with the boxguard plugin.

Exactly the documented uplink topics, retained only on status and meta, each within its size
limit, at a bounded rate; revocation removes what the Box left retained, and a restarted cloud
does not believe a revoked Box's stale "online". Asserted on what the broker delivers (to a
service subscriber, and as retained messages to a newcomer) and on its PUBACKs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloud.platform import Cloud
from proto import topics
from proto.topics import Down, Up
from tests.support.cloudkit import Client, make_cloud, mqtt_client, provision, service_client
from tests.support.wait import wait_for

NOT_AUTHORIZED = 0x87


@pytest.fixture(scope="module")
def box(cloud: Cloud, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("guard-box")
    provision(cloud, d, "GUARD-1")
    return d / "identity"


def _box(cloud: Cloud, ident: Path, box_id: str) -> Client:
    c = mqtt_client(cloud, box_id, ident / "box.crt", ident / "box.key")
    wait_for(c.connected.is_set, 10, f"{box_id} to connect")
    return c


def _publish(c: Client, topic: str, payload: bytes, *, retain: bool = False) -> int:
    """Publish QoS 1 and return the broker's PUBACK reason code."""
    info = c.client.publish(topic, payload, 1, retain=retain)
    wait_for(lambda: info.mid in c.acks, 10, f"the PUBACK of {topic}")
    return c.acks[info.mid]


def _retained(cloud: Cloud, name: str, box_id: str) -> list[str]:
    """The topics a newcomer subscribing to a Box's subtree gets as (non-empty) retained messages."""
    w = service_client(cloud, "receiver", name)
    try:
        w.client.subscribe(topics.up_filter(box_id), 1)
        wait_for(lambda: w.subacks == [[1]], 5, "the SUBACK")
        # retained messages are queued at the subscription: the PUBACK of a later publish comes after them
        w.client.publish(topics.down(box_id, Down.TIME), b"m", 1).wait_for_publish(5)  # the Box is not connected
        return sorted(t for t, p in w.messages if p)
    finally:
        w.close()


def test_a_box_may_publish_only_the_documented_uplink_topics(cloud: Cloud, box: Path) -> None:
    watcher = service_client(cloud, "receiver", "guard-watch")
    watcher.client.subscribe(topics.up_filter("GUARD-1"), 1)
    wait_for(lambda: watcher.subacks == [[1]], 5, "the watcher's subscription")
    b = _box(cloud, box, "GUARD-1")
    try:
        for leaf in ("anything", "data/x", "limits", "status/extra"):  # not uplink leaves (`Up` has none of them)
            undocumented = topics.up_filter("GUARD-1").removesuffix("#") + leaf
            assert _publish(b, undocumented, b"x") == NOT_AUTHORIZED, leaf
        assert _publish(b, topics.up("GUARD-1", Up.EVENTS), b"fine") == 0
        wait_for(lambda: (topics.up("GUARD-1", Up.EVENTS), b"fine") in watcher.messages, 5, "the allowed event")
        assert watcher.topics() == [topics.up("GUARD-1", Up.EVENTS)]
    finally:
        b.close()
        watcher.close()


def test_a_box_may_retain_only_its_status_and_point_table_within_size_limits(cloud: Cloud, box: Path) -> None:
    b = _box(cloud, box, "GUARD-1")
    try:
        big = b"\x00" * (512 * 1024)
        for leaf in ("data", "events", "health", "replies"):
            assert _publish(b, topics.up("GUARD-1", Up(leaf)), b"x", retain=True) == NOT_AUTHORIZED, leaf
        for _ in range(5):  # the attack: megabytes parked in the broker under the Box's name
            assert _publish(b, topics.up("GUARD-1", Up.META), big, retain=True) == NOT_AUTHORIZED
        assert _publish(b, topics.up("GUARD-1", Up.STATUS), b"{" + b" " * 3000 + b"}", retain=True) == NOT_AUTHORIZED
        assert _publish(b, topics.up("GUARD-1", Up.DATA), b"\x01" + b"\x00" * (300 * 1024)) == NOT_AUTHORIZED
        assert _publish(b, topics.up("GUARD-1", Up.STATUS), b'{"v":1,"online":true}', retain=True) == 0
    finally:
        b.close()
    assert _retained(cloud, "guard-retained", "GUARD-1") == [topics.up("GUARD-1", Up.STATUS)]


def test_revocation_clears_what_the_box_left_retained_and_a_restart_keeps_it_revoked(
        tmp_path: Path, mosquitto_available: None) -> None:
    cloud = make_cloud(tmp_path / "cloud")
    cloud.start()
    try:
        provision(cloud, tmp_path / "box", "GUARD-REV")
        b = _box(cloud, tmp_path / "box" / "identity", "GUARD-REV")
        assert _publish(b, topics.up("GUARD-REV", Up.STATUS), b'{"v":1,"online":true}', retain=True) == 0
        assert _publish(b, topics.up("GUARD-REV", Up.META), b"\x01\x82\x00\x80", retain=True) == 0
        wait_for(lambda: cloud.box("GUARD-REV").online, 10, "the cloud to see the Box online")
        cloud.revoke("GUARD-REV")
        wait_for(b.disconnected.is_set, 10, "the revoked Box's session to end")
        b.close()
        assert _retained(cloud, "guard-after", "GUARD-REV") == [], "retained messages survived revocation"
    finally:
        cloud.stop()
    again = Cloud(tmp_path / "cloud")
    again.start()
    try:
        assert again.receiver is not None
        wait_for(again.receiver.connected.is_set, 15, "the receiver")
        assert again.receiver is not None
        again.receiver.handle("GUARD-REV", "status", json.dumps({"v": 1, "online": True}).encode())
        row = again.store.box("GUARD-REV")
        assert row is not None and row.revoked is not None and not row.online
    finally:
        again.stop()


def test_a_box_over_its_rate_is_refused_and_the_platform_raises_an_alert(
        tmp_path: Path, mosquitto_available: None) -> None:
    cloud = make_cloud(tmp_path / "cloud")
    cloud.broker.limits.update({"msgs_per_s": 5, "msgs_burst": 20})
    cloud.start()
    try:
        provision(cloud, tmp_path / "box", "GUARD-FLOOD")
        b = _box(cloud, tmp_path / "box" / "identity", "GUARD-FLOOD")
        try:
            codes = [_publish(b, topics.up("GUARD-FLOOD", Up.EVENTS), b"\x01\xa0") for _ in range(40)]
        finally:
            b.close()
        assert codes[:20] == [0] * 20 and NOT_AUTHORIZED in codes[20:]
        wait_for(lambda: any(a.kind == "rate" for a in cloud.store.alerts("GUARD-FLOOD")), 10, "a rate alert")
    finally:
        cloud.stop()
