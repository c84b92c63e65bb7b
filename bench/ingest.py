"""Measure the cloud receiver's ingest rate on one core: decoding and storing batches as fast as it can.

Two ways, the first by default:

- ``--mode broker``: through the real Mosquitto (mTLS). The receiver is stopped (its MQTT
  session is persistent), a Box publishes the batches, QoS 1, which the broker queues for
  the receiver; then a fresh receiver (`cloud.receiver.Receiver` with its
  `cloud.store.Store`) starts in a child process pinned to one core and takes them all.
  Timed from its connection until every sample is stored; this includes TLS, MQTT,
  decoding, the monitor and SQLite.
- ``--mode direct``: the child calls `Receiver.handle(box_id, "data", payload)` on the
  pre-encoded batches, with no network: decoding, the monitor and SQLite only.

The batches are the ones a Box makes: an outage's readings (`bench.backlog`'s workload,
100-point devices, realistic values) put into a real `boxd.queue.Queue` and sealed into
batches of `--max-batch` samples. Mosquitto is pinned to another core when there is one.

Prints a table and JSON: points per second, the child's CPU seconds (and how busy its core
was), and the exact stored count.

    .venv/bin/python -m bench.ingest [--samples 1000000] [--mode broker|direct] [--max-batch 5000]

Figures, never assertions: CI runs it only as a smoke test (small `--samples`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cbor2

from bench.backlog import POINTS_PER_DEVICE, fill_queue
from bench.measure import print_figures
from boxd.queue import Queue
from drivers import PointInfo
from proto import topics, wire
from proto.topics import Up

BOX_ID = "INGEST-1"
ROOT = Path(__file__).resolve().parent.parent


def make_table(points: int) -> list[PointInfo]:
    """`points` points on devices of 100, with the kinds of `bench.workload`'s controllers."""
    from bench.workload import device_points

    shape = device_points(POINTS_PER_DEVICE)
    return [PointInfo(f"d{n // POINTS_PER_DEVICE:03d}.{shape[n % POINTS_PER_DEVICE].name}", "",
                      shape[n % POINTS_PER_DEVICE].type) for n in range(points)]


