"""Measure a backlog drain: a Box queue holding an outage's worth of samples, emptied into the cloud.

The Box's queue file is filled directly through `boxd.queue.Queue` (as boxd's buses
would have filled it during an outage: one group per device and poll, `put_many`),
with the point table of the boxd configuration used for the run, so the cloud can
decode every batch. Then a real boxd process starts and drains it through the real
Mosquitto (mTLS) into the cloud's SQLite storage (the receiver runs in this process,
in paho's network thread).

Prints a table and JSON: points per second from boxd's start, and from its connection,
until the cloud has stored every backlog sample; the CPU seconds of boxd, of the
receiver's thread and of Mosquitto over the drain; and the exact stored count (every
backlog sample once: no loss, no duplicate).

    .venv/bin/python -m bench.backlog [--samples 1000000] [--points 10000]
                                      [--max-batch 5000] [--inflight 16] [--batch-delay-ms 500]

The devices of the configuration do not answer (nothing listens on their ports) and
are polled once an hour, so the Box adds only one fresh group per device during the
drain; backlog samples are told from those by their time (before boxd started).
Figures, never assertions: CI runs it only as a smoke test (`--samples 20000`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import boxconfig as config
from bench.measure import free_port_block, print_figures
from bench.workload import boxd_toml, layout
from boxd.fieldbus import make_sources
from boxd.queue import Group, Queue, TimeBase
from drivers import PointInfo, Quality, Value
from proto import wire

POINTS_PER_DEVICE = 100
POLL_S = 10  # the outage's poll interval: 100 polls are 1,000 s of data
BOX_ID = "BACKLOG-1"
_TICK = os.sysconf("SC_CLK_TCK")


# -- the workload: a table and an outage's readings ------------------------------------------


def box_config(points: int, uplink: dict[str, int]) -> str:
    """The boxd configuration: `points` points on devices of 100 that nobody serves, polled hourly."""
    if points % POINTS_PER_DEVICE:
        raise ValueError(f"--points must be a multiple of {POINTS_PER_DEVICE}")
    devices = layout(points // POINTS_PER_DEVICE, POINTS_PER_DEVICE, free_port_block(points // POINTS_PER_DEVICE))
    head = "[uplink]\n" + "".join(f"{k} = {v}\n" for k, v in uplink.items())
    return head + "\n" + boxd_toml(devices, "127.0.0.1", 3600.0)


def point_table(conf: Path) -> list[PointInfo]:
    """The point table boxd builds from `conf` (the same code path as the daemon)."""
    return [p for s in make_sources(config.load(conf)) for p in s.points()]


def _f32(x: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


def readings(table: Sequence[PointInfo], polls: int, end_ms: int, seed: int = 1) -> Iterator[list[Group]]:
    """One list of groups per poll (one group per device, its 100 points), oldest poll first.

    Values move as a building's do: unsigned counts and pressures drift, signed
    temperatures in tenths wander, float32 measurements carry noise (float32-exact, as
    the Modbus codec returns them), coils rarely flip. One device in 50 stops answering
    for a tenth of the outage (its values are null with quality NO_ANSWER).
    """
    rnd = random.Random(seed)
    state: list[Value] = []
    for p in table:
        state.append({"uint16": rnd.randint(300, 1200), "int16": rnd.randint(-50, 350),
                      "float32": _f32(rnd.uniform(15, 25))}.get(p.kind, rnd.random() < 0.3))
    devices = range(0, len(table), POINTS_PER_DEVICE)
    first_ts = end_ms - polls * POLL_S * 1000
    for k in range(polls):
        groups: list[Group] = []
        for d, first in enumerate(devices):
            ts = first_ts + k * POLL_S * 1000 + d * 7  # devices are polled a few ms apart
            size = min(POINTS_PER_DEVICE, len(table) - first)
            if d % 50 == 49 and polls // 3 <= k < polls // 3 + max(1, polls // 10):
                groups.append((ts, first, [None] * size, dict.fromkeys(range(size), int(Quality.NO_ANSWER))))
                continue
            values: list[Value] = []
            for i in range(first, first + size):
                v = state[i]
                kind = table[i].kind
                if kind == "uint16":
                    v = min(65535, max(0, int(v) + rnd.randint(-3, 3)))  # type: ignore[arg-type]
                elif kind == "int16":
                    v = min(32767, max(-32768, int(v) + rnd.randint(-2, 2)))  # type: ignore[arg-type]
                elif kind == "float32":
                    v = _f32(float(v) + rnd.gauss(0, 0.05))  # type: ignore[arg-type]
                elif rnd.random() < 0.01:
                    v = not v
                state[i] = v
                values.append(v)
            groups.append((ts, first, values, {}))
        yield groups


def fill_queue(path: Path, table: Sequence[PointInfo], polls: int, end_ms: int) -> int:
    """Fill a Box queue file with an outage's readings, one write per poll; returns the samples."""

    async def fill() -> int:
        q = Queue(path, max_samples=100_000_000)
        q.open()
        try:
            tid = wire.table_id(table)
            for groups in readings(table, polls, end_ms):
                await q.put_many(tid, groups, TimeBase("", True, 0))
            return q.samples
        finally:
            q.close()

    return asyncio.run(fill())


# -- measurement ------------------------------------------------------------------------------


def _cpu_s(stat_path: str) -> float:
    try:
        fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def receiver_thread_stat() -> str:
    """The /proc stat file of the receiver's network thread (paho's, in this process)."""
    for t in threading.enumerate():
        if t.name.startswith("paho-mqtt-client-cloud:receiver") and t.native_id is not None:
            return f"/proc/self/task/{t.native_id}/stat"
    raise RuntimeError("the receiver's thread is not running")


