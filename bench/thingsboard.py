"""ThingsBoard IoT Gateway 3.8.5 on the benchmark workload: the other side of the side-by-side comparison.

One measured run (`run`) of the gateway as published on PyPI (`thingsboard-gateway==3.8.5`, in its
own venv `.venv-tb`, see `ensure_installed`) against the same device farm and the same
measurement code (`bench.measure`) as boxd:

    bench.farm --(Modbus TCP)--> TB gateway --(MQTT, mTLS)--> CountingProxy --> Mosquitto --> platform stub

- Transport: TLS with client certificates (the gateway's documented X.509 security: caCert +
  cert + privateKey), EC P-256 keys from a throwaway CA. The gateway's MQTT client pins TLS 1.2
  (`ssl.PROTOCOL_TLSv1_2` in tb_client.py), so its session is TLS 1.2 whatever the broker allows.
- Modbus: the connector sends ONE REQUEST PER `timeseries` ENTRY (modbus_connector.py,
  `__read_slave_data`): it never merges entries. One entry per point is its basic configuration
  (`reads="per-point"`). 3.8.x also documents "batch reading" (advanced mode: an address range
  "a-b" read in chunks of `maxRegistersPerRequest`, one key per object, named from a tag template
  with ``${address}``). `reads="batch"` (the default) gives it one range per run of same-type
  consecutive registers: the fewest requests its documented configuration allows without reading
  the unused registers between runs (a range over a gap would publish them as keys too). Each
  range needs a tag of its own (responses are grouped by tag), so keys are ``a0``, ``b13``...,
  which the stub maps back to ``p000``... (no longer than those). Coils stay one entry per coil: in
  3.8.5 a batch read of coils decodes every coil as false and publishes the 8-bit padding as
  extra keys (bits [1,0,1,1,0,0,0,0,1,1] -> co0..co15 all false).
- Reporting: report strategy ON_RECEIVED at every level (every value of every poll is sent); with
  ``--report change``, ON_CHANGE_OR_REPORT_PERIOD (`report_strategy`: a value is sent when it is not
  equal to the last one, and each key again every `CHANGE_REPORT_PERIOD_MS`, whether it changed or not);
  rate limits none (what the stub answers to `getSessionLimits`, as a default ThingsBoard CE
  tenant does), maxPayloadSize 65536 (ThingsBoard's default). Storage: memory (the shipped
  default: nothing survives a crash, unlike boxd's queue). Statistics, remote configuration and
  remote shell are off; the update check goes to a closed local port (HTTPS_PROXY=127.0.0.1:9).
- The platform stub (in this process) answers what the gateway waits for (`getSessionLimits`,
  attribute requests) and ingests `v1/gateway/telemetry` into SQLite, one transaction per
  message; the time each probe value (`p000`) was committed gives the latency.

Figures: the keys of `bench.measure.FIGURES`, plus "points_configured" and "tls" (True), measured
as `bench.gateway` measures boxd: over a window of whole poll cycles after start-up and 2 s of
warm-up, the values stored with a reading time (the gateway's "ts": when it converted the poll)
in each device's window (`bench.measure.device_windows`), once each device's next probe reading
is in (what is not in 60 s later counts as not delivered); CPU and bytes spent in a window as
long; `requests_per_cycle` from the farm's counts (`bench.measure.requests_per_cycle`: requests
over probe reads, so an unfinished last poll lowers it by up to one poll's worth); latency from
the probe values served in the windows.

    .venv/bin/python -m bench.thingsboard --devices 10 --points 100 --seconds 20 [--pin] [--reads per-point]
        [--workload building] [--report change]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import ipaddress
import json
import os
import pwd
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.measure import (
    FIGURES,
    ROOT,
    Farm,
    Tree,
    device_windows,
    free_port_block,
    latency_ms,
    requests_per_cycle,
)
from bench.simlink import SimLink, per_point
from bench.workload import PROBE, WORKLOADS, Device, layout, minimum_requests
from tests.support.wait import free_port, wait_for

VERSION = "3.8.5"
VENV = ROOT / ".venv-tb"
# What its Modbus connector pip-installs at its first start (modbus_connector.py pins pymodbus 3.9.2):
# installed with it, so that no run reaches PyPI.
EXTRAS = ("pymodbus==3.9.2", "pyserial==3.5", "pyserial-asyncio==0.6")
MOSQUITTO = "/usr/sbin/mosquitto"
READS = ("batch", "per-point")
WARMUP_S = 2.0
_TB_TYPE = {"uint16": ("16uint", 4, 1), "int16": ("16int", 4, 1), "float32": ("32float", 3, 2),
            "bool": ("bits", 1, 1)}
_ON_RECEIVED = {"type": "ON_RECEIVED"}
# --report change: a value when it differs from the last one sent (exact equality: it has no deadband) and
# every value at least every 5 minutes (report_strategy_service.py: the period is not restarted by a change)
CHANGE_REPORT_PERIOD_MS = 300_000


# ---- installation -------------------------------------------------------------------------------------------

def ensure_installed() -> Path:
    """The python of `.venv-tb` with thingsboard-gateway 3.8.5 (installed once, ~2 min)."""
    python = VENV / "bin" / "python"
    wanted = {"thingsboard-gateway": VERSION} | dict(e.split("==") for e in EXTRAS)
    probe = [str(python), "-c",
             f"import importlib.metadata as m; assert all(m.version(k) == v for k, v in {wanted!r}.items())"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"installing ThingsBoard IoT Gateway {VERSION} into .venv-tb (once, ~2 min)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"thingsboard-gateway=={VERSION}", *EXTRAS],
                   check=True)
    return python


# ---- the gateway's configuration (pure) ---------------------------------------------------------------------

def _runs(device: Device) -> list[list[Any]]:
    """Runs of points of one table and type at consecutive addresses (one batch read each)."""
    runs: list[list[Any]] = []
    for p in device.points:
        last = runs[-1][-1] if runs else None
        if last is not None and last.table == p.table and last.type == p.type \
                and last.address + _TB_TYPE[last.type][2] == p.address:
            runs[-1].append(p)
        else:
            runs.append([p])
    return runs


def _entry(tag: str, kind: str, address: int | str) -> dict[str, Any]:
    tb_type, fc, count = _TB_TYPE[kind]
    entry: dict[str, Any] = {"tag": tag, "type": tb_type, "functionCode": fc, "objectsCount": count,
                             "address": address}
    if kind == "bool":
        entry["bitTargetType"] = "bool"
    return entry


def _prefix(n: int) -> str:
    """a, b, ... z, ba, bb, ...: the literal part of the n-th range's tag (tags must differ per entry)."""
    out = chr(97 + n % 26)
    while n >= 26:
        n = n // 26
        out = chr(97 + n % 26) + out
    return out


