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

from boxd.uplink import session_properties
from trust import tls
from trust.identity import Identity


@dataclass
class Report:
    """Lines to show, the same for scripts (`doc`, `boxctl status --json`), and whether all is fine."""

    lines: list[str] = field(default_factory=list)
    ok: bool = True
    doc: dict[str, object] = field(default_factory=dict)

    def add(self, label: str, text: str, ok: bool = True, **fields: object) -> None:
        """Add a line (and its fields for scripts); a line that is not ok makes the report fail."""
        self.lines.append(f"{label + ':':<14} {text}")
        self.ok = self.ok and ok
        self.doc.update(fields)
        self.doc["ok"] = self.ok


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
    r.add("Box ID", ident.box_id, box_id=ident.box_id)
    days = ident.days_left()
    exp = ident.not_after().strftime("%Y-%m-%d")
    r.doc["cert_expires"] = ident.not_after().strftime("%Y-%m-%dT%H:%M:%SZ")
    if days < 0:
        r.add("Certificate", f"EXPIRED on {exp}: the Box cannot connect; renew or re-provision it", False)
    elif days < 30:
        r.add("Certificate", f"valid until {exp}, only {days:.0f} days left: renew it soon")
    else:
        r.add("Certificate", f"valid until {exp} ({days:.0f} days left)")
    r.add("Platform", f"{ident.broker_host}:{ident.broker_port}", platform=f"{ident.broker_host}:{ident.broker_port}")
    where = f"the platform broker {ident.broker_host}:{ident.broker_port}"
    try:
        version = tls_check(ident)
        r.add("TLS", f"OK ({version}), the platform's certificate is verified and the Box's accepted", tls="ok")
    except (OSError, ssl.SSLError) as e:
        r.add("TLS", tls.explain(e, where), False, tls=tls.explain(e, where))
        _daemon_lines(r, daemon_state(state_dir))
        return r
    st = daemon_state(state_dir)
    if st is None:
        try:
            why = mqtt_check(ident)
        except (OSError, ssl.SSLError) as e:
            why = tls.explain(e, where)
        r.add("MQTT", why or "OK, the Box can log in to the platform", not why, mqtt=why or "ok")
    _daemon_lines(r, st)
    return r


def _daemon_lines(r: Report, st: dict[str, object] | None) -> None:
    """What the running daemon says: its link, queue, configuration and each bus."""
    if st is None:
        r.add("boxd", "not running", daemon=None)
        return
    pid = st.get("pid")
    if st.get("connected"):
        since = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(float(str(st.get("connected_since", 0)))))
        r.add("boxd", f"running (pid {pid}), connected to the platform since {since}")
    else:
        r.add("boxd", f"running (pid {pid}), NOT connected: {st.get('last_error') or 'connecting'}", False)
    r.add("Queue", f"{st.get('queue_samples', 0)} sample(s) waiting to be sent")
    version = st.get("config_version")
    digest = str(st.get("config_sha256") or "")[:12]
    r.add("Configuration", (f"version {version} from the platform" if version is not None
                            else "written on the Box (not pushed by the platform)")
          + f", {st.get('points', '?')} point(s), {st.get('buses', '?')} bus(es)" + (f", sha256 {digest}" if digest
                                                                                     else ""))
    buses = st.get("bus_health")
    silent = []
    if isinstance(buses, dict):
        for name, b in sorted(buses.items()):
            if not isinstance(b, dict):
                continue
            state = "polling" if b.get("polling") else "NO GOOD READING YET"
            if not b.get("polling"):
                silent.append(name)
            r.add(f"  bus {name}", f"{state}; {b.get('points', '?')} point(s), {b.get('requests', 0)} requests, "
                                   f"{b.get('errors', 0)} errors")
    r.doc["daemon"] = {k: st.get(k) for k in ("pid", "connected", "last_error", "queue_samples", "config_version",
                                             "config_sha256", "points", "buses", "bus_health", "version")}
    if silent:
        r.lines.append(f"{'':<14} no good reading yet from {', '.join(silent)}: check wiring and addressing "
                       f"('boxctl read DEVICE.POINT' says why)")
