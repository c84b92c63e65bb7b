"""`make demo` does what the README says: cloud, simulated building, provisioned Box, live data."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path


def test_demo_shows_live_values_and_stops_everything(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "cloud.demo", "--duration", "8", "--dir", str(tmp_path / "demo")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "Provisioned: this Box is DEMO-BOX-1" in r.stdout
    assert "Box DEMO-BOX-1: online; 25 points in the cloud" in r.stdout
    assert "ahu1.supply_temp" in r.stdout and "degC" in r.stdout
    # the users' API: its URL and a key for the demo account (the README's curl calls use them)
    assert re.search(r"demo: users' API: https://localhost:\d+/v1", r.stdout)
    key = (tmp_path / "demo" / "api-key").read_text().strip()
    assert f"API key of the demo account (also in {tmp_path / 'demo' / 'api-key'}): {key}" in r.stdout
    assert (tmp_path / "demo" / "api-key").stat().st_mode & 0o077 == 0
    # a customer's webhook receiver on this machine (the operator's exception for 127.0.0.1/32): the
    # connector made and confirmed through the API, deliveries verified both ways as they arrive
    assert re.search(r"demo: POST /v1/connectors -> webhook connector \d+ to https://127.0.0.1:\d+/hook", r.stdout)
    assert "the receiver answered its token: enabled" in r.stdout
    assert "demo: first webhook delivery at the local receiver" in r.stdout
    cloud_log = (tmp_path / "demo" / "cloud.log").read_text()  # the operator's exception, said at start
    assert "webhooks may be sent to the operator's private networks 127.0.0.1/32" in cloud_log
    shown = re.findall(r"Webhook https://127.0.0.1:\d+/hook: (\d+) items in \d+ deliveries, Standard Webhooks "
                       r"signatures verified, item HMACs (\d+) ok / 0 bad; 0 refused", r.stdout)
    assert shown and int(shown[-1][0]) == int(shown[-1][1]) > 0, r.stdout[-2000:]
    log = (tmp_path / "demo" / "webhook.log").read_text()
    assert "Standard Webhooks signature ok; item HMACs" in log and "REFUSED" not in log
    assert (tmp_path / "demo" / "webhook-secret").stat().st_mode & 0o077 == 0
    # a customer's own broker on this machine (a second Mosquitto, TLS from the demo CA, passwords; the
    # operator's exception for MQTT brokers, 127.0.0.1/32 on its port): the MQTT connector made through
    # the API, connected, and the customer's subscriber receiving the Box's points
    assert re.search(r"demo: POST /v1/connectors -> MQTT connector 2 to mqtts://127.0.0.1:\d+ \(user boxcloud\)",
                     r.stdout)
    assert "demo: GET /v1/connectors/2 -> link connected" in r.stdout
    assert "MQTT connectors may connect to brokers in the operator's private networks 127.0.0.1/32" in cloud_log
    shown = re.findall(r"Customer broker mqtts://127.0.0.1:\d+: (\d+) messages \(\d+ samples, (\d+) topics\) at the "
                       r"customer's subscriber; MQTT connector 2: link connected, (\d+) delivered", r.stdout)
    assert shown and int(shown[-1][0]) > 0 and int(shown[-1][1]) == 25 and int(shown[-1][2]) > 0, r.stdout[-2000:]
    got = (tmp_path / "demo" / "customer-broker.log").read_text()
    assert re.search(r"customer-broker: boxcloud/DEMO-BOX-1/ahu1\.supply_temp: DEMO-BOX-1/\d+/\d+, 1 samples", got)
    assert (tmp_path / "demo" / "customer-broker" / "passwd").stat().st_mode & 0o077 == 0
    audit = subprocess.run([sys.executable, "-m", "cloud.cli", "--home", str(tmp_path / "demo" / "cloud"), "audit",
                            "list", "--json"], capture_output=True, text=True, timeout=60)
    reach = {a["action"]: a for a in json.loads(audit.stdout) if a["action"].startswith("platform.")}
    assert set(reach) == {"platform.webhook_reach", "platform.mqtt_reach"}, audit.stdout[-2000:]
    assert reach["platform.mqtt_reach"]["detail"]["networks"] == "127.0.0.1/32"
    for name in ("boxd", "building", "cloud", "webhook", "customer-broker", "customer-mosquitto"):
        assert f"demo: stopped {name} (exit 0)" in r.stdout
    # nothing left behind: the demo's broker is gone with it
    pid_file = tmp_path / "demo" / "cloud" / "broker" / "mosquitto.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text())
        assert not Path(f"/proc/{pid}").exists() or "mosquitto" not in Path(f"/proc/{pid}/cmdline").read_text()