class StoredCounter:
    """Counts the backlog samples the cloud has stored (time before `cutoff_ms`), incrementally by rowid."""

    def __init__(self, db: Path, box_id: str, cutoff_ms: int) -> None:
        self._db = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        self._box, self._cutoff = box_id, cutoff_ms
        self._rowid, self.count = 0, 0

    def poll(self) -> int:
        (top,) = self._db.execute("SELECT COALESCE(MAX(rowid), 0) FROM samples").fetchone()
        if top > self._rowid:
            (n,) = self._db.execute(
                "SELECT COUNT(*) FROM samples WHERE rowid > ? AND rowid <= ? AND box_id = ? AND ts_ms < ?",
                (self._rowid, top, self._box, self._cutoff)).fetchone()
            self._rowid, self.count = top, self.count + n
        return self.count

    def exact(self) -> tuple[int, int]:
        """(backlog samples stored, distinct (point, time) among them): equal when none is stored twice."""
        (n, distinct) = self._db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT point || ' ' || ts_ms) FROM samples WHERE box_id = ? AND ts_ms < ?",
            (self._box, self._cutoff)).fetchone()
        return int(n), int(distinct)

    def close(self) -> None:
        self._db.close()


def run(samples: int, points: int, uplink: dict[str, int]) -> dict[str, object]:
    """One measured drain; returns the figures."""
    from tests.support.boxproc import BoxProcess
    from tests.support.cloudkit import make_cloud, provision

    points = min(points, samples)
    if samples % points:
        raise ValueError("--samples must be a multiple of --points (one group per device and poll)")
    polls = samples // points
    with tempfile.TemporaryDirectory(prefix="bench-backlog-") as tmp:
        root = Path(tmp)
        cloud = make_cloud(root / "cloud")
        cloud.start()
        box: BoxProcess | None = None
        try:
            provision(cloud, root / "box", BOX_ID)
            conf = root / "box" / "boxd.toml"
            conf.write_text(box_config(points, uplink))
            table = point_table(conf)
            cutoff_ms = int(time.time() * 1000)
            t = time.monotonic()
            filled = fill_queue(root / "box" / "queue.db", table, polls, cutoff_ms - 1000)
            fill_s = time.monotonic() - t
            assert filled == samples, (filled, samples)
            assert cloud.store.path is not None
            counter = StoredCounter(cloud.store.path, BOX_ID, cutoff_ms)
            recv_stat = receiver_thread_stat()
            broker_pid = cloud.broker.running_pid()
            broker_stat = f"/proc/{broker_pid}/stat"
            recv0, broker0 = _cpu_s(recv_stat), _cpu_s(broker_stat)
            t0, wall0 = time.monotonic(), time.time()
            box = BoxProcess.start(root / "box", conf)
            deadline = t0 + max(120.0, samples / 2000)
            while counter.poll() < samples:
                if time.monotonic() > deadline or box.proc.poll() is not None:
                    raise RuntimeError(f"drain stopped at {counter.count} of {samples} samples; boxd log:\n"
                                       + box.log.read_text()[-3000:])
                time.sleep(0.05)
            elapsed = time.monotonic() - t0
            boxd_cpu = _cpu_s(f"/proc/{box.proc.pid}/stat")
            recv_cpu, broker_cpu = _cpu_s(recv_stat) - recv0, _cpu_s(broker_stat) - broker0
            since = float(box.status().get("connected_since") or 0.0)  # type: ignore[arg-type]
            connect_s = since - wall0 if since else float("nan")
            stored, distinct = counter.exact()
            batches = cloud.receiver.counters.batches if cloud.receiver else 0
            counter.close()
        finally:
            if box is not None:
                box.stop()
            cloud.stop()
    return {
        "samples": samples,
        "points": points,
        "polls": polls,
        "max_batch_samples": uplink["max_batch_samples"],
        "inflight_batches": uplink["inflight_batches"],
        "batch_delay_ms": uplink["batch_delay_ms"],
        "fill_s": round(fill_s, 2),
        "drain_s": round(elapsed, 2),
        "connect_s": round(connect_s, 2),
        "points_per_second": round(samples / elapsed),
        "points_per_second_from_connect": round(samples / (elapsed - connect_s)) if connect_s < elapsed else 0,
        "boxd_cpu_s": round(boxd_cpu, 2),
        "receiver_cpu_s": round(recv_cpu, 2),
        "broker_cpu_s": round(broker_cpu, 2),
        "batches_stored": batches,
        "stored": stored,
        "stored_distinct": distinct,
        "stored_exact": stored == distinct == samples,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.backlog", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--samples", type=int, default=1_000_000, help="backlog size (default %(default)s)")
    p.add_argument("--points", type=int, default=10_000, help="points in the Box, by devices of 100 "
                                                               "(default %(default)s)")
    p.add_argument("--max-batch", type=int, default=5000, help="[uplink] max_batch_samples (default %(default)s)")
    p.add_argument("--inflight", type=int, default=16, help="[uplink] inflight_batches (default %(default)s)")
    p.add_argument("--batch-delay-ms", type=int, default=500, help="[uplink] batch_delay_ms (default %(default)s)")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    args = p.parse_args(argv)
    uplink = {"max_batch_samples": args.max_batch, "inflight_batches": args.inflight,
              "batch_delay_ms": args.batch_delay_ms}
    figures = run(args.samples, args.points, uplink)
    print_figures(figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
