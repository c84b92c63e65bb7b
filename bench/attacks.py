"""Measure what one hostile Box costs the others (issue 12, finding 2): latency and the cloud's memory.

A reference cloud runs as `boxcloud run` in its own process (so that its memory is its own);
two Boxes are enrolled through the real HTTPS endpoint and publish over mTLS to the real
Mosquitto. The victim sends a data batch and a heartbeat every 0.25 s for the whole run; the
attacker, phase after phase:

- ``baseline``: nothing;
- ``bombs``: 60 data payloads of ~4 KB that inflate to four million empty CBOR maps;
- ``tables``: 8 point tables of 100,000 points each (distinct names: ~180 KB each on the wire).

For each phase (the attack, then `--settle` seconds), the victim's latency (from its publish
time, in the batch, to the cloud's commit of the batch: `batches.received`; and for heartbeats,
their time to the `health` row) as p50 / p99 / max, the cloud process's RSS at the end of the
phase and its peak (VmHWM), and its CPU seconds.

    .venv/bin/python -m bench.attacks [--settle 10]

Figures, never assertions. It runs against any checkout whose `boxcloud` and `boxctl` have
these commands, so the same script measured the code before the fix.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.measure import print_phases
from drivers import PointInfo
from proto import topics, wire
from proto.topics import Up
from trust import tls

VICTIM = "CALM-1"
ATTACKERS = {"bombs": "FLOOD-1", "tables": "FLOOD-2"}  # one per attack: each starts with a full budget
TABLE = [PointInfo("meter.p", "kW", "float32"), PointInfo("meter.q", "kvar", "float32")]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(home: Path, *args: str, stdin: str | None = None) -> str:
    r = subprocess.run([sys.executable, "-m", "cloud.cli", "--home", str(home), *args], capture_output=True,
                       text=True, input=stdin, timeout=120, check=True)
    return r.stdout


def _enroll(home: Path, state: Path, serial: str, port: int) -> Path:
    out = _cli(home, "box", "add", serial)
    token = next(w for w in out.split() if w.count("-") == 5)
    r = subprocess.run([sys.executable, "-m", "provisioning.cli", "--state-dir", str(state), "provision", "--server",
                        f"https://localhost:{port}", "--token", token, "--ca", str(home / "pki" / "root.crt")],
                       capture_output=True, text=True, timeout=120)
    if r.returncode:
        raise SystemExit(f"bench.attacks: cannot enroll {serial}: {r.stderr.strip()}")
    return state / "identity"


def _client(ident: Path, box_id: str, port: int) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=box_id, protocol=mqtt.MQTTv5)
    c.tls_set_context(tls.client_context(ident / "ca.crt", ident / "box.crt", ident / "box.key"))
    c.max_inflight_messages_set(100)
    c.connect("localhost", port, 60)
    c.loop_start()
    return c


def _proc_figures(pid: int) -> tuple[float, float, float]:
    """(RSS MB, peak RSS MB, CPU s) of a process."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    rss, hwm = (int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return rss, hwm, (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


class Victim(threading.Thread):
    """Publishes a batch and a heartbeat every 0.25 s; remembers when it sent each."""

    def __init__(self, client: mqtt.Client) -> None:
        super().__init__(daemon=True)
        self.client, self.seq, self.stop = client, 0, threading.Event()
        client.publish(topics.up(VICTIM, Up.STATUS), b'{"v":1,"online":true}', 1, retain=True)
        client.publish(topics.up(VICTIM, Up.META), wire.encode_table(TABLE), 1, retain=True)

    def run(self) -> None:
        tid = wire.table_id(TABLE)
        while not self.stop.wait(0.25):
            self.seq += 1
            now = int(time.time() * 1000)
            self.client.publish(topics.up(VICTIM, Up.DATA), wire.encode_batch(
                42, self.seq, tid, now, [wire.encode_group(0, 0, [1.5, float(self.seq)], {})]), 1)
            self.client.publish(topics.up(VICTIM, Up.HEALTH), wire.encode_doc(
                {"v": 1, "ts": now, "epoch": 42, "last_seq": self.seq, "oldest_seq": self.seq, "hb_s": 1,
                 "clock_ok": True}), 1)


