"""A customer's own MQTT broker for the MQTT connector's tests: a second, separate Mosquitto with its
own configuration and its own CA, in a network namespace on a public-looking address.

The namespaces are `tests.support.hookkit`'s (the platform's connector threads enter the box
namespace, the broker listens in the field one at `hookkit.PUBLIC`: the platform refuses every
private or loopback address, so a test broker needs a global one). Its listeners: 8883 (TLS,
user name and password from its own password file), 8884 (TLS, client certificates from the
customer's CA required, the certificate's name as the user name), both with the customer CA's
server certificate for `BROKER`; and a Unix socket without TLS (a file, reached from any
namespace; a password still) for the customer's own applications in the test: the subscriber that records what
arrives (`Subscriber`, a persistent session, so a broker restart loses nothing queued for it)
and the publisher of commands. Persistence is on (saved every second): stopped, frozen or
killed, the broker keeps its sessions. The ports are fixed (8883 and 8884 are what the platform
allows) and cannot clash: the namespace is the test's own.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cloud import customer_broker
from cloud.pki import IssuedFiles, Pki
from tests.support.hookkit import PUBLIC
from tests.support.wait import wait_for

BROKER = "broker.customer.example"
USER, PASSWORD = "platform", "customer-broker-pw"
APP, APP_PASSWORD = "customer-app", "customer-app-pw"  # the customer's own applications


class CustomerBroker:
    """Mosquitto in the field namespace (see the module docstring). Constructor: files only."""

    def __init__(self, workdir: Path, namespace: str) -> None:
        self.dir, self.ns = workdir / "customer-broker", namespace
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = Pki(workdir / "customer-ca")
        self.ca.init()
        server = self.ca.issue_server("broker", [BROKER, PUBLIC])
        self.client: IssuedFiles = self.ca.issue_service("platform")  # "cloud:platform", for 8884
        self.socket = self.dir / "local.sock"
        customer_broker.write_passwords(self.dir / "passwd", {USER: PASSWORD, APP: APP_PASSWORD})
        tls = customer_broker.tls(self.ca.ca_bundle, server.cert, server.key)
        # 8884 takes certificates instead of passwords (the certificate's name as the user name)
        (self.dir / "mosquitto.conf").write_text(customer_broker.config(self.dir / "passwd", [
            f"listener 8883 {PUBLIC}\n{tls}",
            f"listener 8884 {PUBLIC}\n{tls}require_certificate true\nuse_identity_as_username true\n",
            f"listener 0 {self.socket}\n"], persistence=self.dir))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.socket.unlink(missing_ok=True)
        with (self.dir / "mosquitto.log").open("ab") as log:
            self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, customer_broker.mosquitto(), "-c",
                                          str(self.dir / "mosquitto.conf")], stdout=log, stderr=log)
        wait_for(lambda: self.socket.exists() or self.proc is None or self.proc.poll() is not None, 15,
                 "the customer's broker to listen")
        assert self.proc.poll() is None, (self.dir / "mosquitto.log").read_text()[-2000:]

    def stop(self) -> None:
        """SIGTERM: the broker saves its sessions and exits."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(15)
            self.proc = None

    def freeze(self) -> None:
        """SIGSTOP: the broker reads nothing and acknowledges nothing."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)  # `ip netns exec` ran mosquitto in its own process

    def kill(self) -> None:
        """SIGKILL (a crash): what it had not read is lost; its sessions are as last saved (every second)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(15)
        self.proc = None

    def revive(self) -> None:
        """Running again, whatever a test left it (stopped, killed, frozen): one test's failure must not
        fail the next ones for a broker it did not bring back."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            self.start()
        else:
            self.proc.send_signal(signal.SIGCONT)

    def saved_after(self, t: float) -> bool:
        """Whether the broker saved its sessions (every second) after the time `t` (time.time())."""
        db = self.dir / "mosquitto.db"
        return db.exists() and db.stat().st_mtime > t

    def unread(self, port: int = 8883) -> int:
        """Bytes waiting in the broker's sockets on `port`, not read by it (Recv-Q)."""
        out = subprocess.run(["ip", "netns", "exec", self.ns, "ss", "-tnH", "state", "established",
                              f"( sport = :{port} )"], capture_output=True, text=True, timeout=15).stdout
        return sum(int(line.split()[0]) for line in out.splitlines() if line.strip())

    def ca_pem(self) -> str:
        return self.ca.root_cert.read_text()


@dataclass
class Subscriber:
    """A customer's application on the broker's Unix socket: records every message, in arrival order."""

    client: mqtt.Client
    got: list[tuple[str, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def messages(self, prefix: str = "") -> list[tuple[str, Any]]:
        with self.lock:
            return [(t, json.loads(p)) for t, p in self.got if t.startswith(prefix)]

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()


def subscriber(broker: CustomerBroker, name: str, *filters: str) -> Subscriber:
    """Connected, subscribed (QoS 1) with a persistent session: it reconnects by itself after a restart."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv311, clean_session=False,
                    transport="unix")
    s = Subscriber(c)
    subscribed = threading.Event()

    def on_message(_c: object, _u: object, m: mqtt.MQTTMessage) -> None:
        with s.lock:
            s.got.append((m.topic, bytes(m.payload)))

    def on_connect(_c: object, _u: object, _f: object, rc: Any, _p: object) -> None:
        if not rc.is_failure:
            c.subscribe([(f, 1) for f in filters])

    c.on_message = on_message
    c.on_connect = on_connect
    c.on_subscribe = lambda *_a: subscribed.set()
    c.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]  # seconds: paho waits floats too
    c.username_pw_set(APP, APP_PASSWORD)
    c.connect(str(broker.socket), 1, 30)  # the port is not used over a Unix socket
    c.loop_start()
    wait_for(subscribed.is_set, 15, f"{name} subscribed")
    return s