def _batch_plan(device: Device) -> list[tuple[str, list[Any]]]:
    """(tag, points) per `timeseries` entry in batch mode: a range per register run, coils one by one."""
    plan: list[tuple[str, list[Any]]] = []
    for run in _runs(device):
        if run[0].type == "bool":  # batch reading of coils is broken in 3.8.5 (see the module's docstring)
            plan += [(p.name, [p]) for p in run]
        else:
            plan.append((_prefix(len(plan)) + "${address}", run))
    return plan


def timeseries(device: Device, reads: str) -> list[dict[str, Any]]:
    """The `timeseries` section of one device: per point, or one batch range per run of registers."""
    if reads == "per-point":
        return [_entry(p.name, p.type, p.address) for p in device.points]
    out = []
    for tag, run in _batch_plan(device):
        if len(run) == 1 and "$" not in tag:
            out.append(_entry(tag, run[0].type, run[0].address))
            continue
        entry = _entry(tag, run[0].type, f"{run[0].address}-{run[-1].address + _TB_TYPE[run[-1].type][2] - 1}")
        entry["maxRegistersPerRequest"] = 125
        out.append(entry)
    return out


def key_names(devices: list[Device], reads: str) -> dict[str, str]:
    """The gateway's telemetry key -> our point name (the same for every device)."""
    if reads == "per-point":
        return {p.name: p.name for p in devices[0].points}
    return {tag.replace("${address}", str(p.address)): p.name for tag, run in _batch_plan(devices[0]) for p in run}