def _latencies(db: Path, since_ms: int, until_ms: int) -> list[float]:
    """ms from a victim batch's publish (its base time) to its commit in the cloud."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT DISTINCT b.received, s.ts_ms FROM batches b JOIN samples s ON s.box_id=b.box_id "
                            "AND s.point='meter.q' AND s.value=CAST(b.seq AS REAL) WHERE b.box_id=? AND s.ts_ms "
                            "BETWEEN ? AND ?", (VICTIM, since_ms, until_ms)).fetchall()
    return sorted(received * 1000 - ts for received, ts in rows)


def _pct(xs: list[float], p: float) -> float:
    return round(xs[min(len(xs) - 1, int(len(xs) * p))], 1) if xs else float("nan")


def _bomb() -> bytes:
    body = b"\x9a" + (4_000_000).to_bytes(4, "big") + b"\xa0" * 4_000_000
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return bytes([wire.VERSION | 0x80]) + c.compress(body) + c.flush()


def run(settle: float) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="bench-attacks-") as tmp:
        home = Path(tmp) / "cloud"
        broker_port, enroll_port = _free_port(), _free_port()
        _cli(home, "init", "--broker-port", str(broker_port), "--enroll-port", str(enroll_port))
        cloud = subprocess.Popen([sys.executable, "-m", "cloud.cli", "--home", str(home), "run"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        clients: list[mqtt.Client] = []
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    ctx = ssl.create_default_context(cafile=str(home / "pki" / "root.crt"))
                    with ctx.wrap_socket(__import__("socket").create_connection(("localhost", enroll_port), 2),
                                         server_hostname="localhost"):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            boxes = (VICTIM, *ATTACKERS.values())
            idents = {b: _enroll(home, Path(tmp) / b, b, enroll_port) for b in boxes}
            by_box = {b: _client(idents[b], b, broker_port) for b in boxes}
            clients += by_box.values()
            victim_c = by_box[VICTIM]
            time.sleep(1)
            victim = Victim(victim_c)
            victim.start()
            time.sleep(2)
            bomb = _bomb()
            tables = [wire.encode_table([PointInfo(f"d{n}.p{i}", "", "f") for i in range(wire.MAX_POINTS)])
                      for n in range(8)]
            phases: list[tuple[str, list[tuple[str, bytes]]]] = [
                ("baseline", []), ("bombs", [("data", bomb)] * 60), ("tables", [("meta", t) for t in tables])]
            out: dict[str, dict[str, float]] = {}
            for name, messages in phases:
                t0 = int(time.time() * 1000)
                cpu0 = _proc_figures(cloud.pid)[2]
                for leaf, payload in messages:
                    box = ATTACKERS[name]
                    by_box[box].publish(topics.up(box, Up(leaf)), payload, 1)
                time.sleep(settle)
                t1 = int(time.time() * 1000)
                time.sleep(2)  # the last victim batches of the phase reach the database
                lat = _latencies(home / "cloud.db", t0, t1)
                rss, hwm, cpu = _proc_figures(cloud.pid)
                out[name] = {"victim batches": len(lat), "victim latency p50, ms": _pct(lat, 0.5),
                             "victim latency p99, ms": _pct(lat, 0.99), "victim latency max, ms": _pct(lat, 1.0),
                             "cloud RSS after, MB": round(rss, 1), "cloud peak RSS, MB": round(hwm, 1),
                             "cloud CPU s": round(cpu - cpu0, 2)}
            victim.stop.set()
            alerts = _cli(home, "alerts", "--all")
            out["alerts"] = {f"{b} alerts": float(sum(b in line for line in alerts.splitlines())) for b in boxes}
            return out
        finally:
            for c in clients:
                c.disconnect()
                c.loop_stop()
            cloud.send_signal(signal.SIGTERM)
            try:
                cloud.wait(30)
            except subprocess.TimeoutExpired:
                cloud.kill()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settle", type=float, default=10.0, help="seconds measured after each attack (default 10)")
    args = p.parse_args()
    figures = run(args.settle)
    alerts = figures.pop("alerts")
    print(", ".join(f"{k}: {v:g}" for k, v in alerts.items()))
    print_phases(figures)


if __name__ == "__main__":
    main()
