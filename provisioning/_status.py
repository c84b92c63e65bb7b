"""`boxctl status`: identity, certificate expiry, daemon state and a live link check.

When boxd runs, its own link state is reported (from `<state>/run/status.json`)
and no second MQTT session is opened: with the client id forced to the Box ID,
a second session would take over the daemon's. When boxd is not running, the
check performs the TLS handshake and an MQTT CONNECT itself, keeping the Box's
persistent session intact (no clean start, nothing acknowledged).
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from boxd import tls
from boxd.identity import Identity
from boxd.uplink import session_properties
from provisioning._enroll import explain_network_error


@dataclass
class Report:
    """Lines to show, and whether everything is fine."""

    lines: list[str] = field(default_factory=list)
    ok: bool = True

    def add(self, label: str, text: str, ok: bool = True) -> None:
        """Add a line; a line that is not ok makes the report fail."""
        self.lines.append(f"{label + ':':<14} {text}")
        self.ok = self.ok and ok


def daemon_state(state_dir: Path, max_age_s: float = 15.0) -> dict[str, object] | None:
    """The running daemon's status file, or None when boxd is not running."""
    try:
        st = json.loads((state_dir / "run" / "status.json").read_text())
        os.kill(int(st["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if time.time() - float(st.get("ts", 0)) > max_age_s:
        return None
    return dict(st)


def tls_check(ident: Identity, timeout: float = 10.0) -> str:
    """Handshake with the broker using the Box's identity; returns the TLS version.

    Raises:
        OSError, ssl.SSLError: the handshake failed.
    """
    ctx = tls.client_context(ident.ca_file, ident.cert_file, ident.key_file, crl_file=ident.crl_file)
    with socket.create_connection((ident.broker_host, ident.broker_port), timeout=timeout) as raw, \
            ctx.wrap_socket(raw, server_hostname=ident.broker_host) as s:
        # In TLS 1.3 the server judges our certificate after the client's side of the
        # handshake is done: a refusal arrives as an alert on the first read.
        s.settimeout(1.0)
        try:
            s.recv(1)
        except TimeoutError:
            pass  # silence: the broker accepted us and waits for MQTT
        return s.version() or "TLS"


def mqtt_check(ident: Identity, timeout: float = 10.0) -> str:
    """Connect to the broker as the Box and disconnect; returns "" or why it failed."""
    result: list[str] = []
    done = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=ident.box_id, protocol=mqtt.MQTTv5, manual_ack=True)
    c.tls_set_context(tls.client_context(ident.ca_file, ident.cert_file, ident.key_file, crl_file=ident.crl_file))

    def on_connect(_c: mqtt.Client, _u: object, _f: object, rc: object, _p: object) -> None:
        result.append("" if not getattr(rc, "is_failure", True) else f"the broker refused the Box: {rc}")
        done.set()

    def on_disconnect(*_a: object) -> None:
        if not result:
            result.append("the broker closed the connection (revoked or unknown certificate?)")
        done.set()

    c.on_connect, c.on_disconnect = on_connect, on_disconnect
    props = session_properties()  # boxd's expiry: the Box's session (and queued commands) stay
    c.connect(ident.broker_host, ident.broker_port, 30, clean_start=False, properties=props)
    c.loop_start()
    try:
        if not done.wait(timeout):
            return "the broker did not answer the MQTT connect in time"
        return result[0]
    finally:
        c.disconnect()
        c.loop_stop()


def status(state_dir: Path, ident: Identity) -> Report:
    """Build the status report."""
    r = Report()
    r.add("Box ID", ident.box_id)
    days = ident.days_left()
    exp = ident.not_after().strftime("%Y-%m-%d")
    if days < 0:
        r.add("Certificate", f"EXPIRED on {exp}: the Box cannot connect; renew or re-provision it", False)
    elif days < 30:
        r.add("Certificate", f"valid until {exp}, only {days:.0f} days left: renew it soon")
    else:
        r.add("Certificate", f"valid until {exp} ({days:.0f} days left)")
    r.add("Platform", f"{ident.broker_host}:{ident.broker_port}")
    where = f"the platform broker {ident.broker_host}:{ident.broker_port}"
    try:
        version = tls_check(ident)
        r.add("TLS", f"OK ({version}), the platform's certificate is verified and the Box's accepted")
    except (OSError, ssl.SSLError) as e:
        r.add("TLS", explain_network_error(e, where), False)
        return r
    st = daemon_state(state_dir)
    if st is not None:
        if st.get("connected"):
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(str(st.get("connected_since", 0)))))
            r.add("boxd", f"running (pid {st['pid']}), connected to the platform since {since}")
        else:
            r.add("boxd", f"running (pid {st['pid']}), NOT connected: {st.get('last_error') or 'connecting'}", False)
        r.add("Queue", f"{st.get('queue_samples', 0)} sample(s) waiting to be sent")
        return r
    try:
        why = mqtt_check(ident)
    except (OSError, ssl.SSLError) as e:
        why = explain_network_error(e, where)
    r.add("MQTT", why or "OK, the Box can log in to the platform", not why)
    r.add("boxd", "not running")
    return r