def report_strategy(report: str) -> dict[str, Any]:
    """Its report strategy for `bench.gateway --report`: "poll" every value of every poll (ON_RECEIVED);
    "change" a value when it changed and at least every `CHANGE_REPORT_PERIOD_MS` (see the docstring)."""
    if report == "change":
        return {"type": "ON_CHANGE_OR_REPORT_PERIOD", "reportPeriod": CHANGE_REPORT_PERIOD_MS}
    return _ON_RECEIVED


def modbus_json(devices: list[Device], host: str, interval_s: float, reads: str,
                strategy: dict[str, Any] = _ON_RECEIVED) -> dict[str, Any]:
    """The Modbus connector's configuration: one slave per farm device."""
    slaves = [{
        "host": host, "port": d.port, "type": "tcp", "method": "socket", "unitId": 1,
        "deviceName": d.name, "deviceType": "default", "timeout": 5, "retries": 1,
        "byteOrder": "BIG", "wordOrder": "BIG", "pollPeriod": round(interval_s * 1000),
        "connectAttemptTimeMs": 500, "connectAttemptCount": 5, "waitAfterFailedAttemptsMs": 30000,
        "reportStrategy": strategy,
        "attributes": [], "timeseries": timeseries(d, reads), "attributeUpdates": [], "rpc": [],
    } for d in devices]
    return {"name": "Modbus", "logLevel": "INFO", "enableRemoteLogging": False, "reportStrategy": strategy,
            "master": {"slaves": slaves}}


STORAGE = {  # the shipped defaults of its two kinds of storage: memory (its default) and SQLite (durable)
    "memory": {"type": "memory", "read_records_count": 100, "max_records_count": 100000},
    "sqlite": {"type": "sqlite", "data_file_path": "./data/data.db", "messages_ttl_check_in_hours": 1,
               "messages_ttl_in_days": 7, "max_read_records_count": 1000},
}


def gateway_json(port: int, storage: str = "memory", host: str = "127.0.0.1",
                 strategy: dict[str, Any] = _ON_RECEIVED) -> dict[str, Any]:
    """tb_gateway.json: the platform at `host`:`port` over mTLS, the Modbus connector."""
    return {
        "thingsboard": {
            "host": host, "port": port,
            "remoteShell": False, "remoteConfiguration": False, "latencyDebugMode": False,
            "statistics": {"enable": False, "enableCustom": False, "statsSendPeriodInSeconds": 60,
                           "customStatsSendPeriodInSeconds": 3600},
            "deviceFiltering": {"enable": False},
            "maxPayloadSizeBytes": 65536, "minPackSendDelayMS": 50, "minPackSizeToSend": 500,
            "checkConnectorsConfigurationInSeconds": 60, "handleDeviceRenaming": True,
            "security": {"type": "tlsPrivateKey", "caCert": "ca.crt", "cert": "gateway.crt",
                         "privateKey": "gateway.key"},
            "qos": 1,
            "reportStrategy": strategy,
            "checkingDeviceActivity": {"checkDeviceInactivity": False},
        },
        "storage": STORAGE[storage],
        "grpc": {"enabled": False},
        "connectors": [{"type": "modbus", "name": "Modbus", "configuration": "modbus.json"}],
    }


def logs_json(log_dir: Path) -> dict[str, Any]:
    """Its shipped logging levels (INFO), into one file instead of seven files plus the console."""
    handler = {"class": "logging.FileHandler", "formatter": "f", "filename": str(log_dir / "gateway.log")}
    loggers = {name: {"handlers": ["file"], "level": "INFO", "propagate": False}
               for name in ("database", "service", "connector", "converter", "tb_connection", "storage", "extension")}
    return {"version": 1, "disable_existing_loggers": False,
            "formatters": {"f": {"format": "%(asctime)s %(levelname)s [%(name)s] %(message)s"}},
            "handlers": {"file": handler}, "loggers": loggers, "root": {"level": "ERROR", "handlers": ["file"]}}


# ---- a throwaway PKI and the broker -------------------------------------------------------------------------

