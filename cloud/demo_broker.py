"""The MQTT part of `make demo`: a customer's own broker on this machine, an application of theirs
subscribed to it, and the platform's MQTT connector to it, made through the users' API.

The broker is a second, separate Mosquitto (`cloud.customer_broker`'s configuration): TLS with a
certificate from the demo CA (the webhook receiver's) for 127.0.0.1, password authentication, on
a free port of 127.0.0.1, its files in `demo-data/customer-broker/`. The platform connects to no
private address; the demo's cloud is made with the operator's exception for MQTT brokers,
127.0.0.1/32 on that port only (`Settings.mqtt_allow_networks`, `mqtt_ports`: docs/integrations.md,
"Your own networks"). `connector` does what an integrator does, over HTTPS with the owner's
credentials: a service account that may read the demo's Box, an MQTT connector acting as it, with
the broker's CA and the platform's user name and password (taken once by the API, sealed). The
subscriber (`cloud.demo_subscriber`, its own process) prints what arrives in `customer-broker.log`.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from boxkit.files import private_dir, write_secret
from cloud import customer_broker
from cloud.demo_hook import owner_api, read_stats
from cloud.pki import Pki

if TYPE_CHECKING:
    from cloud.demo import Demo
    from cloud.platform import Cloud, Settings
    from cloud.store import Store

SERVICE_ACCOUNT = "mqtt@example.com"
PLATFORM_USER, APP_USER = "boxcloud", "customer-app"


class CustomerBroker:
    """The customer's broker and their subscriber: files, processes, what arrived. The constructor
    does no I/O."""

    def __init__(self, root: Path, port: int, ca: Pki) -> None:
        self.root, self.port, self.ca = root, port, ca
        self.dir = root / "customer-broker"
        self.url = f"mqtts://127.0.0.1:{port}"
        self.stats_file = root / "customer-broker.json"
        self.platform_password = ""
        self.connector_id = 0  # once made (`connector`)

    def settings(self, s: Settings) -> Settings:
        """The broker's certificate (from the demo CA, initialised already, for the address 127.0.0.1);
        the cloud's settings `s` with the operator's exception for this broker (127.0.0.1/32, its port)."""
        self.ca.issue_server("customer-broker", ["127.0.0.1"])
        return dataclasses.replace(s, mqtt_allow_networks=("127.0.0.1/32",), mqtt_ports=(self.port,))

    def spawn(self, demo: Demo) -> None:
        """The broker's password file and configuration, then the broker and the subscriber."""
        private_dir(self.dir)
        self.platform_password, app_password = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
        passwd = self.dir / "passwd"
        customer_broker.write_passwords(passwd, {PLATFORM_USER: self.platform_password, APP_USER: app_password})
        write_secret(self.dir / "app-password", app_password.encode() + b"\n")
        server = self.ca.dir / "customer-broker"
        tls = customer_broker.tls(self.ca.root_cert, server.with_suffix(".crt"), server.with_suffix(".key"))
        listener = f"listener {self.port} 127.0.0.1\n{tls}"
        (self.dir / "mosquitto.conf").write_text(customer_broker.config(passwd, [listener]))
        print(f"demo: starting a customer's broker (Mosquitto, {self.url}, TLS with a certificate from the demo "
              f"CA, password authentication; its files in {self.root.name}/customer-broker/), and an application "
              f"of theirs subscribed to it (what it receives: {self.root.name}/customer-broker.log)")
        demo.spawn_exe("customer-mosquitto", customer_broker.mosquitto(), "-c", str(self.dir / "mosquitto.conf"))
        demo.spawn("customer-broker", "cloud.demo_subscriber", "--port", str(self.port), "--ca", str(self.ca.root_cert),
                   "--username", APP_USER, "--password-file", str(self.dir / "app-password"),
                   "--stats", str(self.stats_file))

    def stats(self) -> dict[str, Any]:
        return read_stats(self.stats_file)

    def line(self, store: Store) -> str:
        """What the customer's subscriber received, and the connector as the platform sees it (what
        `GET /v1/connectors/<id>` shows: its link, messages delivered, its queue)."""
        s = self.stats()
        got = (f"{s['messages']} messages ({s['samples']} samples, {s['points']} topics) at the customer's "
               "subscriber" if s.get("messages") else "nothing received yet")
        row, state = store.mqtt_connector(self.connector_id) or (None, None)
        if row is None or state is None:
            return f"Customer broker {self.url}: {got}"
        return (f"Customer broker {self.url}: {got}; MQTT connector {row.id}: link {state.link}, "
                f"{row.delivered} delivered, {state.queued} queued")


def connector(cloud: Cloud, password: str, broker: CustomerBroker, demo: Demo) -> int:
    """The demo's MQTT connector, made through the users' API; its id, once its link is up.

    Raises:
        RuntimeError: the API refused a step (said with its answer) or the link did not come up.
    """
    with owner_api(cloud, password, demo) as call:
        sa = call("POST", "/users", {"name": SERVICE_ACCOUNT, "kind": "service"})
        call("POST", "/bindings", {"user_id": sa["id"], "role": "viewer", "scope_kind": "account", "scope": ""})
        c = call("POST", "/connectors", {
            "name": "demo-customer-broker", "kind": "mqtt", "service_account_id": sa["id"], "host": "127.0.0.1",
            "port": broker.port, "ca_pem": broker.ca.root_cert.read_text(), "auth": "basic",
            "username": PLATFORM_USER, "password": broker.platform_password})
        print(f"demo: POST /v1/connectors -> MQTT connector {c['id']} to {broker.url} (user {PLATFORM_USER}), acting "
              f"as service account {SERVICE_ACCOUNT} (viewer)")
        deadline = time.monotonic() + 30
        while (state := call("GET", f"/connectors/{c['id']}"))["link"] != "connected":
            demo.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the MQTT connector did not connect: {state['last_error'] or state['link']}")
            time.sleep(0.1)
        print(f"demo: GET /v1/connectors/{c['id']} -> link connected")
        broker.connector_id = int(c["id"])
        return broker.connector_id
