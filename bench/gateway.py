"""The gateway benchmark: boxd and ThingsBoard IoT Gateway on the same Modbus TCP workload, side by side.

    .venv/bin/python -m bench.gateway                      # both cases, both gateways, pinned and not
    .venv/bin/python -m bench.gateway --case small --gateway boxd --seconds 10
    .venv/bin/python -m bench.gateway --case box500 --workload building --report change --settings defaults
    .venv/bin/python -m bench.gateway --case small --gateway boxd --settings defaults --seconds 60

Cases (`bench.workload`): "small" 10 devices x 100 points, "large" 50 x 200 ("tiny" 2 x 20
for smoke tests, "box500" 5 x 100), every point polled every second; values that all change
at every poll (`--workload counter`) or a building's trace (`--workload building`,
`bench.building`); each gateway reporting every value of every poll (`--report poll`) or its
report on change (`--report change`); each run once unpinned and once with the gateway pinned to
one core (`taskset -c 1`, the farm on core 0), closer to a Box. Each gateway runs in a
network namespace (`bench.simlink`) with the farm it polls (`bench.farm`, its own process, on
the namespace's loopback), and publishes over a veth pair whose interface counters give the IP
bytes both ways, through a counting TCP proxy, to a real Mosquitto; a cloud stores what arrives:

- boxd: the reference cloud (Mosquitto with mutual TLS, the receiver storing into
  SQLite), the Box provisioned through the real enrollment endpoint;
- ThingsBoard IoT Gateway 3.8.5 from PyPI in its own venv (`bench.thingsboard`).

Figures (`bench.measure.FIGURES`), measured over a window after start-up: points
stored per second and the ratio to what the layout and interval promise; Modbus
requests per poll cycle as counted by the farm, beside the planner's minimum; CPU
seconds (user + sys, whole process tree) per 1,000 points stored; peak RSS; TCP payload
crossing the proxy (both directions, TLS and MQTT included) per point stored and per point
polled; IP bytes per point polled, both ways and each way, and per day and month at that rate; latency
from the farm serving a new probe value to the cloud having stored it (p50, p99);
start-up from process start to the first point stored. boxd runs with the side-by-side's
batch delay (`--settings bench`, 50 ms) or at its own defaults (`--settings defaults`), where an
"alarm" device whose probe is marked urgent is polled too, and its latency (change -> stored)
is reported apart from the ordinary telemetry's (`--no-alarm` leaves it out). The table goes to stdout, the
figures as JSON to `--json` (default bench/results/gateway.json). Figures, never
assertions: CI runs a tiny case as a smoke test.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa

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
from bench.workload import (
    ALARM,
    DEADBANDS,
    METERED,
    PROBE,
    WORKLOADS,
    alarm_device,
    boxd_toml,
    layout,
    minimum_requests,
)
from boxconfig import UplinkSettings
from cloud.store import Incoming, Outcome, Store
from drivers import PointInfo
from proto.errors import WireError
from proto.wire import Batch
from tests.support.boxproc import BoxProcess
from tests.support.cloudkit import make_cloud, provision
from tests.support.wait import wait_for
from tests.support.wan import retarget

CASES: dict[str, tuple[int, int]] = {"tiny": (2, 20), "small": (10, 100), "large": (50, 200), "box500": (5, 100)}
REPORTS = ("poll", "change", "deadband", "metered")
BOX = "BENCH-1"
WARMUP_S = 2.0

# boxd's setting for the side-by-side benchmark: readings wait at most 50 ms to share a batch (the default,
# 5 s, trades latency for fewer bytes on a metered link, the urgent lane not waiting: `--settings defaults`,
# see docs/performance.md)
BATCH_DELAY_MS = 50
SETTINGS = ("bench", "defaults")  # BATCH_DELAY_MS; or boxd's defaults and the urgent alarm device
URGENT_FIGURES = {"urgent_latency_p50_ms": "urgent latency p50, ms (value change -> stored)",
                  "urgent_latency_p99_ms": "urgent latency p99, ms"}


class TimedStore(Store):
    """The cloud's store, noting when each latency probe value was stored (after the commit)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.stored_probes: dict[str, dict[int, float]] = {}
        self.probe_ts: dict[str, int] = {}  # device -> newest reading time (ms) of its probe stored
        self.samples_stored = 0
        self._probe_index: dict[int, dict[int, str]] = {}
        self._device_of: dict[int, list[str]] = {}  # table id -> device of each index
        self.unchanged: dict[str, dict[int, int]] = {}  # device -> reading time -> points polled and unchanged
        self._lock = threading.Lock()

    def store_batches(self, items: Sequence[Incoming]) -> list[Outcome | WireError]:
        outcomes = super().store_batches(items)  # the receiver stores a group of batches at a time
        now = time.time()
        for item, outcome in zip(items, outcomes, strict=True):
            if outcome is Outcome.STORED:
                self._note(item.batch, item.table, now)
        return outcomes

    def _note(self, batch: Batch, table: Sequence[PointInfo], now: float) -> None:
        """Note what a stored batch says: its probes' times, its samples, its unchanged polls."""
        probes = self._probe_index.get(batch.table_id)
        if probes is None:
            probes = {i: p.name.split(".")[0] for i, p in enumerate(table) if p.name.endswith("." + PROBE)}
            self._probe_index[batch.table_id] = probes
        devices = self._device_of.get(batch.table_id)
        if devices is None:
            devices = self._device_of[batch.table_id] = [p.name.split(".")[0] for p in table]
        with self._lock:
            for ts, first, n in batch.spans():  # report on change: polls that found points unchanged
                for name in devices[first:first + n]:
                    by_ts = self.unchanged.setdefault(name, {})
                    by_ts[ts] = by_ts.get(ts, 0) + 1
            for g in batch.groups:
                self.samples_stored += len(g.values)
                for i in range(g.first, g.first + len(g.values)):
                    device = probes.get(i)
                    if device is not None and isinstance(value := g.values[i - g.first], int):
                        self.stored_probes.setdefault(device, {})[value] = now
                        ts = batch.base_ts_ms + g.dt_ms
                        self.probe_ts[device] = max(ts, self.probe_ts.get(device, 0))

    def count_between(self, box_id: str, prefix: str, start_ms: int, end_ms: int) -> int:
        """Samples of the points named `prefix`... stored with a reading time in [start_ms, end_ms)."""
        with self.engine.connect() as db:
            n = db.execute(sa.text("SELECT COUNT(*) FROM samples WHERE box_id=:box AND ts_ms>=:start AND ts_ms<:end "
                                   "AND substr(point, 1, :n)=:prefix"),
                           {"box": box_id, "start": start_ms, "end": end_ms, "n": len(prefix), "prefix": prefix})
            values = int(n.scalar_one())
        with self._lock:  # and the polls that found them unchanged (report on change): polled, delivered
            by_ts = self.unchanged.get(prefix.removesuffix("."), {})
            unchanged = sum(n for ts, n in by_ts.items() if start_ms <= ts < end_ms)
        return values + unchanged