def make_pki(directory: Path, broker_ips: tuple[str, ...] = ("127.0.0.1",)) -> None:
    """ca.crt, and EC P-256 key + certificate for broker (`broker_ips`), gateway and stub."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def cert(cn: str, key: Any, issuer: Any, signer: Any, ca: bool, eku: Any = None, ips: tuple[str, ...] = ()) -> Any:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
             .not_valid_after(now + dt.timedelta(days=30))  # < 3 days left: the gateway replaces its own
             .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True))
        if eku is not None:
            b = b.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        if ips:
            b = b.add_extension(x509.SubjectAlternativeName([*(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips),
                                                             x509.DNSName("localhost")]), critical=False)
        return b.sign(signer, hashes.SHA256())

    def write(stem: str, c: Any, key: Any = None) -> None:
        (directory / f"{stem}.crt").write_bytes(c.public_bytes(serialization.Encoding.PEM))
        if key is not None:
            (directory / f"{stem}.key").write_bytes(key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
            (directory / f"{stem}.key").chmod(0o600)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = cert("bench TB CA", ca_key, None, ca_key, True)
    write("ca", ca)
    for stem, eku, ips in (("broker", ExtendedKeyUsageOID.SERVER_AUTH, broker_ips),
                           ("gateway", ExtendedKeyUsageOID.CLIENT_AUTH, ()),
                           ("stub", ExtendedKeyUsageOID.CLIENT_AUTH, ())):
        key = ec.generate_private_key(ec.SECP256R1())
        write(stem, cert(f"bench-{stem}", key, ca.subject, ca_key, False, eku, ips), key)


class Broker:
    """Mosquitto on 127.0.0.1:`port`, TLS with client certificates only (as boxcloud's)."""

    def __init__(self, work: Path, pki: Path) -> None:
        self.port = free_port()
        conf = work / "mosquitto.conf"
        conf.write_text("\n".join([
            # started by root, it would switch to user "mosquitto", who cannot read the files in `work`
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
            "per_listener_settings false", "allow_anonymous false", "persistence false",
            "max_queued_messages 100000", "max_packet_size 1048576",
            f"log_dest file {work / 'mosquitto.log'}", "log_type error", "log_type warning",
            f"listener {self.port} 127.0.0.1", f"cafile {pki / 'ca.crt'}", f"certfile {pki / 'broker.crt'}",
            f"keyfile {pki / 'broker.key'}", "require_certificate true", "use_identity_as_username true",
            "tls_version tlsv1.2", ""]))
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def listening() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited at start, see {work / 'mosquitto.log'}")
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0
        try:
            wait_for(listening, 15, "mosquitto")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---- the platform stub --------------------------------------------------------------------------------------

SESSION_LIMITS = {  # what a default ThingsBoard CE answers: no rate limits, 64 KiB payloads
    "maxPayloadSize": 65536, "maxInflightMessages": 100,
    "rateLimits": {"messages": "", "telemetryMessages": "", "telemetryDataPoints": ""},
    "gatewayRateLimits": {"messages": "", "telemetryMessages": "", "telemetryDataPoints": ""},
}


class PlatformStub:
    """The "ThingsBoard" the gateway talks to: answers its requests, stores its telemetry in SQLite."""

    def __init__(self, port: int, pki: Path, db: Path, keys: dict[str, str]) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.keys = keys
        self.points = set(keys.values())
        self.lock = threading.Lock()
        self.stored = 0  # configured points stored
        self.extra = 0  # values of keys that are no configured point
        self.first_stored: float | None = None  # time.monotonic()
        self.probes: dict[str, dict[int, float]] = {}  # device -> {probe value: wall time committed}
        self.probe_ts: dict[str, int] = {}  # device -> newest reading time (ms) of its probe stored
        self.topics: dict[str, int] = {}
        self.db = sqlite3.connect(db, check_same_thread=False)
        self.db.executescript("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                              "CREATE TABLE samples (device TEXT, key TEXT, ts INTEGER, value, point INTEGER);")
        self.subscribed = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="platform-stub", protocol=mqtt.MQTTv5)
        c.tls_set(ca_certs=str(pki / "ca.crt"), certfile=str(pki / "stub.crt"), keyfile=str(pki / "stub.key"))
        c.max_queued_messages_set(0)
        c.on_connect = self._on_connect
        c.on_subscribe = lambda *_a: self.subscribed.set()
        c.on_message = self._on_message
        self.client = c
        c.connect("127.0.0.1", port, keepalive=60)
        c.loop_start()
        if not self.subscribed.wait(15):
            self.stop()
            raise RuntimeError("the platform stub could not subscribe")

    def _on_connect(self, client: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        client.subscribe([("v1/#", 1)])

    def _on_message(self, client: Any, _u: Any, msg: Any) -> None:
        topic = msg.topic
        if "/response" in topic:  # our own answers
            return
        kind = topic.rsplit("/", 1)[0] + "/N" if topic[-1:].isdigit() else topic
        self.topics[kind] = self.topics.get(kind, 0) + 1
        try:
            body = json.loads(msg.payload) if msg.payload else {}
        except ValueError:
            return
        if topic.startswith("v1/devices/me/rpc/request/"):
            answer = SESSION_LIMITS if body.get("method") == "getSessionLimits" else {}
            client.publish(topic.replace("/request/", "/response/"), json.dumps(answer), qos=1)
        elif topic.startswith("v1/devices/me/attributes/request/"):
            client.publish(topic.replace("/request/", "/response/"), "{}", qos=1)
        elif topic == "v1/gateway/attributes/request":
            client.publish("v1/gateway/attributes/response",
                           json.dumps({"id": body.get("id"), "device": body.get("device"), "values": {}}), qos=1)
        elif topic == "v1/gateway/telemetry":
            self._ingest(body)
        elif topic == "v1/devices/me/telemetry":
            self._ingest({"gateway": body if isinstance(body, list) else [body]})

    def _ingest(self, body: dict[str, Any]) -> None:
        rows, probes, stored, extra = [], [], 0, 0
        for device, entries in body.items():
            for entry in entries if isinstance(entries, list) else [entries]:
                ts, values = entry.get("ts"), entry.get("values", entry)
                for key, value in values.items():
                    name = self.keys.get(key, key)
                    point = name in self.points
                    rows.append((device, name, ts, json.dumps(value) if isinstance(value, list | dict) else value,
                                 point))
                    if point:
                        stored += 1
                        if name == PROBE:
                            probes.append((device, int(value), int(ts)))
                    else:
                        extra += 1
        with self.lock:
            with self.db:
                self.db.executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?)", rows)
            now, mono = time.time(), time.monotonic()
            self.stored += stored
            self.extra += extra
            if stored and self.first_stored is None:
                self.first_stored = mono
            for device, value, ts in probes:
                self.probes.setdefault(device, {}).setdefault(value, now)
                self.probe_ts[device] = max(ts, self.probe_ts.get(device, 0))

    def count_between(self, device: str, start_ms: int, end_ms: int) -> int:
        """Values of configured points of `device` stored with a reading time in [start_ms, end_ms)."""
        with self.lock:
            (n,) = self.db.execute("SELECT COUNT(*) FROM samples WHERE device=? AND point AND ts>=? AND ts<?",
                                   (device, start_ms, end_ms)).fetchone()
        return int(n)

    def window_in(self, devices: list[Device], end_ms: int) -> bool:
        """Whether every device's probe read at or after `end_ms` has been stored (and so all before it)."""
        with self.lock:
            return all(self.probe_ts.get(d.name, 0) >= end_ms for d in devices)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.db.close()


# ---- one run ------------------------------------------------------------------------------------------------

def _other_cpus(cpus: str) -> str | None:
    pinned: set[int] = set()
    for part in cpus.split(","):
        lo, _, hi = part.partition("-")
        pinned.update(range(int(lo), int(hi or lo) + 1))
    rest = sorted(os.sched_getaffinity(0) - pinned)
    return ",".join(map(str, rest)) or None


def _gateway_env(config_dir: Path) -> dict[str, str]:
    # tb_utility reads these generic names as overrides of the platform settings: none may leak in
    generic = {"host", "port", "type", "accessToken", "caCert", "privateKey", "cert", "clientId", "password",
               "username", "proxy_host", "proxy_port"}
    env = {k: v for k, v in os.environ.items() if k not in generic and not k.startswith("TB_GW_")}
    closed = "http://127.0.0.1:9"  # its update check (https://updates.thingsboard.io) fails at once
    env.update(TB_GW_CONFIG_DIR=str(config_dir) + os.sep, HTTPS_PROXY=closed, HTTP_PROXY=closed,
               https_proxy=closed, http_proxy=closed, NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
               PYTHONUNBUFFERED="1")
    return env


class Gateway:
    """The gateway process (its own session, so that nothing it starts outlives it)."""

    def __init__(self, python: Path, config_dir: Path, cpus: str | None, prefix: list[str] | None = None) -> None:
        cmd = [str(python), "-m", "thingsboard_gateway.tb_gateway"]
        if cpus:
            cmd = ["taskset", "-c", cpus, *cmd]
        cmd = [*(prefix or []), *cmd]
        self.out = (config_dir / "stdout.log").open("wb")
        self.proc = subprocess.Popen(cmd, cwd=config_dir, env=_gateway_env(config_dir), stdin=subprocess.DEVNULL,
                                     stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # its own shutdown path
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self.out.close()


def _kill(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


class _RssSampler(threading.Thread):
    def __init__(self, tree: Tree) -> None:
        super().__init__(daemon=True, name="rss")
        self.tree, self.done = tree, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            self.tree.sample_rss()


def run(devices: int, points: int, interval_s: float, seconds: float, cpus: str | None, work: Path,
        reads: str = "batch", storage: str = "memory", workload: str = "counter",
        report: str = "poll") -> dict[str, float]:
    """One measured run of ThingsBoard IoT Gateway (in its namespace, behind `bench.simlink.SimLink`); the
    figures of `bench.measure.FIGURES` (and a few more)."""
    if reads not in READS:
        raise ValueError(f"reads must be one of {READS}")
    python = ensure_installed()
    work.mkdir(parents=True, exist_ok=True)
    pki, gw_dir = work / "pki", work / "gateway"
    gw_dir.mkdir(exist_ok=True)
    cloud_ip, box_ip = SimLink.addresses()
    make_pki(pki, ("127.0.0.1", cloud_ip))
    strategy = report_strategy(report)
    base = free_port_block(devices)
    devs = layout(devices, points, base)
    keys = key_names(devs, reads)
    configured = devices * len(devs[0].points)
    with contextlib.ExitStack() as stack:
        broker = Broker(work, pki)
        stack.callback(broker.stop)
        stub = PlatformStub(broker.port, pki, work / "platform.db", keys)
        stack.callback(stub.stop)
        link = stack.enter_context(SimLink(broker.port, cloud_ip, box_ip))
        farm = Farm(devices, points, base, work, cpus=_other_cpus(cpus) if cpus else None, workload=workload,
                    prefix=link.prefix())
        farm_report: dict[str, Any] = {}

        def stop_farm() -> None:
            if farm.proc.poll() is None:
                farm_report.update(farm.stop())
        stack.callback(_kill, farm.proc)
        for name in ("ca.crt", "gateway.crt", "gateway.key"):
            (gw_dir / name).write_bytes((pki / name).read_bytes())
        (gw_dir / "tb_gateway.json").write_text(json.dumps(gateway_json(link.port, storage, cloud_ip, strategy),
                                                           indent=1))
        (gw_dir / "modbus.json").write_text(json.dumps(modbus_json(devs, "127.0.0.1", interval_s, reads, strategy),
                                                       indent=1))
        (gw_dir / "logs.json").write_text(json.dumps(logs_json(gw_dir), indent=1))

        t0 = time.monotonic()
        gateway = Gateway(python, gw_dir, cpus, link.prefix())
        stack.callback(gateway.stop)
        tree = Tree(gateway.proc.pid)
        sampler = _RssSampler(tree)
        sampler.start()
        stack.callback(sampler.done.set)

        def started() -> bool:
            if gateway.proc.poll() is not None:
                raise RuntimeError(f"the gateway exited at start, see {gw_dir / 'gateway.log'}")
            return stub.first_stored is not None
        wait_for(started, 180, "the first point stored", step=0.02)
        assert stub.first_stored is not None
        startup = stub.first_stored - t0
        time.sleep(WARMUP_S)  # every device into its stride

        cycles = max(1, round(seconds / interval_s))
        window = cycles * interval_s
        farm_tree, own0 = Tree(farm.proc.pid), time.process_time()
        farm0 = farm_tree.cpu_seconds()
        cpu0, counts0 = tree.cpu_seconds(), link.counts()
        start = time.time()
        time.sleep(window)  # the measurement window: a whole number of poll cycles
        cpu = tree.cpu_seconds() - cpu0
        counts = link.counts() - counts0
        wire = counts.payload_up + counts.payload_down
        others = f"farm {farm_tree.cpu_seconds() - farm0:.1f}, stub+proxy {time.process_time() - own0:.1f}"
        # every reading of the windows is in once each device's probe read after them is; what is
        # not in a minute later counts as not delivered
        end_ms = int((start + window + interval_s) * 1000)
        with contextlib.suppress(AssertionError):
            wait_for(lambda: stub.window_in(devs, end_ms), 60, "the window's readings to be stored")
        tree.sample_rss()
        rss = tree.peak_rss_mb()
        gateway.stop()
        stop_farm()
        served: dict[str, list[list[float]]] = farm_report["probes"]
        windows = device_windows(served, start, cycles, interval_s)
        stored = sum(stub.count_between(d, lo, hi) for d, (lo, hi) in windows.items())
        with stub.lock:
            stored_probes = {d: dict(v) for d, v in stub.probes.items()}
            extra, topics = stub.extra, dict(stub.topics)
    # latency in the steady state only: the probe values served in the windows
    in_window = {d: [(v, t) for v, t in served[d] if lo <= t * 1000 < hi] for d, (lo, hi) in windows.items()}
    p50, p99, _n = latency_ms(in_window, stored_probes)
    print(f"bench.thingsboard: reads={reads}, storage={storage}; requests per cycle as configured "
          f"{sum(len(timeseries(d, reads)) for d in devs)}; CPU s in the window: gateway {cpu:.1f}, {others}; "
          f"topics {topics}; values of other keys {extra}", file=sys.stderr)
    figures: dict[str, Any] = {
        "points_per_second": round(stored / window, 1),
        "delivered_ratio": round(stored / (configured * cycles), 3),
        "requests_per_cycle": round(requests_per_cycle(farm_report), 1),
        "minimum_requests_per_cycle": minimum_requests(devs),
        "cpu_s_per_1000_points": round(1000 * cpu / max(stored, 1), 4),
        "peak_rss_mb": round(rss, 1),
        "wire_bytes_per_point": round(wire / max(stored, 1), 2),
        "latency_p50_ms": p50,
        "latency_p99_ms": p99,
        "startup_s": round(startup, 3),
        **per_point(counts, configured * cycles, window),
    }
    figures = {k: figures[k] for k in FIGURES if k in figures}
    assert list(figures) == list(FIGURES)
    return {**figures, "points_configured": configured, "tls": True}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.thingsboard", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--devices", type=int, default=10)
    p.add_argument("--points", type=int, default=100, help="points per device (default %(default)s)")
    p.add_argument("--interval", type=float, default=1.0, help="poll interval, s (default %(default)s)")
    p.add_argument("--seconds", type=float, default=20.0, help="measurement window (default %(default)s)")
    p.add_argument("--pin", action="store_true", help="pin the gateway to CPU 1 (the farm to the others)")
    p.add_argument("--reads", choices=READS, default="batch", help="Modbus read layout (default %(default)s)")
    p.add_argument("--storage", choices=list(STORAGE), default="memory", help="its event storage (default %(default)s)")
    p.add_argument("--workload", choices=WORKLOADS, default="counter", help="the farm's values (default %(default)s)")
    p.add_argument("--report", choices=("poll", "change"), default="poll",
                   help="poll: ON_RECEIVED; change: ON_CHANGE_OR_REPORT_PERIOD (default %(default)s)")
    p.add_argument("--work", type=Path, help="keep the run's files here (default: a temporary directory)")
    p.add_argument("--print-config", action="store_true", help="print the generated configuration and exit")
    args = p.parse_args(argv)
    if args.print_config:
        devs = layout(args.devices, args.points, 15020)
        strategy = report_strategy(args.report)
        print(f"tb_gateway.json:\n{json.dumps(gateway_json(8883, args.storage, strategy=strategy), indent=1)}\n")
        modbus = modbus_json(devs, "127.0.0.1", args.interval, args.reads, strategy)
        print(f"modbus.json:\n{json.dumps(modbus, indent=1)}")
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-tb-") as tmp:
        figures = run(args.devices, args.points, args.interval, args.seconds, "1" if args.pin else None,
                      args.work or Path(tmp), reads=args.reads, storage=args.storage, workload=args.workload,
                      report=args.report)
    labels = {**FIGURES, "points_configured": "points configured", "tls": "TLS to the broker"}
    for k, v in figures.items():
        print(f"{labels[k]:<42} {v}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
