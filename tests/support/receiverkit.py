"""A scripted Box for the receiver's tests: a real mTLS MQTT client with a provisioned Box identity,
publishing the batches a Box makes (`proto.wire`), QoS 1; and what the receiver acknowledges."""

from __future__ import annotations

from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from cloud.platform import Cloud
from drivers._types import PointInfo
from proto import topics, wire
from proto.topics import Up
from tests.support.cloudkit import Client, mqtt_client, provision
from tests.support.wait import wait_for

TABLE = [PointInfo("m.energy", "kWh", "uint32"), PointInfo("m.power", "kW", "float32")]
TID = wire.table_id(TABLE)
EPOCH = 77


def batch(seq: int) -> bytes:
    return wire.encode_batch(EPOCH, seq, TID, 1_700_000_000_000 + 1000 * seq, [wire.encode_group(0, 0, [seq, 0.5], {})])


def scripted_box(cloud: Cloud, state: Path, serial: str) -> tuple[str, Client]:
    ident = provision(cloud, state, serial)
    c = mqtt_client(cloud, ident.box_id, ident.cert_file, ident.key_file)
    wait_for(c.connected.is_set, 10, f"{serial} to connect")
    c.client.publish(topics.up(ident.box_id, Up.META), wire.encode_table(TABLE), 1, retain=True).wait_for_publish(5)
    return ident.box_id, c


def acks_of_batches(rx: mqtt.Client) -> list[int]:
    """The seq of every batch `rx` (the receiver's paho client) acknowledges from now on, in order (its
    `ack` and message callback wrapped: nothing else changes)."""
    acked: list[int] = []
    seq_of: dict[int, int] = {}  # packet id -> the batch it carries (an id is reused only once acknowledged)
    real_ack, real_on_message = rx.ack, rx.on_message

    def ack(mid: int, qos: int) -> MQTTErrorCode:
        seq = seq_of.get(mid)
        rc = real_ack(mid, qos)
        if seq is not None:
            acked.append(seq)
        return rc

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if topics.parse(msg.topic).leaf == Up.DATA:
            seq_of[msg.mid] = wire.decode_batch(bytes(msg.payload)).seq
        else:
            seq_of.pop(msg.mid, None)
        real_on_message(client, userdata, msg)  # type: ignore[misc]

    rx.ack, rx.on_message = ack, on_message  # type: ignore[method-assign]
    return acked