def make_batches(work: Path, samples: int, points: int, max_batch: int) -> tuple[bytes, list[bytes]]:
    """(point table payload, batch payloads) as a Box makes them: queued, then sealed."""
    points = min(points, samples)
    if samples % points:
        raise ValueError("--samples must be a multiple of --points")
    table = make_table(points)
    path = work / "box-queue.db"
    fill_queue(path, table, samples // points, int(time.time() * 1000) - 1000)

    async def seal() -> list[bytes]:
        q = Queue(path, max_samples=100_000_000)
        q.open()
        try:
            await q.seal(max_batch)
            return [p for _, p in q.batches(0, 10**9)]
        finally:
            q.close()

    return wire.encode_table(table), asyncio.run(seal())


# -- the child: the receiver on one core ------------------------------------------------------


def child(spec: dict[str, object]) -> dict[str, float]:
    """Run the receiver pinned to one core until `expect` samples are stored; returns its figures."""
    os.sched_setaffinity(0, {int(str(spec["cpu"]))})  # threads started from here on inherit it
    from cloud.pki import Pki
    from cloud.receiver import Receiver
    from cloud.store import Store

    home = Path(str(spec["home"]))
    expect = int(str(spec["expect"]))
    store = Store(home / "cloud.db")
    receiver = Receiver(Pki(home / "pki"), store, str(spec["host"]), int(str(spec["port"])))
    receiver.pacer.budgets = None  # the receiver's capacity, not one Box's share of it (cloud._pacer)
    c0, t0 = os.times(), time.monotonic()
    if spec["mode"] == "direct":
        payloads = cbor2.loads(Path(str(spec["payloads"])).read_bytes())
        receiver.handle(BOX_ID, "meta", payloads[0])
        t1 = time.monotonic()
        for p in payloads[1:]:
            receiver.handle(BOX_ID, "data", p)
    else:
        receiver.start()
        deadline = t0 + max(60.0, expect / 2000)
        while not receiver.connected.is_set():
            if time.monotonic() > deadline:
                raise RuntimeError("the receiver did not connect")
            time.sleep(0.002)
        t1 = time.monotonic()
        while receiver.counters.samples < expect:
            if time.monotonic() > deadline:
                raise RuntimeError(f"stored {receiver.counters.samples} of {expect} samples in time")
            time.sleep(0.005)
    t2, c2 = time.monotonic(), os.times()
    receiver.stop()
    return {"seconds": t2 - t1, "setup_s": t1 - t0, "cpu_s": (c2.user + c2.system) - (c0.user + c0.system),
            "stored": receiver.counters.samples, "batches": receiver.counters.batches,
            "rejected": receiver.counters.rejected}


def _run_child(spec: dict[str, object], work: Path) -> dict[str, float]:
    spec_path = work / "child.json"
    spec_path.write_text(json.dumps(spec))
    r = subprocess.run([sys.executable, "-m", "bench.ingest", "--child", str(spec_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"the receiver process failed:\n{r.stderr[-3000:]}")
    result: dict[str, float] = json.loads(r.stdout.strip().splitlines()[-1])
    return result


def _stored(db: Path) -> tuple[int, int]:
    with sqlite3.connect(db) as c:
        (n,) = c.execute("SELECT COUNT(*) FROM samples WHERE box_id=?", (BOX_ID,)).fetchone()
        (m,) = c.execute("SELECT COALESCE(SUM(n), 0) FROM batches WHERE box_id=?", (BOX_ID,)).fetchone()
    return int(n), int(m)


def run(samples: int, points: int, max_batch: int, mode: str, cpu: int) -> dict[str, object]:
    """One measured ingest; returns the figures."""
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        work = Path(tmp)
        meta, batches = make_batches(work, samples, points, max_batch)
        spec: dict[str, object] = {"mode": mode, "cpu": cpu, "expect": samples}
        if mode == "direct":
            from cloud.store import Store

            home = work / "cloud"
            Store(home / "cloud.db").enroll_box(BOX_ID, BOX_ID, 1, time.time() + 86400)
            (work / "payloads.cbor").write_bytes(cbor2.dumps([meta, *batches]))
            spec.update(home=str(home), host="", port=0, payloads=str(work / "payloads.cbor"))
            result = _run_child(spec, work)
        else:
            result = _through_broker(work, spec, meta, batches, cpu)
            home = work / "cloud"
        stored, in_batches = _stored(home / "cloud.db")
    rate = samples / result["seconds"]
    return {
        "mode": mode,
        "samples": samples,
        "batches": len(batches),
        "max_batch_samples": max_batch,
        "bytes_per_batch": round(sum(map(len, batches)) / len(batches)),
        "seconds": round(result["seconds"], 3),
        "points_per_second": round(rate),
        "cpu_s": round(result["cpu_s"], 2),
        "core_busy": round(result["cpu_s"] / (result["seconds"] + result["setup_s"]), 2),
        "us_cpu_per_point": round(1e6 * result["cpu_s"] / samples, 2),
        "rejected": int(result["rejected"]),
        "stored": stored,
        "stored_exact": stored == in_batches == samples,
    }


def _through_broker(work: Path, spec: dict[str, object], meta: bytes, batches: list[bytes],
                    cpu: int) -> dict[str, float]:
    from tests.support.cloudkit import make_cloud, mqtt_client, provision
    from tests.support.wait import wait_for

    cloud = make_cloud(work / "cloud")
    # the receiver's capacity, not one Box's share of the broker (boxguard refuses a Box's messages
    # beyond 500 at once and 50 a second: 1,000 batches of 100 samples would be refused)
    cloud.broker.limits.update(msgs_per_s=1e6, msgs_burst=1e6, bytes_per_s=1e9, bytes_burst=1e9)
    cloud.start()
    try:
        ident = provision(cloud, work / "box", BOX_ID)
        assert cloud.receiver is not None
        wait_for(cloud.receiver.connected.is_set, 30, "the receiver to connect")
        cloud.receiver.stop()  # its session (and subscription) stays: the broker queues for it
        box = mqtt_client(cloud, BOX_ID, ident.cert_file, ident.key_file)
        try:
            wait_for(box.connected.is_set, 30, "the Box to connect")
            infos = [box.client.publish(topics.up(BOX_ID, Up.META), meta, 1, True)]
            infos += [box.client.publish(topics.up(BOX_ID, Up.DATA), p, 1) for p in batches]
            for info in infos:
                info.wait_for_publish(60)
        finally:
            box.close()
        broker = cloud.broker.running_pid()
        others = sorted(os.sched_getaffinity(0) - {cpu})
        if broker and others:
            os.sched_setaffinity(broker, set(others))
        spec.update(home=str(cloud.home), host=cloud.settings.host, port=cloud.settings.broker_port)
        return _run_child(spec, work)
    finally:
        cloud.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.ingest", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--samples", type=int, default=1_000_000, help="samples to ingest (default %(default)s)")
    p.add_argument("--points", type=int, default=10_000, help="points of the Box (default %(default)s)")
    p.add_argument("--max-batch", type=int, default=5000, help="samples per batch (default %(default)s)")
    p.add_argument("--mode", choices=("broker", "direct"), default="broker",
                   help="through Mosquitto, or Receiver.handle() called directly (default %(default)s)")
    p.add_argument("--cpu", type=int, default=max(os.sched_getaffinity(0)),
                   help="the core the receiver is pinned to (default: the last one)")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child.read_text()))))
        return 0
    figures = run(args.samples, args.points, args.max_batch, args.mode, args.cpu)
    print_figures(figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
