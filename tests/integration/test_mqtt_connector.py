"""The MQTT connector end to end on real parts: the users' API (HTTPS) of a running cloud (its own
Mosquitto, receiver and command path), batches stored by the receiver's own path, the connector's
threads in a network namespace connecting over TLS to a second, separate Mosquitto playing the
customer's broker (`tests.support.mqttkit`: its own configuration and CA, password and
client-certificate listeners, on a public-looking address in another namespace), a customer's
subscriber recording what arrives, and, for the commands, a real boxd with the Modbus simulator.

The resolver is the test's (`tests.support.hookkit.Dns`); the reconnection backoff is shortened
(0.05 s to 0.5 s, full jitter) so that an outage is compressed into seconds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

import pytest
import requests

from cloud.api import operator
from cloud.mqttconn import Backoff
from cloud.platform import Cloud
from cloud.receiver import Receiver
from tests.support import netns
from tests.support.apikit import PASSWORD, add_box
from tests.support.boxproc import BoxProcess
from tests.support.cloudkit import make_cloud, provision
from tests.support.hookkit import PLATFORM, PUBLIC, Dns, store_batches
from tests.support.mqttkit import BROKER, USER, CustomerBroker, Subscriber, subscriber
from tests.support.mqttkit import PASSWORD as BROKER_PW
from tests.support.netns import FieldNetwork, _ip, enter
from tests.support.simthread import SimThread
from tests.support.wait import wait_for

pytestmark = pytest.mark.skipif(netns.available() is not None, reason=str(netns.available()))
_seq = count(1000)
SETPOINT = "ahu1.supply_setpoint"


@dataclass
class Env:
    cloud: Cloud
    url: str
    owner: requests.Session
    sa_id: int
    recv: Receiver
    broker: CustomerBroker
    sub: Subscriber
    home: Path

    def connector(self, **body: Any) -> dict[str, Any]:
        doc = {"name": f"m{next(_seq)}", "kind": "mqtt", "service_account_id": self.sa_id, "host": BROKER,
               "ca_pem": self.broker.ca_pem(), "auth": "basic", "username": USER, "password": BROKER_PW,
               "prefix": f"t{next(_seq)}", **body}
        r = self.owner.post(self.url + "/v1/connectors", json=doc)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def state(self, cid: int) -> dict[str, Any]:
        r = self.owner.get(f"{self.url}/v1/connectors/{cid}")
        assert r.ok, r.text
        return dict(r.json())

    def link(self, cid: int, want: str) -> dict[str, Any]:
        return wait_for(lambda: (s := self.state(cid))["link"] == want and s, 30, f"connector {cid} {want}")

    def batches(self, box: str, n: int) -> list[int]:
        seqs = [next(_seq) for _ in range(n)]
        store_batches(self.recv, box, range(seqs[0], seqs[0] + n))
        for _ in range(n - 1):
            next(_seq)
        return list(range(seqs[0], seqs[0] + n))

    def delete(self, cid: int) -> None:
        assert self.owner.delete(f"{self.url}/v1/connectors/{cid}").status_code == 204

    def audit(self) -> list[dict[str, Any]]:
        return list(self.owner.get(self.url + "/v1/audit", params={"limit": 1000}).json()["items"])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, mosquitto_available: None) -> Iterator[Env]:
    home = tmp_path_factory.mktemp("mqttconn")
    with FieldNetwork(home) as net:
        _ip("-n", net.box_ns, "addr", "add", f"{PLATFORM}/24", "dev", net.interface)
        net.add_address(PUBLIC)
        broker = CustomerBroker(home, net.field_ns)
        broker.start()
        cloud = make_cloud(home / "cloud")
        cloud.mqtt_options = {"resolver": Dns({BROKER: [[PUBLIC]], "inside.customer.example": [["10.0.0.5"]]}),
                              "prepare": lambda: enter(net.box_ns), "backoff": Backoff(0.05, 0.5)}
        cloud.start()
        sub = subscriber(broker, "customer-app", "#")
        # its session saved before any test kills the broker: else a restarted broker has no subscription
        # for it, and what the platform delivers before it subscribes again is the customer's loss
        subscribed = time.time()
        wait_for(lambda: broker.saved_after(subscribed), 15, "the customer's broker to save the subscriber's session")
        try:
            st = cloud.store
            acme, _ = operator.create_account(st, "acme", "owner@acme", PASSWORD)
            for b in ("BOX-A", "BOX-C", "BOX-B"):
                add_box(cloud, b, "acme")
            sa = st.add_user(acme.id, "bridge@acme", "service", None)
            for b in ("BOX-A", "BOX-C"):  # the connector reads these; BOX-B is the account's, out of its reach
                st.bind(acme.id, sa, "viewer", "box", b)
            owner = requests.Session()
            owner.trust_env, owner.verify, owner.auth = False, str(cloud.pki.root_cert), ("owner@acme", PASSWORD)
            recv = Receiver(cloud.pki, st, "localhost", 1)  # its `handle` only, beside the running one
            yield Env(cloud, f"https://localhost:{cloud.settings.api_port}", owner, sa, recv, broker, sub, home)
        finally:
            sub.close()
            cloud.stop()
            broker.stop()


@pytest.fixture(autouse=True)
def _broker_back(env: Env) -> Iterator[None]:
    yield
    env.broker.revive()


def _firsts(msgs: list[tuple[str, Any]]) -> tuple[dict[tuple[str, str], list[int]], int, int]:
    """Per (Box, point): the batches' sequence numbers in the order they first came; samples; duplicates."""
    seen: set[tuple[str, str, str]] = set()
    order: dict[tuple[str, str], list[int]] = {}
    samples = dups = 0
    for _, doc in msgs:
        key = (doc["box"], doc["point"], doc["id"])
        if key in seen:
            dups += 1
            continue
        seen.add(key)
        samples += len(doc["samples"])
        order.setdefault((doc["box"], doc["point"]), []).append(int(doc["id"].rsplit("/", 1)[1]))
    return order, samples, dups