def _sampler(tree: Tree, stop: threading.Event) -> threading.Thread:
    def run() -> None:
        while not stop.wait(0.5):
            tree.sample_rss()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def report_toml(report: str) -> str:
    """The Box's `[report]` section for `--report`: nothing for "poll" (every value of every poll, the
    default), report on change for "change" (any change, as ThingsBoard's) and "deadband" (with the
    deadbands an installer would set, `bench.workload.DEADBANDS`, on the points; "metered": those of a
    metered SIM, `bench.workload.METERED`)."""
    return '[report]\nmode = "change"\n\n' if report in ("change", "deadband", "metered") else ""


def run_boxd(devices: int, points: int, interval_s: float, seconds: float, cpus: str | None,
             work: Path, workload: str = "counter", report: str = "poll", settings: str = "bench",
             batch_delay_ms: int | None = None, alarm_device_too: bool = True,
             heartbeat_s: int | None = None, keepalive_s: int | None = None,
             max_batch_samples: int | None = None, time_slack_ms: int | None = None) -> dict[str, float]:
    """One measured run of boxd (in its namespace, behind `bench.simlink.SimLink`) with `settings`
    (`SETTINGS`: but `batch_delay_ms` when given; the alarm device with the defaults unless not
    `alarm_device_too`); returns the figures."""
    defaults = settings == "defaults"
    with_alarm = defaults and alarm_device_too
    base = free_port_block(devices + 1)
    devs = layout(devices, points, base) + ([alarm_device(base + devices)] if with_alarm else [])
    delay = batch_delay_ms if batch_delay_ms is not None else None if defaults else BATCH_DELAY_MS
    uplink = "".join(f"{k} = {v}\n" for k, v in (("batch_delay_ms", delay), ("heartbeat_s", heartbeat_s),
                                                 ("keepalive_s", keepalive_s), ("max_batch_samples", max_batch_samples),
                                                 ("time_slack_ms", time_slack_ms))
                     if v is not None)
    uplink = f"[uplink]\n{uplink}\n" if uplink else ""
    wait_s = (delay if delay is not None else UplinkSettings().batch_delay_ms) / 1000  # a batch's longest wait
    configured = devices * points
    cloud_ip, box_ip = SimLink.addresses()
    cloud = make_cloud(work / "cloud", names=[cloud_ip])
    store = TimedStore(work / "cloud" / "cloud.db")
    cloud.store = store
    cloud.start()
    stop = threading.Event()
    report_: dict[str, object] = {}
    try:
        with SimLink(cloud.settings.broker_port, cloud_ip, box_ip) as link:
            farm = Farm(devices, points, base, work, "0" if cpus == "1" else None, workload=workload,
                        alarm=with_alarm, prefix=link.prefix())
            try:
                ident = provision(cloud, work / "box", BOX)
                retarget(ident.directory, cloud_ip, link.port)
                conf = work / "box" / "boxd.toml"
                conf.write_text(uplink + report_toml(report)
                                + boxd_toml(devs, "127.0.0.1", interval_s,
                                            {"deadband": DEADBANDS, "metered": METERED}.get(report)))
                # the installer's step before starting the service: it also caches the parsed file
                checked = subprocess.run([sys.executable, "-m", "boxd.cli", "--state-dir", str(work / "box"),
                                          "--config", str(conf), "check-config"], capture_output=True, text=True)
                if checked.returncode:  # e.g. --report change on a boxd without report on change
                    raise SystemExit(f"bench.gateway: boxd refused the benchmark's configuration: "
                                     f"{(checked.stderr or checked.stdout).strip()}")
                t0 = time.monotonic()
                box = BoxProcess.start(work / "box", conf,
                                       prefix=[*link.prefix(), *(["taskset", "-c", cpus] if cpus else [])])
                tree = Tree(box.proc.pid)
                sampler = _sampler(tree, stop)
                try:
                    wait_for(lambda: store.samples_stored > 0, 30 + wait_s, "the first stored point")
                    startup = time.monotonic() - t0
                    time.sleep(WARMUP_S)  # let every device come into its stride (a benchmark, not a test)
                    cycles = max(1, round(seconds / interval_s))
                    window = cycles * interval_s
                    cpu0, counts0 = tree.cpu_seconds(), link.counts()
                    start = time.time()
                    time.sleep(window)  # the measurement window: a whole number of poll cycles
                    cpu1, counts = tree.cpu_seconds(), link.counts() - counts0
                    end_ms = int((start + window + interval_s) * 1000)  # the last device window's end
                    # every reading of the windows is in once each device's probe read after them is
                    wait_for(lambda: len(store.probe_ts) == len(devs) and min(store.probe_ts.values()) >= end_ms,
                             60 + wait_s, "the window's readings to be stored")
                    tree.sample_rss()
                finally:
                    stop.set()
                    sampler.join()
                    box.stop()
            finally:
                report_ = farm.stop()
    finally:
        cloud.stop()
    served: dict[str, list[list[float]]] = dict(report_["probes"])  # type: ignore[call-overload]
    alarm = served.pop(ALARM, [])  # its own interval: not in the delivered count, its latency apart
    requests: dict[str, int] = report_["requests"]  # type: ignore[assignment]
    ordinary = {"requests": {d: n for d, n in requests.items() if d != ALARM}, "probes": served}
    windows = device_windows(served, start, cycles, interval_s)
    stored = sum(store.count_between(BOX, f"{d}.", lo, hi) for d, (lo, hi) in windows.items())
    # latency in the steady state only: the probe values served in the windows
    in_window = {d: [(v, t) for v, t in served[d] if lo <= t * 1000 < hi] for d, (lo, hi) in windows.items()}
    p50, p99, _ = latency_ms(in_window, store.stored_probes)
    wire = counts.payload_up + counts.payload_down
    figures = _figures(configured, interval_s, window, stored, cpu1 - cpu0, tree.peak_rss_mb(), wire,
                       requests_per_cycle(ordinary), minimum_requests(devs[:devices]), p50, p99, startup)
    if with_alarm:
        urgent = {ALARM: [(v, t) for v, t in alarm if start <= t < start + window]}
        figures["urgent_latency_p50_ms"], figures["urgent_latency_p99_ms"], n = latency_ms(urgent, store.stored_probes)
        figures["urgent_probes"] = n
    return {**figures, **per_point(counts, configured * cycles, window)}

