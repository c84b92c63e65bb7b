"""The receiver back on its persistent session after a broker restart is not sent every Box's retained
messages again (a real Mosquitto, restarted with its state saved).

Each Box keeps its status and point table retained at the broker. The receiver subscribes with MQTT 5's
retain handling "only for a new subscription": at a fleet's first contact it gets them; when it comes
back to its session, which the broker kept across its restart, it does not (at 10,000 Boxes that was
20,000 messages, each handled and written, on top of the fleet's own reconnections:
docs/performance.md, "10,000 Boxes"). What the receiver missed meanwhile is queued in its session.
"""

from __future__ import annotations

from pathlib import Path

import paho.mqtt.client as mqtt

from cloud.platform import Cloud
from proto import topics, wire
from proto.topics import Up
from proto.uplink import Health
from tests.support.receiverkit import EPOCH, TABLE, scripted_box
from tests.support.wait import wait_for


def test_after_a_broker_restart_the_receiver_is_not_sent_the_retained_messages_again(
        fresh_cloud: Cloud, tmp_path: Path) -> None:
    cloud = fresh_cloud
    assert cloud.receiver is not None and cloud.receiver._client is not None
    rx = cloud.receiver._client
    box_id, c = scripted_box(cloud, tmp_path, "RETAINED-1")  # its point table retained at the broker
    wait_for(lambda: cloud.store.table(box_id, wire.table_id(TABLE)), 30, "the point table stored")
    seen: list[tuple[object, bool]] = []  # (leaf, sent as retained) of every message the receiver is sent
    subscribed: list[int] = []
    real_on_message, real_on_subscribe = rx.on_message, rx.on_subscribe

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        seen.append((topics.parse(msg.topic).leaf, bool(msg.retain)))
        assert real_on_message is not None
        real_on_message(client, userdata, msg)

    def on_subscribe(*args: object) -> None:
        subscribed.append(1)
        assert real_on_subscribe is not None
        real_on_subscribe(*args)  # type: ignore[arg-type]

    rx.on_message, rx.on_subscribe = on_message, on_subscribe
    try:
        c.connected.clear()
        cloud.broker.stop()
        cloud.broker.start()
        wait_for(lambda: subscribed, 60, "the receiver back on its session, subscribed")
        wait_for(c.connected.is_set, 60, "the Box back")
        c.client.publish(topics.up(box_id, Up.HEALTH), Health(1_700_000_000_000, EPOCH, 0).encode(), 1)
        # the heartbeat comes after anything the broker sent for the subscription
        wait_for(lambda: (Up.HEALTH, False) in seen, 30, "the Box's heartbeat at the receiver")
        assert not [leaf for leaf, retained in seen if retained], seen
    finally:
        rx.on_message, rx.on_subscribe = real_on_message, real_on_subscribe
        c.client.loop_stop()
        c.client.disconnect()
