"""Measure the store's ingest on PostgreSQL (and on SQLite beside it): `Store.store_batches` as fast as
it goes, `--group` batches in each committed transaction (1: a transaction a batch, as the
receiver stored them before it grouped them; the receiver now stores what waited together).

A real PostgreSQL 15 server is started for the run (`tests/support/pgserver.py`) with its
durable defaults (fsync and ``synchronous_commit`` on: a commit is on the disk), on a Unix
socket; the database is made by the store's migrations (the time series partitioned by day).
The batches are decoded beforehand (`proto.wire`): what is timed is the store's work and the
database's, in this process: one writer, as one receiver is.

``--samples-per-batch 20`` is the fleet's pattern (a Box's 20 points every 10 s); 5000 is a
backlog after an outage. ``--no-copy`` stores the samples through one INSERT over arrays
(``unnest``, as the latest values go) instead of COPY (it was SQLAlchemy's batched executemany
when the figure that chose COPY was taken).

    .venv/bin/python -m bench.pgingest [--batches 2000] [--samples-per-batch 500] [--engine both] [--group 50]

Prints rows (samples) per second and batches per second, and the load average before the run
(this machine is shared); figures, never assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

from bench.measure import Tree
from cloud.store import Incoming, PointTable, Store, _ingest
from drivers import PointInfo
from proto import wire
from tests.support.pgserver import PgServer

BOXES = 100


def make_batches(batches: int, per_batch: int, points: int) -> tuple[list[PointInfo], list[tuple[str, wire.Batch]]]:
    """`batches` batches of `per_batch` samples (groups of `points` float values), round-robin over
    `BOXES` Boxes, times from now on."""
    table = [PointInfo(f"d{i // 10}.p{i % 10}", "kW", "float32") for i in range(points)]
    tid = wire.table_id(table)
    groups_per_batch = max(1, per_batch // points)
    now_ms = int(time.time() * 1000)
    out = []
    for n in range(batches):
        box, seq = f"BENCH-{n % BOXES:04d}", n // BOXES + 1
        groups = [wire.encode_group(g * 1000, 0, [float(n + g + i) / 7 for i in range(points)], {})
                  for g in range(groups_per_batch)]
        out.append((box, wire.decode_batch(wire.encode_batch(1, seq, tid, now_ms + n * 10, groups))))
    return table, out


def measure(where: Path | str, table: list[PointInfo], batches: list[tuple[str, wire.Batch]],
            server_pid: int | None = None, writers: int = 1, group: int = 1) -> dict[str, float]:
    store = Store(where)
    tid = wire.table_id(table)
    for b in range(BOXES):
        store.put_table(f"BENCH-{b:04d}", tid, table)
    for box, batch in batches[:50]:  # warm-up: compiled statements, the first partition's pages
        store.store_batch(box, batch, table)
    timed = batches[50:]
    server = Tree(server_pid) if server_pid is not None else None
    server_cpu0 = server.cpu_seconds() if server else 0.0
    stores = [store] + [Store(where) for _ in range(writers - 1)]  # a store (a connection) a writer

    points = PointTable(table)

    def write(n: int) -> None:  # writer n takes the Boxes n, n + writers, ...: each Box's batches in order
        mine = [Incoming(box, batch, points) for box, batch in timed if int(box.rsplit("-", 1)[1]) % writers == n]
        for k in range(0, len(mine), group):
            stores[n].store_batches(mine[k:k + group])

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    load = os.getloadavg()[0]
    t0, cpu0 = time.perf_counter(), time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    server_cpu = server.cpu_seconds() - server_cpu0 if server else 0.0
    rows = sum(len(list(b.samples(table))) for _, b in timed)
    with store.engine.connect() as c:
        stored = c.exec_driver_sql("SELECT count(*) FROM samples").scalar_one()
    for s in stores:
        s.engine.dispose()
    # rows a CPU second (the store's process, and the server's processes): what a core would do on a
    # machine not shared with others, and where the work is
    return {"load_average_1min": load, "batches_per_s": len(timed) / elapsed, "rows_per_s": rows / elapsed,
            "stored_rows": int(stored),
            "seconds": elapsed, "client_cpu_s": cpu, "server_cpu_s": server_cpu,
            "rows_per_cpu_s": rows / (cpu + server_cpu)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.pgingest", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--batches", type=int, default=2000, help="batches to store (default %(default)s)")
    p.add_argument("--samples-per-batch", type=int, default=500, help="samples per batch (default %(default)s)")
    p.add_argument("--points", type=int, default=20, help="points per group (default %(default)s)")
    p.add_argument("--engine", choices=("postgresql", "sqlite", "both"), default="both")
    p.add_argument("--writers", type=int, default=1,
                   help="writers at once, each with its own connection, as receivers are (default %(default)s)")
    p.add_argument("--group", type=int, default=1,
                   help="batches a transaction (1: one each; the receiver groups what waits) (default %(default)s)")
    p.add_argument("--no-copy", action="store_true",
                   help="samples through an INSERT over arrays (unnest), not COPY (PostgreSQL)")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    args = p.parse_args(argv)
    table, batches = make_batches(args.batches + 50, args.samples_per_batch, min(args.points, args.samples_per_batch))
    if args.no_copy:
        _ingest._SAMPLES.copy = None
    figures: dict[str, dict[str, float]] = {}
    if args.engine in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            figures["sqlite"] = measure(Path(tmp) / "cloud.db", table, batches, writers=args.writers, group=args.group)
    if args.engine in ("postgresql", "both"):
        with PgServer(durable=True) as server, server.database("bench") as url:
            figures["postgresql"] = measure(url, table, batches, server.pid, args.writers, args.group)
    per_batch = len(list(batches[0][1].samples(table)))
    print(f"{len(batches) - 50} batches of {per_batch} samples, {args.writers} writer(s), "
          f"{'a commit a batch' if args.group == 1 else f'{args.group} batches a commit'}"
          f"{' (samples by an INSERT over arrays)' if args.no_copy else ''}")
    for engine, f in figures.items():
        print(f"  {engine:<10} load {f['load_average_1min']:.1f} {f['rows_per_s']:>10,.0f} rows/s"
              f"  {f['batches_per_s']:>8,.0f} batches/s  "
              f"({f['stored_rows']:,} rows in {f['seconds']:.1f} s; CPU s: store {f['client_cpu_s']:.1f}, "
              f"server {f['server_cpu_s']:.1f}; {f['rows_per_cpu_s']:,.0f} rows a CPU second)")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "figures": figures}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
