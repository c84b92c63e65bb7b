"""Simulate a fleet of Boxes against the real platform and measure it: `boxcloud run` (Mosquitto
with mutual TLS and a per-Box ACL, the receiver storing into SQLite or PostgreSQL), and N Boxes,
each with its own enrolled certificate, in a few processes (`bench._fleet_box`).

    .venv/bin/python -m bench.fleet [--boxes 1000] [--duration 60] [--engine sqlite|postgresql]
                                    [--procs 2] [--restart] [--json FILE]

What it does:
  1. Makes a cloud (`Cloud.init`) and enrols the fleet in bulk (`Cloud.enroll_keys`: each Box's
     key made here, its certificate signed by the platform, its row and its broker rights; the
     Boxes' keys never go to the platform). With SQLite the cloud and the fleet's keys are kept
     in `--cache` (default /tmp/bench-fleet-cache) and used again by the next run of that size.
     With PostgreSQL a server is started for the run (`tests/support/pgserver.py`, durable:
     fsync at every commit), each service connecting as its own role.
  2. Runs ``boxcloud --home H run`` as a child process, file descriptors raised to the hard limit
     (Mosquitto needs one a Box), and waits for its receiver.
  3. Starts the Boxes (`--connect-rate` new connections a second, all processes together), lets
     them run `--duration` seconds from the moment all are connected; with `--restart`, then
     stops the broker (SIGTERM: it saves its state) and `boxcloud run` restarts it, as it does a
     broker that died; the Boxes come back with boxd's reconnection policy (`boxd.backoff.Reconnect`,
     `--reconnect-spread`, `--reconnect-max`: the Box's `[uplink]` defaults); `--after` seconds more.
  4. Lets every Box's last batches be acknowledged, stops the cloud and reads the database.

Figures (never assertions): Boxes connected; batches/s and points/s stored in the steady
window; latency p50/p99 from the Box's publish (the batch's reading time, taken as it is sent) to
the stored row (its `received` time, taken in the storing transaction); CPU seconds per part
(broker, `boxcloud run` without its broker, PostgreSQL, the simulator) and peak RSS; after the
restart: seconds until all are back, the busiest second's share of the fleet, batches lost
(published by a Box and never stored: 0 is the promise).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import sqlalchemy as sa

from bench.measure import Tree, print_figures
from boxconfig.schema import UplinkSettings
from tests.support.wait import free_port

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "FLEET"


def enrol(home: Path, boxes: int, database: str = "", prefix: str = "boxcloud") -> list[str]:
    """A new cloud in `home` with `boxes` Boxes enrolled in bulk; their key + chain in home/fleet/<id>.pem.

    Where the time goes (10,000 Boxes, docs/performance.md): not the keys (P-256, 0.05 ms each) nor
    the certificates (0.25 ms each), but an fsync a write: the platform's store commits each Box
    (`Store.enroll_box`, ~3 ms on this disk), and each simulated Box's key file was written durably
    (~4 ms). The key files are written 0600 without an fsync each and synced once at the end."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from boxkit.files import write_atomic
    from cloud.platform import Cloud, Settings

    cloud = Cloud(home)
    cloud.init(Settings("localhost", free_port(), free_port(), "127.0.0.1", free_port(), database, prefix))
    ids = [f"{PREFIX}-{i:05d}" for i in range(boxes)]
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in ids]
    chains = cloud.enroll_keys([(b, k.public_key()) for b, k in zip(ids, keys, strict=True)])
    (home / "fleet").mkdir(mode=0o700, exist_ok=True)
    for b, k, chain in zip(ids, keys, chains, strict=True):
        pem = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
        write_atomic(home / "fleet" / f"{b}.pem", pem + chain, 0o600, durable=False)
    os.sync()  # once for all: the cache's marker is written after its files are on disk
    return ids


def fresh_start(home: Path) -> None:
    """A cached cloud made ready for a run that owes nothing to the one before: on ports free now
    (the settings file rewritten; the certificates name hosts only), the broker's saved state gone
    (the receiver's session with whatever the last run left queued in it), the fleet offline in
    the database (else the monitor finds 1,000 stale heartbeats and alerts on each)."""
    path = home / "cloud.json"
    s = json.loads(path.read_text())
    s.update(broker_port=free_port(), enroll_port=free_port(), api_port=free_port())
    path.write_text(json.dumps(s, indent=1))
    (home / "broker" / "data" / "mosquitto.db").unlink(missing_ok=True)
    with sqlite3.connect(home / "cloud.db") as db:
        db.execute("UPDATE boxes SET online = 0, status_reason = 'bench: a new run' WHERE box_id LIKE ?",
                   (f"{PREFIX}-%",))