def test_a_long_outage_of_the_customer_broker_loses_no_sample_and_keeps_each_box_in_order(env: Env) -> None:
    c = env.connector(points=["ahu1.temp", "ahu1.fan"])
    prefix = c["prefix"]
    assert c["state"] == "enabled" and "password" not in json.dumps(c)
    env.link(c["id"], "connected")
    sent = {b: env.batches(b, 20) for b in ("BOX-A", "BOX-C")}
    env.batches("BOX-B", 5)  # outside the service account's reach
    wait_for(lambda: _firsts(env.sub.messages(prefix + "/"))[1] >= 80, 30, "the first 80 samples")
    env.broker.freeze()  # the customer's broker hangs: it takes messages into its socket, acknowledges none
    for b in sent:
        sent[b] += env.batches(b, 20)
    wait_for(lambda: env.broker.unread() > 0, 30, "messages sent to the hung broker")
    env.broker.kill()  # and crashes with them unread: only what it acknowledged may leave the queue
    down = env.link(c["id"], "down")
    assert BROKER in down["last_error"]
    for _ in range(4):
        for b in sent:
            sent[b] += env.batches(b, 50)
    wait_for(lambda: env.state(c["id"])["queue"]["messages"] >= 400, 30, "the queue to hold the outage's data")
    env.broker.start()  # back after the (compressed) outage
    expected = sum(len(v) for v in sent.values()) * 2  # two points a batch: a message and a sample each
    wait_for(lambda: _firsts(env.sub.messages(prefix + "/"))[1] >= expected, 60, f"{expected} samples delivered")
    msgs = env.sub.messages(prefix + "/")
    order, samples, dups = _firsts(msgs)
    assert set(order) == {(b, p) for b in sent for p in ("ahu1.temp", "ahu1.fan")}  # the filter, the scope
    for (box, _point), seqs in order.items():
        assert seqs == sent[box], f"{box}: lost or out of order"
    assert {t for t, _ in msgs} == {f"{prefix}/{b}/{p}" for b in sent for p in ("ahu1.temp", "ahu1.fan")}
    s = wait_for(lambda: (x := env.state(c["id"]))["queue"]["messages"] == 0 and x, 30, "the queue drained")
    assert s["link"] == "connected" and s["last_error"] == "" and s["queue"]["evicted"] == 0
    print(f"mqtt outage: sent {expected} samples, delivered {samples}, duplicates {dups} messages")
    assert samples == expected
    env.delete(c["id"])


