"""Measure a point's history over a large `samples` table on PostgreSQL: the store's own query path
(`Store.history`, `Store.aggregates`, what the API's ``/v1/boxes/{id}/history`` calls) for one
point over 7 days, on a table of 100 million rows.

A real PostgreSQL 15 server is started for the run (`tests/support/pgserver.py`, Unix socket);
the database is made by the store's migrations (``samples`` partitioned by UTC day, its
(Box, time) index on each partition). The rows are a fleet's: `--boxes` Boxes of `--points`
points each, every point stored every `--period-s` seconds on average (report on change: a value
is sent when it changed), each Box at its own offset in the period, over the `--days` ending
now; values are numbers as the store writes them (JSON text). They are generated inside
PostgreSQL (``generate_series``, in time order, Boxes interleaved, as the receivers write them),
a day at a time into that day's partition (made as `cloud.store._partitions` makes them), then
``VACUUM (ANALYZE)``. The load runs with ``fsync`` off (`PgServer(durable=False)`: the load's
speed is not the figure) and autovacuum off (the explicit VACUUM does its work once).

Then, for `--queries` different points picked at random (fixed seed), each timed in this process
around the store's call:

- cold: each point once, not read before (its pages are not in PostgreSQL's buffers, which hold
  the last ones written), after the server's files were dropped from the OS page cache;
- warm: the same points again;
- for the API's page (``limit`` 1,000 + 1, as the route asks), the whole 7 days in one call,
  and hourly aggregates (``bucket_s=3600``) over the 7 days;
- the same page through the API, ``GET /v1/boxes/ID/history?point=...&since=...&until=...`` over
  real HTTPS (served by this process, one keep-alive client), warm.

``EXPLAIN (ANALYZE, BUFFERS)`` of the store's query for one point is printed (the partitions it
reads, the index it uses); with ``--reindex``, the time to make ``samples_by_time`` again over
all the rows (what a migration that makes it costs at this size). The server's directory (data
and WAL) is removed at the end, also on an error or Ctrl-C. ``--index-sizes`` measures instead the
bytes a row of the table and of the candidate indexes for a point's history, each filled as the
receivers fill it (`INDEXES`). Figures, never assertions.

    .venv/bin/python -m bench.history [--boxes 1000] [--points 20] [--period-s 300] [--days 17.5] [--no-reorder]
                                 [--reindex] [--index-sizes]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import requests
import sqlalchemy as sa

from cloud.api import ApiServer, operator
from cloud.store import Store, _history, _partitions
from tests.support.apikit import PASSWORD
from tests.support.cloudkit import make_cloud
from tests.support.pgserver import PgServer
from tests.support.wait import free_port

WEEK_MS = 7 * 86_400_000
HTTPS = "GET /history (1,000 a page), warm"
SETTINGS = {"shared_buffers": "256MB", "max_wal_size": "1GB", "autovacuum": "off", "maintenance_work_mem": "256MB",
            "checkpoint_timeout": "15min"}


def box(b: int) -> str:
    return f"HIST-{b:05d}"


def point(p: int) -> str:
    return f"d{p // 10}.p{p % 10}"  # bench.pgingest's names


def _du(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=False).stdout
    return int(out.split()[0]) if out else 0


def load(engine: sa.Engine, *, boxes: int, points: int, period_s: int, start_ms: int, end_ms: int,
         progress: Callable[[str], None], partitioned: bool = True) -> int:
    """The fleet's samples from `start_ms` to `end_ms`, a day a statement; returns the rows."""
    period_ms, per_tick = period_s * 1000, boxes * points
    first_day, last_day = start_ms // _partitions.DAY_MS, end_ms // _partitions.DAY_MS
    with engine.begin() as c:  # the days before the ones `Store.maintain` makes, as it makes them
        for day in range(first_day, last_day + 1) if partitioned else ():
            part = _partitions.name("samples", day)
            if c.exec_driver_sql("SELECT to_regclass(%(t)s)", {"t": part}).scalar() is None:
                c.exec_driver_sql(f"CREATE TABLE {part} (LIKE samples INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
                c.exec_driver_sql(f"ALTER TABLE samples ATTACH PARTITION {part} FOR VALUES FROM "
                                  f"({day * _partitions.DAY_MS}) TO ({(day + 1) * _partitions.DAY_MS})")
    rows, tick0 = 0, start_ms // period_ms
    t0 = time.monotonic()
    for day in range(first_day, last_day + 1):
        lo, hi = max(start_ms, day * _partitions.DAY_MS), min(end_ms, (day + 1) * _partitions.DAY_MS)
        ticks = range(-(-lo // period_ms) - tick0, -(-hi // period_ms) - tick0)  # the ticks in [lo, hi)
        if not ticks:
            continue
        n0, n1 = ticks.start * per_tick, ticks.stop * per_tick - 1
        # row n: tick n / per_tick, Box (n / points) % boxes, point n % points; a Box polls at its own
        # offset in the period (kept inside the tick's day); a value wanders around a point's own level
        sql = f"""
            INSERT INTO samples (box_id, point, ts_ms, value, quality)
            SELECT 'HIST-' || lpad(b::text, 5, '0'), 'd' || (p / 10) || '.p' || mod(p, 10),
                   ts + least(mod(b * 7919, {period_ms}), {(day + 1) * _partitions.DAY_MS} - 1 - ts),
                   (round((10 * p + mod(b, 50) + 5 * sin(ts / 3.6e6 + b + p) + random()) * 100) / 100)::float8::text,
                   0
            FROM (SELECT ({tick0} + n / {per_tick}) * {period_ms} AS ts, mod(n / {points}, {boxes}) AS b,
                         mod(n, {points}) AS p
                  FROM generate_series({n0}::bigint, {n1}::bigint) AS n) AS g
            """
        with engine.begin() as c:
            rows += c.exec_driver_sql(sql).rowcount
        progress(f"  {_partitions.name('samples', day)}: {rows:,} rows, {time.monotonic() - t0:,.0f} s, "
                 f"load average {os.getloadavg()[0]:.1f}")
    return rows


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(call: Callable[[], list[Any]]) -> tuple[float, int]:
    t0 = time.perf_counter()
    rows = call()
    return (time.perf_counter() - t0) * 1000, len(rows)


def evict(directory: Path) -> int:
    """Drop the server's data files from the OS page cache (``posix_fadvise(DONTNEED)``, these files
    only: nobody else's cache is touched); returns the bytes asked."""
    total = 0
    for f in (directory / "data" / "base").rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                size = os.fstat(fd).st_size
                os.fsync(fd)  # dirty pages stay cached: written first (fsync is off in the server)
                os.posix_fadvise(fd, 0, size, os.POSIX_FADV_DONTNEED)
                total += size
            finally:
                os.close(fd)
    return total


def measure(store: Store, picks: list[tuple[str, str]], since: int, until: int,
            data_dir: Path) -> dict[str, dict[str, float]]:
    """p50, p99, max (ms) and rows of each query kind over `picks`: cold (first touch, after the
    files left the OS page cache), then warm."""
    kinds: dict[str, Callable[[str, str], list[Any]]] = {
        "page (limit 1001)": lambda b, p: store.history(b, [p], since, until, after=None, limit=1001),
        "7 days whole": lambda b, p: store.history(b, [p], since, until, after=None, limit=100_000),
        "hourly aggregates": lambda b, p: store.aggregates(b, [p], since, until, 3_600_000, after=None, limit=1001),
    }
    out: dict[str, dict[str, float]] = {}
    for rnd in ("cold", "warm"):
        for kind, call in kinds.items():
            if rnd == "cold" and kind != "page (limit 1001)":
                continue  # the page's first call brought its pages in
            if rnd == "cold":
                evict(data_dir)
            load0 = os.getloadavg()[0]
            ms, rows = zip(*(timed(functools.partial(call, b, p)) for b, p in picks), strict=True)
            out[f"{kind}, {rnd}"] = {"p50_ms": statistics.median(ms), "p99_ms": pct(list(ms), 0.99),
                                     "max_ms": max(ms), "rows": statistics.mean(rows),
                                     "load_average": (load0 + os.getloadavg()[0]) / 2}
    return out


@contextmanager
def serving(store: Store, boxes: set[str], home: Path) -> Iterator[Callable[[str], requests.Response]]:
    """The users' API on `store` over real HTTPS, served by this process (`cloud.api.ApiServer`; a
    SQLite cloud beside it for its PKI only), `boxes` in an account: yields a GET with its API key
    (one keep-alive client)."""
    cloud = make_cloud(home)
    for b in sorted(boxes):
        store.enroll_box(b, b, int(time.time() * 1000), time.time() + 86400)
    operator.create_account(store, "bench", "bench@example.com", PASSWORD)
    for b in sorted(boxes):
        operator.assign_box(store, b, "bench")
    key = operator.create_key(store, "bench@example.com", "bench", ["box.read", "box.data.read"], 1)[1]
    server = ApiServer(store, cloud, cloud.pki.dir / "api.crt", cloud.pki.dir / "api.key",
                       seeds_file=home / "api-seeds.key", bind="127.0.0.1", port=free_port())
    server.start()
    try:
        http = requests.Session()
        http.trust_env, http.verify = False, str(cloud.pki.root_cert)
        http.headers["Authorization"] = f"Bearer {key}"
        yield lambda path: http.get(f"https://localhost:{server.port}{path}", timeout=30)
    finally:
        server.stop()


def over_https(get: Callable[[str], requests.Response], picks: list[tuple[str, str]], since: int,
               until: int) -> dict[str, float]:
    """p50, p99, max (ms) of ``GET /v1/boxes/ID/history`` (one point, the 7 days: the first page of
    1,000) for each of `picks`, warm."""
    ms, rows = [], []
    load0 = os.getloadavg()[0]
    for b, p in picks:
        t0 = time.perf_counter()
        r = get(f"/v1/boxes/{b}/history?point={p}&since={iso(since)}&until={iso(until)}")
        r.raise_for_status()
        rows.append(len(r.json()["items"]))
        ms.append((time.perf_counter() - t0) * 1000)
    return {"p50_ms": statistics.median(ms), "p99_ms": pct(ms, 0.99), "max_ms": max(ms),
            "rows": statistics.mean(rows), "load_average": (load0 + os.getloadavg()[0]) / 2}


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def reorder(store: Store, since: int, say: Callable[[str], None]) -> list[dict[str, Any]]:
    """`Store.reorder` (the running cloud's hourly rewrite of a finished day) until the finished
    days the query reads are rewritten (newest first, as it goes); each day's seconds."""
    done: list[dict[str, Any]] = []
    while True:
        t0, load0 = time.monotonic(), os.getloadavg()[0]
        day = store.reorder()
        if day is None:
            return done
        done.append({"partition": day, "seconds": time.monotonic() - t0,
                     "load_average": (load0 + os.getloadavg()[0]) / 2})
        say(f"  {day} rewritten in (Box, time) order in {done[-1]['seconds']:.1f} s "
            f"(load average {done[-1]['load_average']:.1f})")
        if day <= _partitions.name("samples", since // _partitions.DAY_MS):
            return done


def explain(engine: sa.Engine, box_id: str, pt: str, since: int, until: int) -> str:
    query = _history.samples_query(box_id, [pt], since, until, after=None, limit=1001)
    sql = str(query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
    with engine.connect() as c:
        return "\n".join(r[0] for r in c.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {sql}"))


def sizes(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as c:
        row = c.exec_driver_sql(
            "SELECT sum(pg_table_size(relid)), sum(pg_indexes_size(relid)) FROM pg_partition_tree('samples')").one()
    return {"table_bytes": int(row[0]), "index_bytes": int(row[1])}


def run(args: argparse.Namespace) -> dict[str, Any]:
    say: Callable[[str], None] = lambda s: print(s, flush=True)  # noqa: E731
    end_ms = int(time.time() * 1000)
    start_ms = end_ms - int(args.days * 86_400_000)
    figures: dict[str, Any] = {}
    with PgServer(durable=False, settings=SETTINGS) as server, server.database("history") as url:
        assert server.dir is not None
        store = Store(url)
        store.maintain()  # the schema (migrations) and today's partitions, as `boxcloud init` makes them
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        say(f"loading {args.boxes:,} Boxes x {args.points} points every {args.period_s} s over {args.days} days")
        t0 = time.monotonic()
        rows = load(engine, boxes=args.boxes, points=args.points, period_s=args.period_s, start_ms=start_ms,
                    end_ms=end_ms, progress=say)
        figures["load_s"] = time.monotonic() - t0
        t1 = time.monotonic()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.exec_driver_sql("VACUUM (ANALYZE) samples")
            c.exec_driver_sql("CHECKPOINT")  # the pages VACUUM dirtied are written: `evict` can drop them
        figures["vacuum_s"] = time.monotonic() - t1
        figures |= {"rows": rows, "load_average_load": os.getloadavg()[0], **sizes(engine),
                    "data_dir_bytes": _du(server.dir)}
        say(f"loaded {rows:,} rows in {figures['load_s']:,.0f} s, VACUUM (ANALYZE) {figures['vacuum_s']:,.0f} s; "
            f"table {figures['table_bytes'] / 1e9:.2f} GB, indexes {figures['index_bytes'] / 1e9:.2f} GB, "
            f"server's directory {figures['data_dir_bytes'] / 1e9:.2f} GB")
        rng = random.Random(20)
        picks = [(box(rng.randrange(args.boxes)), point(rng.randrange(args.points))) for _ in range(args.queries)]
        until = end_ms - rng.randrange(3_600_000)  # the last 7 days (a Box's API call: until = now)
        since = until - WEEK_MS
        with tempfile.TemporaryDirectory() as home, serving(store, {b for b, _ in picks}, Path(home)) as get:
            figures["queries"] = measure(store, picks, since, until, server.dir)
            figures["queries"][HTTPS] = over_https(get, picks, since, until)
            figures["explain"] = explain(engine, picks[0][0], picks[0][1], since, until)
            if not args.no_reorder:
                figures["reorder"] = reorder(store, since, say)
                figures["queries_reordered"] = measure(store, picks, since, until, server.dir)
                figures["queries_reordered"][HTTPS] = over_https(get, picks, since, until)
                figures["explain_reordered"] = explain(engine, picks[0][0], picks[0][1], since, until)
        if args.reindex:  # what making the index costs on a database this size (a migration that makes it)
            t2, load0 = time.monotonic(), os.getloadavg()[0]
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.exec_driver_sql("REINDEX INDEX samples_by_time")
            figures["reindex_s"] = time.monotonic() - t2
            figures["load_average_reindex"] = (load0 + os.getloadavg()[0]) / 2
        engine.dispose()
        store.engine.dispose()
    return figures


def report(figures: dict[str, Any], args: argparse.Namespace) -> None:
    for key, state in (("queries", "as ingested"),
                       ("queries_reordered", "the finished days rewritten by Store.reorder")):
        if key not in figures:
            continue
        print(f"\n{args.queries} points, one point over 7 days, {state} (Store.history / Store.aggregates, the API):")
        print(f"  {'query':<36} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'rows':>7}  load average")
        for kind, f in figures[key].items():
            print(f"  {kind:<36} {f['p50_ms']:>8.1f} {f['p99_ms']:>8.1f} {f['max_ms']:>8.1f} {f['rows']:>7.0f}  "
                  f"{f['load_average']:.1f}")
    print("\nEXPLAIN (ANALYZE, BUFFERS) of the page's query, one point, as ingested:\n" + figures["explain"])
    if "explain_reordered" in figures:
        print("\nThe same, the finished days rewritten:\n" + figures["explain_reordered"])
    if "reindex_s" in figures:
        print(f"\nREINDEX INDEX samples_by_time: {figures['reindex_s']:,.0f} s "
              f"(load average {figures['load_average_reindex']:.1f})")


INDEXES = {  # candidates for a point's history, each measured as the receivers fill it (`--index-sizes`)
    "(box_id, ts_ms): samples_by_time": "(box_id, ts_ms)",
    "(box_id, ts_ms, point) INCLUDE (value, quality)": "(box_id, ts_ms, point) INCLUDE (value, quality)",
    "(box_id, ts_ms) INCLUDE (point, value, quality)": "(box_id, ts_ms) INCLUDE (point, value, quality)",
    "(box_id, point, ts_ms) INCLUDE (value, quality)": "(box_id, point, ts_ms) INCLUDE (value, quality)",
}


def index_sizes(boxes: int, points: int, period_s: int, days: int) -> dict[str, float]:
    """Bytes a row of a plain copy of `samples` and of each of `INDEXES`, all on the table while
    rows arrive as the receivers write them (`load`'s rows, in time order, Boxes interleaved)."""
    with PgServer(durable=False, settings=SETTINGS) as server, server.database("indexes") as url:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.begin() as c:
            c.exec_driver_sql("CREATE TABLE samples (box_id text NOT NULL, point text NOT NULL, ts_ms bigint NOT NULL, "
                              "value text, quality integer NOT NULL)")
            for n, columns in enumerate(INDEXES.values()):
                c.exec_driver_sql(f"CREATE INDEX candidate_{n} ON samples {columns}")
        end_ms = int(time.time() * 1000) // _partitions.DAY_MS * _partitions.DAY_MS
        start_ms = end_ms - days * _partitions.DAY_MS
        rows = load(engine, boxes=boxes, points=points, period_s=period_s, start_ms=start_ms, end_ms=end_ms,
                    progress=lambda _: None, partitioned=False)
        with engine.connect() as c:
            out = {"table": c.exec_driver_sql("SELECT pg_relation_size('samples')").scalar_one() / rows}
            for n, name in enumerate(INDEXES):
                out[name] = c.exec_driver_sql(f"SELECT pg_relation_size('candidate_{n}')").scalar_one() / rows
        engine.dispose()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.history", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--boxes", type=int, default=1000, help="Boxes (default %(default)s)")
    p.add_argument("--points", type=int, default=20, help="points a Box (default %(default)s)")
    p.add_argument("--period-s", type=int, default=300, help="seconds between a point's samples (default %(default)s)")
    p.add_argument("--days", type=float, default=17.5, help="days of data, ending now (default %(default)s: "
                   "100.8 million rows with the other defaults)")
    p.add_argument("--queries", type=int, default=200, help="points queried (default %(default)s)")
    p.add_argument("--reindex", action="store_true",
                   help="then time REINDEX of samples_by_time: what a migration making it costs at this size")
    p.add_argument("--no-reorder", action="store_true",
                   help="measure the rows as ingested only (not again after Store.reorder)")
    p.add_argument("--index-sizes", action="store_true",
                   help="only measure the bytes a row of the table and of candidate indexes, filled as the "
                   "receivers fill them (2 days of the fleet: try --boxes 200)")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    args = p.parse_args(argv)
    if args.index_sizes:
        print(f"bytes a row, {args.boxes:,} Boxes x {args.points} points every {args.period_s} s over 2 days, "
              "rows in the receivers' order (each index on the table as they arrive):")
        for name, size in index_sizes(args.boxes, args.points, args.period_s, 2).items():
            print(f"  {name:<52} {size:6.1f}")
        return 0
    if args.days * 86400 < WEEK_MS / 1000 or min(args.boxes, args.points, args.period_s, args.queries) < 1:
        p.error("--days must be at least 7; --boxes, --points, --period-s and --queries at least 1")

    def stop(signum: int, _: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through PgServer: its directory goes

    signal.signal(signal.SIGTERM, stop)
    figures = run(args)
    report(figures, args)
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "figures": figures}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