def _logged(path: Path, text: str) -> bool:
    try:
        return text in path.read_text(errors="replace")
    except OSError:
        return False


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _wait(what: str, cond: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.1)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _stored(home: Path, run_start: float) -> list[tuple[str, int, int, float, int]]:
    """(box, epoch, seq, received, ts_max) of every fleet batch stored since `run_start`."""
    from cloud.platform import Cloud

    cloud = Cloud(home)
    store = cloud.store_for("owner")
    with store.engine.connect() as c:
        rows = c.execute(sa.text("SELECT box_id, epoch, seq, received, ts_max FROM batches "
                                 "WHERE box_id LIKE :fleet AND received >= :since"),
                         {"fleet": f"{PREFIX}-%", "since": run_start}).all()
    store.engine.dispose()
    return [(str(b), int(e), int(s), float(r), int(t)) for b, e, s, r, t in rows]


def run(args: argparse.Namespace) -> dict[str, object]:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by boxcloud and Mosquitto
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-fleet-")))
        pg_pid = None
        t0 = time.monotonic()
        if args.engine == "postgresql":
            from cloud.store import _roles
            from tests.support.pgserver import PgServer

            server = stack.enter_context(PgServer(durable=True))
            pg_pid = server.pid
            with server.admin().connect() as c:
                for statement in _roles.setup_sql("fleet", "fleet"):
                    c.exec_driver_sql(statement)
            home = tmp / "cloud"
            ids = enrol(home, args.boxes, f"postgresql+psycopg:///fleet?host={server.socket_dir}", "fleet")
        else:
            home = args.cache / f"sqlite-{args.boxes}"
            if not (home / "fleet.done").exists():
                shutil.rmtree(home, ignore_errors=True)
                home.parent.mkdir(parents=True, exist_ok=True)
                enrol(home, args.boxes)
                (home / "fleet.done").write_text("")
            else:
                fresh_start(home)
            ids = [f"{PREFIX}-{i:05d}" for i in range(args.boxes)]
        enrol_s = time.monotonic() - t0
        settings = json.loads((home / "cloud.json").read_text())
        log = (tmp / "boxcloud.log").open("wb")
        cloud_proc = subprocess.Popen([sys.executable, "-c", "import sys; from cloud.cli import main; sys.exit(main())",
                                       "--home", str(home), "run"], cwd=ROOT,
                                      stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        stack.callback(_stop, cloud_proc)
        broker_log, broker_pid_file = home / "broker" / "mosquitto.log", home / "broker" / "mosquitto.pid"
        mark = broker_log.stat().st_size if broker_log.exists() else 0
        _wait("the receiver's connection", lambda: _logged_since(broker_log, mark, "as cloud:receiver"), 120)
        broker_pid = _pid(broker_pid_file)
        assert broker_pid is not None
        trees = {"boxcloud": Tree(cloud_proc.pid), "broker": Tree(broker_pid)}
        if pg_pid is not None:
            trees["postgresql"] = Tree(pg_pid)
        children = []
        for n in range(args.procs):
            spec = {"host": "localhost", "port": settings["broker_port"], "ca": str(home / "pki" / "root.crt"),
                    "crl": str(home / "pki" / "crl.pem"), "pem_dir": str(home / "fleet"),
                    "boxes": ids[n::args.procs], "period_s": args.period,
                    "heartbeat_s": args.heartbeat, "points": args.points, "drain_s": 60.0,
                    "connect_rate": args.connect_rate / args.procs, "out": str(tmp / f"child{n}.json"),
                    "reconnect_spread_s": args.reconnect_spread, "reconnect_max_s": args.reconnect_max}
            (tmp / f"spec{n}.json").write_text(json.dumps(spec))
            children.append(subprocess.Popen([sys.executable, "-m", "bench._fleet_box", str(tmp / f"spec{n}.json")],
                                             cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
            stack.callback(_stop, children[-1])
        sims = [Tree(c.pid) for c in children]
        prepare_t = time.monotonic()
        for child in children:  # every Box's TLS context built (the simulator's cost, not the connections')
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError("a simulator process did not start")
        prepare_s = time.monotonic() - prepare_t
        start = time.time() + 1.0
        connect_s = args.boxes / args.connect_rate
        steady_from = start + connect_s + args.period
        steady_to = steady_from + args.duration
        end = steady_to + (args.after if args.restart else 0.0)
        for child in children:
            assert child.stdin is not None
            child.stdin.write(json.dumps({"start": start, "end": end}) + "\n")
            child.stdin.close()
        brokers = [trees["broker"]]

        def cpu_now() -> dict[str, float]:
            """CPU s so far: the broker (the one running), `boxcloud run` alone, PostgreSQL, the simulators."""
            out = {k: t.cpu_seconds() for k, t in trees.items() if k != "boxcloud"}
            return out | {"receiver_process": trees["boxcloud"].own_cpu_seconds(),
                          "simulator": sum(t.cpu_seconds() for t in sims)}

        marks = {"start": cpu_now()}  # phase -> CPU s at its start; "last": the last sample before the end
        restart_at = broker_up = None
        restart_mark = 0
        while any(c.poll() is None for c in children):
            now = time.time()
            for t in [*trees.values(), *sims]:
                t.sample_rss()
            if "steady_from" not in marks and now >= steady_from:
                marks["steady_from"] = cpu_now()
            if "steady_to" not in marks and "steady_from" in marks and now >= steady_to:
                marks["steady_to"] = cpu_now()
                if args.restart:
                    restart_at, restart_mark = time.time(), broker_log.stat().st_size
                    os.kill(broker_pid, signal.SIGTERM)  # boxcloud run's supervision starts it again
            if restart_at is not None and broker_up is None:
                pid = _pid(broker_pid_file)
                if pid not in (None, broker_pid) and _logged_since(broker_log, restart_mark, "as cloud:receiver"):
                    broker_up, trees["broker"] = time.time(), Tree(pid)
                    brokers.append(trees["broker"])
            if all(c.poll() is None for c in children):
                marks["last"] = cpu_now()
            time.sleep(0.5)
        results = [json.loads((tmp / f"child{n}.json").read_text()) for n in range(args.procs)]
        boxes: dict[str, dict[str, object]] = {k: v for r in results for k, v in r["boxes"].items()}
        sent = {(b, int(str(v["epoch"])), s) for b, v in boxes.items() for s in range(1, int(str(v["seq"])) + 1)}
        boxes_done = time.time()
        # the receiver stores what the broker holds for it
        rows = _catch_up(home, start - 5, len(sent), trees, args.catch_up)
        catch_up_s = time.time() - boxes_done
        if args.json:  # the cloud's log beside the figures (warnings, the receiver's pace)
            _stop(cloud_proc)
            shutil.copy(tmp / "boxcloud.log", args.json.with_suffix(".boxcloud.log"))
        boxcloud_rss = trees["boxcloud"].own_peak_rss_mb()
        broker_rss = max(t.peak_rss_mb() for t in brokers)
    stored = {(b, e, s) for b, e, s, _r, _t in rows}
    steady = [(r, t) for _b, _e, _s, r, t in rows if steady_from <= t / 1000 < steady_to]
    lat = [r - t / 1000 for r, t in steady]
    window = args.duration
    steady_cpu = _phase(marks, "steady_from", "steady_to")
    figures: dict[str, object] = {
        "engine": args.engine, "boxes": args.boxes, "procs": args.procs, "duration_s": args.duration,
        "enrol_s": round(enrol_s, 1),
        "connected": sum(1 for v in boxes.values() if v["connacks"]),
        "batches_per_s": round(len(steady) / window, 1),
        "points_per_s": round(len(steady) * args.points / window),
        "latency_p50_ms": round(1000 * _percentile(lat, 0.5), 1),
        "latency_p99_ms": round(1000 * _percentile(lat, 0.99), 1),
        "latency_max_ms": round(1000 * max(lat, default=float("nan")), 1),
        "connect_all_s": round(max((min(v["connacks"]) for v in boxes.values() if v["connacks"]),  # type: ignore[call-overload]
                                   default=start) - start, 1),
        "cpu_s_broker": steady_cpu.get("broker"), "cpu_s_receiver_process": steady_cpu.get("receiver_process"),
        "cpu_s_postgresql": steady_cpu.get("postgresql"), "cpu_s_simulator": steady_cpu.get("simulator"),
        "cpu_s_connecting": _phase(marks, "start", "steady_from"),  # the ramp and one batch period
        "rss_mb_broker": round(broker_rss, 1), "rss_mb_boxcloud_without_broker": round(boxcloud_rss, 1),
        "simulator_prepare_s": round(prepare_s, 1),  # building the Boxes' TLS contexts, before the ramp
        "rss_mb_simulator": round(sum(t.peak_rss_mb() for t in sims), 1),
        "rss_kb_simulator_per_box": round(1024 * (sum(t.peak_rss_mb() for t in sims)
                                                  - sum(float(r["base_rss_mb"]) for r in results)) / args.boxes, 1),
        "batches_sent": len(sent), "batches_stored": len(stored & sent),
        "lost": len(sent - stored),  # 0 is the promise; with catch_up_s at its limit, "not stored yet"
        "receiver_catch_up_s": round(catch_up_s, 1),
        "unacked_at_end": sum(int(str(v["unacked"])) for v in boxes.values()),
        "refused_by_broker": sum(int(r["refused"]) for r in results),
        "load_average": os.getloadavg()[0],
    }
    if args.restart and restart_at is not None:
        back = [min(t for t in v["connacks"] if t > restart_at) for v in boxes.values()  # type: ignore[attr-defined]
                if any(t > restart_at for t in v["connacks"])]  # type: ignore[attr-defined]
        per_second: dict[int, int] = {}
        for t in back:
            per_second[int(t)] = per_second.get(int(t), 0) + 1
        figures |= {
            "restart_back": len(back),
            "restart_broker_down_s": round((broker_up or restart_at) - restart_at, 1),
            "restart_all_back_s": round(max(back, default=restart_at) - restart_at, 1),
            "restart_busiest_second_share": round(max(per_second.values(), default=0) / args.boxes, 3),
            "restart_per_second": [per_second.get(s, 0) for s in range(int(restart_at), int(max(back, default=0)) + 1)],
            # from the stop to the simulators' end; the broker's: the restarted one's, from its start
            "cpu_s_restart": _phase(marks, "steady_to", "last") | (
                {"broker": round(marks["last"]["broker"], 1)} if broker_up is not None and "last" in marks else {}),
        }
    return figures


def _phase(marks: dict[str, dict[str, float]], first: str, last: str) -> dict[str, float]:
    """CPU s of each part between two marks ({} when the run did not reach them)."""
    if first not in marks or last not in marks:
        return {}
    return {k: round(v - marks[first].get(k, 0.0), 1) for k, v in marks[last].items()}


def _catch_up(home: Path, since: float, expect: int, trees: dict[str, Tree], limit_s: float,
              quiet_s: float = 30.0) -> list[tuple[str, int, int, float, int]]:
    """The fleet's stored batches once all `expect` are stored, none more came for `quiet_s`, or
    `limit_s` passed (the receiver behind: what is not stored then is not stored *yet*)."""
    last, moved, deadline = -1, time.monotonic(), time.monotonic() + limit_s
    while True:
        rows = _stored(home, since)
        for t in trees.values():
            t.sample_rss()
        if len(rows) >= expect or time.monotonic() - moved > quiet_s or time.monotonic() > deadline:
            return rows
        if len(rows) != last:
            last, moved = len(rows), time.monotonic()
        time.sleep(1.0)


def _logged_since(path: Path, offset: int, text: str) -> bool:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return text.encode() in f.read()
    except OSError:
        return False


def _stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.fleet", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--boxes", type=int, default=1000, help="simulated Boxes, up to 10000 (default %(default)s)")
    p.add_argument("--duration", type=float, default=60.0, help="steady window, s (default %(default)s)")
    p.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument("--procs", type=int, default=2, help="simulator processes (default %(default)s)")
    p.add_argument("--period", type=float, default=10.0, help="a Box's batch period, s (default %(default)s)")
    p.add_argument("--points", type=int, default=20, help="points a batch (default %(default)s)")
    p.add_argument("--heartbeat", type=float, default=300.0, help="heartbeat period, s (default: boxd's, 300)")
    p.add_argument("--connect-rate", type=float, default=200.0,
                   help="new connections a second at the start, all together (default %(default)s)")
    p.add_argument("--restart", action="store_true", help="then restart the broker and measure the return")
    p.add_argument("--reconnect-spread", type=float, default=UplinkSettings().reconnect_spread_s,
                   help="the Boxes' [uplink] reconnect_spread_s (default: boxd's, %(default)s)")
    p.add_argument("--reconnect-max", type=float, default=UplinkSettings().reconnect_max_s,
                   help="the Boxes' [uplink] reconnect_max_s (default: boxd's, %(default)s)")
    p.add_argument("--after", type=float, default=60.0, help="seconds run after the restart (default %(default)s)")
    p.add_argument("--catch-up", type=float, default=600.0,
                   help="at most this long for the receiver to store its backlog at the end, s (default %(default)s)")
    p.add_argument("--cache", type=Path, default=Path("/tmp/bench-fleet-cache"),
                   help="where a SQLite cloud with its enrolled fleet is kept between runs")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    args = p.parse_args(argv)
    if not 1 <= args.boxes <= 10_000 or args.procs < 1:
        p.error("--boxes must be 1..10000 and --procs at least 1")
    print_figures(run(args), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