def _figures(configured: int, interval_s: float, window: float, stored: int, cpu: float, rss: float,
             wire: int, requests: float, minimum: int, p50: float, p99: float, startup: float) -> dict[str, float]:
    """The figures of a run: `stored` counts the samples read in windows of whole poll cycles
    (`bench.measure.device_windows`), `cpu` and `wire` what was spent in a window as long,
    `requests` the requests per poll cycle (`bench.measure.requests_per_cycle`)."""
    cycles = window / interval_s
    return {
        "points_configured": configured,
        "points_per_second": round(stored / window, 1),
        "delivered_ratio": round(stored / (configured * cycles), 3),
        "requests_per_cycle": round(requests, 1),
        "minimum_requests_per_cycle": minimum,
        "cpu_s_per_1000_points": round(1000 * cpu / max(stored, 1), 4),
        "peak_rss_mb": round(rss, 1),
        "wire_bytes_per_point": round(wire / max(stored, 1), 2),
        "latency_p50_ms": p50,
        "latency_p99_ms": p99,
        "startup_s": round(startup, 3),
    }


def _run(gateway: str, case: str, pinned: bool, args: argparse.Namespace, settings: str = "bench") -> dict[str, float]:
    devices, points = CASES[case]
    interval_s, seconds, workload, report = args.interval, args.seconds, args.workload, args.report
    with tempfile.TemporaryDirectory(prefix=f"bench-{gateway}-") as tmp:
        if gateway == "boxd":
            return run_boxd(devices, points, interval_s, seconds, "1" if pinned else None, Path(tmp), workload, report,
                            settings, args.batch_delay_ms, not args.no_alarm, args.heartbeat_s, args.keepalive_s,
                            args.max_batch_samples, args.time_slack_ms)
        from bench import thingsboard

        return thingsboard.run(devices, points, interval_s, seconds, "1" if pinned else None, Path(tmp),
                               workload=workload, report=report)


