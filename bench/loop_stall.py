"""Measure how long boxd's event loop stalls when its disk is slow to fsync.

The Box's state directory (its queue) is on a LazyFS mount whose every fsync takes
`--fsync-delay-ms` (default 20 ms, a slow SD card or eMMC; `tests.support.lazyfs`). A
real boxd polls the benchmark farm (`bench.farm`: the "small" case is 10 Modbus TCP
devices of 100 points, each its own bus, every point every second) and publishes to the
reference cloud over mTLS. A probe task on boxd's loop (`bench/_loop_probe.py`) sleeps
10 ms again and again and notes how late each wake-up is: while the loop is held (an
fsync, a long callback) every task waits, a bus's next request as much as a PUBACK.

Prints, over a window of `--seconds` after a warm-up: the loop's worst stall and its p99
and p50 (the lateness of the probe's wake-ups), the probe's wake-ups counted, and the
points stored per second (the load was real). With ``--before REF`` it runs the boxd of
that git revision first (extracted with ``git archive`` into a temporary directory) and
prints both columns::

    .venv/bin/python -m bench.loop_stall [--case small] [--fsync-delay-ms 20] [--seconds 30]
                                         [--before REF] [--json FILE]

Figures, never assertions. Needs /dev/fuse and root, as the power-cut proofs do.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from bench.measure import ROOT, Farm, free_port_block
from bench.workload import boxd_toml, layout
from tests.support.boxproc import BoxProcess
from tests.support.cloudkit import make_cloud, provision
from tests.support.lazyfs import LazyFS
from tests.support.wait import wait_for

CASES: dict[str, tuple[int, int]] = {"tiny": (2, 20), "small": (10, 100), "large": (50, 200)}
BOX = "STALL-1"
WARMUP_S = 3.0
UPLINK = "[uplink]\nbatch_delay_ms = 50\n\n"  # as bench.gateway: batches leave within 50 ms


def percentile(values: list[float], q: float) -> float:
    """The `q` quantile (0..1) of `values`, nearest rank; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def lags_between(path: Path, start: float, end: float) -> list[float]:
    """The probe's lateness (ms) of the wake-ups between wall times `start` and `end`."""
    out = []
    for line in path.read_text().splitlines():
        t, _, ms = line.partition(" ")
        if start <= float(t) < end:
            out.append(float(ms))
    return out


def _start_box(tree: Path, state: Path, conf: Path, lag_file: Path) -> BoxProcess:
    log = state.parent / "boxd.log"
    env = {**os.environ, "PYTHONPATH": str(tree), "BOXD_BENCH_LAG_FILE": str(lag_file)}
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "_loop_probe.py"), "--state-dir", str(state),
                                 "--config", str(conf), "run"], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=tree)
    return BoxProcess(proc, state, log)


def run(tree: Path, case: str, delay_ms: int, seconds: float, work: Path) -> dict[str, float]:
    """One measured run of the boxd in `tree`; returns the figures."""
    devices, points = CASES[case]
    devs = layout(devices, points, free_port_block(devices))
    cloud = make_cloud(work / "cloud")
    cloud.start()
    farm = Farm(devices, points, devs[0].port, work)
    fs: LazyFS | None = None
    box: BoxProcess | None = None
    try:
        provision(cloud, work / "disk", BOX)
        conf = work / "boxd.toml"
        conf.write_text(UPLINK + boxd_toml(devs, "127.0.0.1", 1.0))
        fs = LazyFS(work / "disk", fsync_delay_ms=delay_ms)
        state = fs.mount()
        lag_file = work / "lags.txt"
        box = _start_box(tree, state, conf, lag_file)
        box.wait_connected(60)
        wait_for(lambda: bool(cloud.store.batch_keys(BOX)), 60, "the first batch stored")
        time.sleep(WARMUP_S)  # every device into its stride (a benchmark, not a test)
        assert cloud.store.path is not None
        stored0 = _stored(cloud.store.path)
        start = time.time()
        time.sleep(seconds)  # the measurement window
        end = time.time()
        assert cloud.store.path is not None
        stored1 = _stored(cloud.store.path)
        time.sleep(1.5)  # the probe writes its lines once a second
        lags = lags_between(lag_file, start, end)
    finally:
        if box is not None:
            box.stop()
        if fs is not None:
            fs.crash()  # nothing of the Box's disk is needed any more
        farm.stop()
        cloud.stop()
    if not lags:
        raise RuntimeError("the probe wrote nothing: did boxd start? see its log")
    return {
        "loop_stall_max_ms": round(max(lags), 1),
        "loop_stall_p99_ms": round(percentile(lags, 0.99), 1),
        "loop_stall_p50_ms": round(percentile(lags, 0.50), 2),
        "probe_wakeups": len(lags),
        "points_stored_per_second": round((stored1 - stored0) / seconds),
    }


def _stored(db: Path) -> int:
    import sqlite3

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        (n,) = conn.execute("SELECT COUNT(*) FROM samples WHERE box_id = ?", (BOX,)).fetchone()
    return int(n)


def extract(ref: str, into: Path) -> Path:
    """The files of git revision `ref` of this repository, in `into`."""
    archive = into / "tree.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", "-o", str(archive), ref], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "tree", filter="data")
    return into / "tree"


LABELS = {
    "loop_stall_max_ms": "loop stall, worst, ms",
    "loop_stall_p99_ms": "loop stall, p99, ms",
    "loop_stall_p50_ms": "loop stall, p50, ms",
    "probe_wakeups": "probe wake-ups (every 10 ms)",
    "points_stored_per_second": "points stored per second",
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.loop_stall", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--case", choices=list(CASES), default="small", help="farm layout (default %(default)s)")
    p.add_argument("--fsync-delay-ms", type=int, default=20, help="added to every fsync (default %(default)s)")
    p.add_argument("--seconds", type=float, default=30.0, help="measurement window, s (default %(default)s)")
    p.add_argument("--before", metavar="REF", help="also measure the boxd of this git revision, first")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    args = p.parse_args(argv)
    logging.getLogger("boxcloud").setLevel(logging.ERROR)  # the cloud's alerts when a run stops its Box
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-stall-") as tmp:
        runs = [(f"before ({args.before})", extract(args.before, Path(tmp)))] if args.before else []
        runs.append(("this tree", ROOT))
        for k, (name, tree) in enumerate(runs):
            print(f"running {name} ...", file=sys.stderr, flush=True)
            work = Path(tmp) / f"run{k}"
            work.mkdir()
            results[name] = run(tree, args.case, args.fsync_delay_ms, args.seconds, work)
    devices, points = CASES[args.case]
    print(f"{devices} buses x {points} points every second; every fsync {args.fsync_delay_ms} ms slower; "
          f"{args.seconds:g} s window")
    width = max(len(n) for n in results) + 2
    print(" " * 30 + "".join(f"{n:>{width}}" for n in results))
    for key, label in LABELS.items():
        print(f"{label:<30}" + "".join(f"{results[n][key]:>{width},}" for n in results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