def test_a_client_certificate_and_mqtt_3_1_1_with_a_topic_a_batch(env: Env) -> None:
    key = env.broker.client.key.read_text()
    c = env.connector(auth="certificate", port=8884, protocol="3.1.1", data_topic="{prefix}/{box}/batch",
                      client_cert_pem=env.broker.client.cert.read_text(), client_key_pem=key, username="", password="")
    assert "BEGIN PRIVATE KEY" not in json.dumps(c)  # the key is sealed, never shown
    env.link(c["id"], "connected")
    sent = env.batches("BOX-A", 5)
    topic = f"{c['prefix']}/BOX-A/batch"
    wait_for(lambda: len(env.sub.messages(topic)) >= 5, 30, "5 batches")
    docs = [d for _, d in env.sub.messages(topic)]
    assert [d["seq"] for d in docs] == sent
    assert {s[0] for d in docs for s in d["samples"]} == {"ahu1.temp", "ahu1.fan", "ahu1.secret"}
    env.delete(c["id"])


def test_a_full_queue_drops_its_oldest_counted_and_alerted_and_a_dead_broker_delays_no_other(env: Env) -> None:
    c = env.connector(port=8884, queue_bytes=64 * 1024)  # a password where a certificate is wanted: never up
    wrong = env.connector(password="not-the-password")
    good = env.connector(points=["ahu1.temp"])
    wait_for(lambda: env.state(c["id"])["last_error"], 30, "the connection refused")
    assert "Not authorized" in wait_for(lambda: env.state(wrong["id"])["last_error"], 30, "the password refused")
    env.link(good["id"], "connected")
    sent = env.batches("BOX-A", 400)
    # the healthy connector delivers all of it while the two others fail and one evicts
    wait_for(lambda: len(env.sub.messages(good["prefix"] + "/")) >= 400, 30, "the healthy connector's 400 batches")

    def queued() -> list[int]:
        kept = env.cloud.store.mqtt_next(c["id"], 0, 100_000)
        return [int(json.loads(m.payload)["id"].rsplit("/", 1)[1]) for m in kept]

    wait_for(lambda: queued()[-1:] == sent[-1:], 30, "the last batch queued")
    s = env.state(c["id"])
    assert s["queue"]["evicted"] > 0 and s["queue"]["bytes"] <= 64 * 1024 and s["link"] != "connected"
    assert s["queue"]["messages"] + s["queue"]["evicted"] == 3 * 400  # three points a batch
    alerts = env.cloud.store.alerts(f"connector:{c['id']}")
    assert alerts and "dropped so far, oldest first" in alerts[0].message
    seqs = queued()
    assert seqs == sorted(seqs) and seqs[0] > sent[0]  # the newest stay, in order
    assert len(seqs) == s["queue"]["messages"]
    assert env.sub.messages(c["prefix"] + "/") == env.sub.messages(wrong["prefix"] + "/") == []
    for x in (c, wrong, good):
        env.delete(x["id"])


@pytest.fixture(scope="module")
def box(env: Env) -> Iterator[tuple[str, SimThread]]:
    with SimThread(update_interval_s=0.2) as sim:
        state = env.home / "box"
        box_id = provision(env.cloud, state, "MQTT-CMD-1").box_id
        operator.assign_box(env.cloud.store, box_id, "acme")
        env.cloud.store.bind(env.cloud.store.user(env.sa_id).account_id, env.sa_id, "operator", "box", box_id)  # type: ignore[union-attr]
        config = state / "boxd.toml"
        config.write_text("[uplink]\nbatch_delay_ms = 100\nreconnect_max_s = 2\n\n" + sim.sim.points_toml(0.5))
        proc = BoxProcess.start(state, config)
        try:
            proc.wait_connected()
            yield box_id, sim
        finally:
            proc.stop()