def _fmt(v: object) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "-"
    return f"{v:,}" if isinstance(v, int | float) else str(v)


def table(results: dict[str, dict[str, float]]) -> str:
    """The side-by-side table: one column per run."""
    names = list(results)
    label_w = max(len(v) for v in (*FIGURES.values(), *URGENT_FIGURES.values()))
    col_w = max(14, *(len(n) for n in names))
    lines = [" " * label_w + "  " + "  ".join(f"{n:>{col_w}}" for n in names)]
    for key, label in {**FIGURES, **URGENT_FIGURES}.items():
        lines.append(f"{label:<{label_w}}  " + "  ".join(f"{_fmt(results[n].get(key, '-')):>{col_w}}" for n in names))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.gateway", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--case", choices=[*CASES, "both"], default="both", help="workload (default: small and large)")
    p.add_argument("--gateway", choices=["boxd", "thingsboard", "both"], default="both")
    p.add_argument("--pin", choices=["no", "yes", "both"], default="both", help="pin the gateway to one core")
    p.add_argument("--interval", type=float, default=1.0, help="poll interval, s (default %(default)s)")
    p.add_argument("--seconds", type=float, default=20.0, help="measurement window, s (default %(default)s)")
    p.add_argument("--workload", choices=WORKLOADS, default="counter",
                   help="counter: every value changes at every poll; building: a building's trace (bench.building)")
    p.add_argument("--report", choices=REPORTS, default="poll",
                   help="poll: every value of every poll; change: each gateway's report on change (boxd's "
                        "[report] mode = \"change\", any change; ThingsBoard's ON_CHANGE_OR_REPORT_PERIOD); "
                        "deadband: boxd's report on change with an installer's deadbands (bench.workload.DEADBANDS); "
                        "metered: with a metered SIM's (bench.workload.METERED)")
    p.add_argument("--settings", choices=[*SETTINGS, "both"], default="bench",
                   help=f"boxd's: bench ({BATCH_DELAY_MS} ms batch delay, the side-by-side), defaults (boxd's own, "
                        "and an urgent alarm device), or both (default %(default)s)")
    p.add_argument("--batch-delay-ms", type=int, help="boxd's batch_delay_ms instead of the settings' own")
    p.add_argument("--heartbeat-s", type=int, help="boxd's heartbeat_s instead of its default")
    p.add_argument("--keepalive-s", type=int, help="boxd's keepalive_s instead of its default")
    p.add_argument("--time-slack-ms", type=int, help="boxd's time_slack_ms instead of its default")
    p.add_argument("--max-batch-samples", type=int, help="boxd's max_batch_samples instead of its default")
    p.add_argument("--no-alarm", action="store_true", help="with --settings defaults: no alarm device (its urgent "
                   "batches would cut every batch delay short)")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "gateway.json")
    args = p.parse_args(argv)
    logging.getLogger("boxcloud").setLevel(logging.ERROR)  # the cloud's alerts when a run stops its Box
    cases = ["small", "large"] if args.case == "both" else [args.case]
    gateways = ["boxd", "thingsboard"] if args.gateway == "both" else [args.gateway]
    pins = {"no": [False], "yes": [True], "both": [False, True]}[args.pin]
    if args.report in ("deadband", "metered") and "thingsboard" in gateways:
        p.error(f"--report {args.report} is boxd's own (ThingsBoard's change test has no deadband): add --gateway boxd")
    if "thingsboard" in gateways:
        from bench import thingsboard

        thingsboard.ensure_installed()
    settings = list(SETTINGS) if args.settings == "both" else [args.settings]
    results: dict[str, dict[str, float]] = {}
    for case in cases:
        for pinned in pins:
            for gw in gateways:
                for setting in settings if gw == "boxd" else ["bench"]:
                    mode = ""
                    if setting == "defaults":
                        mode = " defaults" if args.batch_delay_ms is None else f" delay {args.batch_delay_ms} ms"
                        mode += " no alarm" if args.no_alarm else ""
                    name = f"{gw} {case}{mode}{' 1cpu' if pinned else ''}"
                    print(f"running {name} ({args.workload}, report {args.report}) ...", file=sys.stderr, flush=True)
                    results[name] = _run(gw, case, pinned, args, setting)
    print(table(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nfigures as JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
