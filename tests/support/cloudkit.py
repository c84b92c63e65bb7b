"""A real reference cloud (Mosquitto with mTLS, receiver, enrollment) for tests, and Box identities."""

from __future__ import annotations

import datetime as dt
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.enums import CallbackAPIVersion

from cloud.platform import Cloud, Settings
from tests.support.wait import free_port, wait_for
from trust import identity, tls
from trust.enroll import enroll


def make_cloud(home: Path, *, bind: str = "127.0.0.1", names: list[str] | None = None,
               database: Path | None = None) -> Cloud:
    """Create (not start) a cloud on free ports under `home` (its database elsewhere if `database`)."""
    c = Cloud(home, database=database)
    c.init(Settings("localhost", free_port(), free_port(), bind, api_port=free_port()), names)
    return c


def provision(cloud: Cloud, state_dir: Path, serial: str) -> identity.Identity:
    """Enroll a Box through the real HTTPS endpoint, as `boxctl provision` does."""
    token, _ = cloud.add_box(serial, 600)
    enroll(state_dir, f"https://localhost:{cloud.settings.enroll_port}", token, cloud.pki.root_cert)
    return identity.load(state_dir)


@dataclass
class Client:
    """A paho MQTT 5 client for assertions: records what it receives and what happened."""

    client: mqtt.Client
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    connected: threading.Event = field(default_factory=threading.Event)
    disconnected: threading.Event = field(default_factory=threading.Event)
    refused: list[str] = field(default_factory=list)
    subacks: list[list[int]] = field(default_factory=list)
    acks: dict[int, int] = field(default_factory=dict)  # message id -> PUBACK reason code (0: accepted)

    def topics(self) -> list[str]:
        return [t for t, _ in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def mqtt_client(
    cloud: Cloud, client_id: str, cert: Path | None, key: Path | None, *, ca: Path | None = None,
    connect: bool = True,
) -> Client:
    """Connect a test client with the given certificate (or none) and start its loop."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    ctx = tls.client_context(ca or cloud.pki.root_cert, cert, key)
    c.tls_set_context(ctx)
    w = Client(c)

    def on_connect(_c: object, _u: object, _f: object, rc: object, _p: object) -> None:
        if getattr(rc, "is_failure", False):
            w.refused.append(str(rc))
        else:
            w.connected.set()

    c.on_connect = on_connect
    c.on_disconnect = lambda *_a: w.disconnected.set()
    c.on_message = lambda _c, _u, m: w.messages.append((m.topic, bytes(m.payload)))
    c.on_subscribe = lambda _c, _u, _m, rcs, _p: w.subacks.append([r.value for r in rcs])
    c.on_publish = lambda _c, _u, mid, rc, _p: w.acks.__setitem__(mid, rc.value)
    if connect:
        c.connect("localhost", cloud.settings.broker_port, 30)
        c.loop_start()
    return w


def service_client(cloud: Cloud, role: str, name: str) -> Client:
    """A client with a service identity "cloud:<name>" that has the broker role `role`.

    The identity is its own (not the running receiver's), so it takes over no session.
    """
    d = cloud.pki.dir
    if not (d / f"svc-{name}.crt").exists():
        cloud.pki.issue_service(name)
        cloud.broker.admin([{"command": "createClient", "username": f"cloud:{name}",
                             "roles": [{"rolename": role}]}])
    w = mqtt_client(cloud, f"cloud:{name}", d / f"svc-{name}.crt", d / f"svc-{name}.key")
    wait_for(w.connected.is_set, 10, f"cloud:{name} to connect")
    return w


def forge_cert(cloud: Cloud, out: Path, cn: str, *, not_before: dt.datetime, not_after: dt.datetime,
               own_ca: bool = False) -> tuple[Path, Path]:
    """A client certificate for `cn` with chosen validity, from the platform CA or from a CA of its own."""
    key = ec.generate_private_key(ec.SECP256R1())
    if own_ca:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Box Issuing CA")])  # same name, other key
        issuer_name, sign_key, chain_tail = ca_name, ca_key, b""
    else:
        issuing = x509.load_pem_x509_certificate(cloud.pki.issuing_cert.read_bytes())
        loaded = serialization.load_pem_private_key(cloud.pki.issuing_key.read_bytes(), None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        issuer_name, sign_key = issuing.subject, loaded
        chain_tail = issuing.public_bytes(serialization.Encoding.PEM)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(sign_key, hashes.SHA256())
    )
    out.mkdir(parents=True, exist_ok=True)
    certf, keyf = out / f"{cn}.crt", out / f"{cn}.key"
    certf.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + chain_tail)
    keyf.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    keyf.chmod(0o600)
    return certf, keyf


def connect_fails(cloud: Cloud, client_id: str, cert: Path | None, key: Path | None,
                  ca: Path | None = None) -> str:
    """Try a connection that must not get through; returns how it failed."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.tls_set_context(tls.client_context(ca or cloud.pki.root_cert, cert, key))
    result: list[str] = []
    done = threading.Event()

    def on_connect(_c: object, _u: object, _f: object, rc: object, _p: object) -> None:
        result.append(f"connected: {rc}" if not getattr(rc, "is_failure", False) else f"refused: {rc}")
        done.set()

    def on_disconnect(*_a: object) -> None:
        result.append("disconnected")
        done.set()

    c.on_connect, c.on_disconnect = on_connect, on_disconnect
    try:
        c.connect("localhost", cloud.settings.broker_port, 30)
    except (OSError, ssl.SSLError) as e:
        return f"handshake failed: {e}"
    c.loop_start()
    try:
        wait_for(done.is_set, 10, "the broker's verdict")
        # a session that the broker accepted would say "connected"; it must not
        return result[0]
    finally:
        c.disconnect()
        c.loop_stop()
