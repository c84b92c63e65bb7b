"""The MQTT connector's throughput, delay and drain after an outage (issue 19), on the tests' real parts.

The platform's `MqttWorker` (its threads in a network namespace) publishes over TLS (password
authentication, MQTT 5, QoS 1) to a second Mosquitto playing the customer's broker
(`tests.support.mqttkit`, another namespace); a customer's subscriber on that broker records each
message's arrival. Batches are stored through the receiver's own path (`Receiver.handle`), one
point table of 3 points, `--boxes` Boxes in turn; the default data topic, so a message per point
of a batch (3 a batch).

- **steady**: `--batches` batches stored as fast as the store takes them; messages delivered a
  second (first store to last arrival), and each batch's delay from its store to the arrival of
  its first message at the subscriber (p50, p99);
- **outage**: the customer's broker is stopped while `--batches` more are stored, then started:
  the drain rate (messages a second from its start to the last arrival). Counts: sent,
  delivered, duplicated.

    sudo .venv/bin/python -m bench.connector_mqtt [--batches 2000] [--boxes 10]

Each figure is printed with the machine's load (1-minute average) beside it: the machine is
shared. Figures, never assertions. Needs root (network namespaces).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.webhooks import _store  # the same batches, stored the same way
from cloud.api import operator
from cloud.api._secrets import Seeds
from cloud.api.server import seeds_key
from cloud.mqttconn import Backoff, MqttWorker
from cloud.receiver import Receiver
from tests.support.apikit import PASSWORD, add_box, serving
from tests.support.hookkit import PLATFORM, PUBLIC, Dns
from tests.support.mqttkit import BROKER, USER, CustomerBroker, subscriber
from tests.support.mqttkit import PASSWORD as BROKER_PW
from tests.support.netns import FieldNetwork, _ip, enter


def _load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


class _Arrivals:
    """Each batch's first arrival, and the count of messages (duplicates too)."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.messages = 0
        self.seen: set[tuple[str, str]] = set()
        self.dups = 0
        self.lock = threading.Lock()

    def __call__(self, _c: Any, _u: Any, m: Any) -> None:
        now = time.time()
        doc = json.loads(m.payload)
        with self.lock:
            self.messages += 1
            key = (doc["id"], doc["point"])
            if key in self.seen:
                self.dups += 1
            self.seen.add(key)
            self.first.setdefault(doc["id"], now)

    def wait(self, ids: set[str], timeout: float = 900) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if ids <= set(self.first):
                    return
            time.sleep(0.1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=2000)
    p.add_argument("--boxes", type=int, default=10)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp, FieldNetwork(Path(tmp)) as net:
        home = Path(tmp)
        _ip("-n", net.box_ns, "addr", "add", f"{PLATFORM}/24", "dev", net.interface)
        net.add_address(PUBLIC)
        broker = CustomerBroker(home, net.field_ns)
        broker.start()
        arrivals = _Arrivals()
        sub = subscriber(broker, "bench-app", "bench/#")
        sub.client.on_message = arrivals
        with serving(home) as api:
            st = api.cloud.store
            acme, _ = operator.create_account(st, "acme", "owner@acme", PASSWORD)
            boxes = [f"BOX-{i:03d}" for i in range(a.boxes)]
            for b in boxes:
                add_box(api.cloud, b, "acme")
            sa = st.add_user(acme.id, "bridge@acme", "service", None)
            st.bind(acme.id, sa, "viewer", "account", "")
            worker = MqttWorker(st, Seeds(seeds_key(home / "api-seeds.key")), lambda *_a: "", resolver=Dns(
                {BROKER: [[PUBLIC]]}), prepare=lambda: enter(net.box_ns), backoff=Backoff(0.05, 0.5))
            worker.start()
            s = api.session("owner@acme")
            c = s.post(api.url + "/v1/connectors", json={
                "name": "bench", "kind": "mqtt", "service_account_id": sa, "host": BROKER, "auth": "basic",
                "username": USER, "password": BROKER_PW, "ca_pem": broker.ca_pem(), "prefix": "bench"}).json()
            while s.get(f"{api.url}/v1/connectors/{c['id']}").json()["link"] != "connected":
                time.sleep(0.1)
            recv = Receiver(api.cloud.pki, st, "localhost", 1)
            try:
                t0 = time.time()
                stored = _store(recv, boxes, a.batches, 1)
                t_stored = time.time()
                arrivals.wait(set(stored))
                got = arrivals.first
                delays = sorted(got[i] - stored[i] for i in stored if i in got)
                last = max(got[i] for i in stored if i in got)
                n_msgs = 3 * len(delays)
                print(f"steady: {len(stored)} batches stored in {t_stored - t0:.1f} s, {len(delays)} delivered "
                      f"({n_msgs} messages); {n_msgs / (last - t0):.0f} messages/s ({_load()}); delay "
                      f"store->subscriber p50 {statistics.median(delays) * 1000:.0f} ms, p99 "
                      f"{delays[max(int(len(delays) * 0.99) - 1, 0)] * 1000:.0f} ms ({_load()})")

                broker.stop()
                outage = _store(recv, boxes, a.batches, 1_000_000)
                while s.get(f"{api.url}/v1/connectors/{c['id']}").json()["queue"]["messages"] < 3 * a.batches:
                    time.sleep(0.1)
                broker.start()
                back = time.time()
                arrivals.wait(set(outage))
                done = max(got[i] for i in outage if i in got)
                want = 3 * (len(stored) + len(outage))
                print(f"outage: {len(outage)} batches ({3 * len(outage)} messages) stored while the broker was "
                      f"down; drained in {done - back:.1f} s ({3 * len(outage) / (done - back):.0f} messages/s, "
                      f"{_load()}); sent {want} messages, delivered {len(arrivals.seen)}, duplicated {arrivals.dups}")
            finally:
                worker.stop()
                sub.close()
                broker.stop()


if __name__ == "__main__":
    main()