def test_property_commands_from_the_customer_broker_go_the_way_of_cmd_write(env: Env,
                                                                          box: tuple[str, SimThread]) -> None:
    box_id, sim = box
    c = env.connector()
    p = c["prefix"]
    env.link(c["id"], "connected")

    def replies(ref: str) -> list[dict[str, Any]]:
        return [d for t, d in env.sub.messages(p + "/") if t.endswith("/reply") and d.get("id") == ref]

    def answer(ref: str, status: str) -> dict[str, Any]:
        return wait_for(lambda: next((d for d in replies(ref) if d["status"] == status), None), 30,
                        f"{ref} {status}")

    env.sub.publish(f"{p}/{box_id}/set", json.dumps({"id": "w1", "point": SETPOINT, "value": 23.5}).encode())
    done = answer("w1", "ok")
    assert sim.call(sim.sim.value, SETPOINT) == 23.5
    assert [d["status"] for d in replies("w1")] == ["queued", "ok"]

    env.sub.publish(f"{p}/{box_id}/set", json.dumps({"id": "w2", "point": "ahu1.supply_temp", "value": 5}).encode())
    assert "not writable" in answer("w2", "rejected")["detail"]
    env.sub.publish(f"{p}/{box_id}/set", json.dumps({"id": "w3", "point": SETPOINT, "value": 99}).encode())
    assert "above its max" in answer("w3", "rejected")["detail"]
    env.sub.publish(f"{p}/BOX-B/set", json.dumps({"id": "w4", "point": SETPOINT, "value": 20}).encode())
    assert answer("w4", "refused")["detail"] == "no Box 'BOX-B' here"
    env.sub.publish(f"{p}/{box_id}/set", b'{"id": "w5", "point": "ahu1.supply_setpoint", "value": 20, "x": 1}')
    assert "unknown keys 'x'" in answer("w5", "refused")["detail"]
    env.sub.publish(f"{p}/{box_id}/set", json.dumps({"id": "w6", "point": SETPOINT, "value": 20}).encode(),
                    retain=True)
    assert "retained" in answer("w6", "refused")["detail"]
    big = json.dumps({"id": "w7", "point": SETPOINT, "value": "x" * 5000}).encode()
    env.sub.publish(f"{p}/{box_id}/set", big)
    wait_for(lambda: any("at most 4096 bytes" in d["detail"] for t, d in env.sub.messages(p + "/")
                         if t == f"{p}/{box_id}/reply" and "id" not in d), 30, "the big one refused (its id unread)")
    assert sim.call(sim.sim.value, SETPOINT) == 23.5  # none of those changed it

    trail = [a for a in env.audit() if a["detail"].get("via") == f"connector:{c['id']}"
             or a["actor"] == f"connector:{c['id']}"]
    sends = [a for a in trail if a["action"] == "command.send"]
    assert [a["detail"]["point"] for a in sends] == [SETPOINT, "ahu1.supply_temp", SETPOINT]
    assert all(a["actor"] == "user:bridge@acme" for a in sends)
    results = {a["detail"]["command"]: a["outcome"] for a in trail if a["action"] == "command.result"}
    assert sorted(results.values()) == ["ok", "rejected", "rejected"] and results[done["command"]] == "ok"
    denied = [a for a in trail if a["action"] == "denied"]
    assert [(a["target"], a["detail"]["permission"]) for a in denied] == [("box:BOX-B", "box.command.send")]
    s = env.state(c["id"])["commands"]
    assert s == {"received": 7, "refused": 4}
    # nothing the connector published came back as a command
    assert not [t for t, d in env.sub.messages(p + "/") if t.endswith("/set") and "status" in d]
    env.delete(c["id"])


@pytest.mark.parametrize(("body", "why"), [
    ({"host": "127.0.0.1"}, "loopback"),
    ({"host": "10.1.2.3"}, "private"),
    ({"host": "169.254.169.254"}, "link-local"),
    ({"host": "2130706433"}, "oddly"),
    ({"host": "::ffff:127.0.0.1"}, "IPv4-mapped"),
    ({"port": 1883}, "port 1883 is not allowed"),
    ({"command_topic": "{prefix}/{box}/{point}"}, "neither text"),
    ({"data_topic": "{prefix}/{box}/set"}, "would come back to it as a command"),
    ({"reply_topic": "{prefix}/{box}/set"}, "would come back to it as a command"),
    ({"ca_pem": "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"}, "ca_pem"),
    ({"auth": "none"}, "basic"),
])
def test_the_api_refuses_a_broker_or_topics_the_connector_must_not_use(env: Env, body: dict[str, Any],
                                                                      why: str) -> None:
    doc = {"name": "x", "kind": "mqtt", "service_account_id": env.sa_id, "host": BROKER, "auth": "basic",
           "username": USER, "password": BROKER_PW, "ca_pem": env.broker.ca_pem(), **body}
    r = env.owner.post(env.url + "/v1/connectors", json=doc)
    assert r.status_code in (400, 422) and why in r.json()["detail"], r.text


def test_a_name_that_resolves_inside_is_refused_at_each_connection(env: Env) -> None:
    c = env.connector(host="inside.customer.example")
    s = wait_for(lambda: (x := env.state(c["id"]))["last_error"] and x, 30, "the refusal")
    assert "resolves to 10.0.0.5, which is private" in s["last_error"] and s["link"] == "down"
    env.delete(c["id"])


