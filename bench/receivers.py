"""Receivers' throughput, one against several on a shared subscription: batches stored per second.

    .venv/bin/python -m bench.receivers [--receivers 1 3] [--boxes 4] [--batches 400] [--points 100] [--postgres]

A real cloud (Mosquitto with mutual TLS; the SQLite store, or with `--postgres` a PostgreSQL server
of its own, `tests.support.pgserver`, each service as its database role) without its own receiver; `--receivers N`
`boxcloud receive` processes on the shared subscription ``$share/receivers/boxes/+/up/#`` (one
alone on it too: the same code path). Then `--boxes` scripted Boxes (provisioned, mTLS, their
point table retained) publish `--batches` batches each of `--points` samples, QoS 1, as fast as
the broker takes them; timed from the first publication until every batch is stored. Prints the
machine's load (`uptime`) before each run: on a shared machine it decides the figures. Figures,
never assertions.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cloud.platform import Cloud, Settings
from cloud.store import _roles
from drivers import PointInfo
from proto import topics, wire
from proto.topics import Up
from tests.support.cloudkit import Client, make_cloud, mqtt_client, provision
from tests.support.pgserver import PgServer
from tests.support.wait import free_port, wait_for


def _boxes(cloud: Cloud, work: Path, n: int, table: list[PointInfo]) -> list[tuple[str, Client]]:
    out = []
    for i in range(n):
        ident = provision(cloud, work / f"box{i}", f"RATE-{i}")
        c = mqtt_client(cloud, ident.box_id, ident.cert_file, ident.key_file)
        wait_for(c.connected.is_set, 30, f"box {i} to connect")
        meta = c.client.publish(topics.up(ident.box_id, Up.META), wire.encode_table(table), 1, retain=True)
        meta.wait_for_publish(10)
        out.append((ident.box_id, c))
    return out


def _pg_cloud(home: Path, server: PgServer) -> Cloud:
    """A cloud on a new database of `server`, its roles made as the README says (`_roles.setup_sql`)."""
    prefix, database = f"c{secrets.token_hex(4)}", f"boxcloud_{secrets.token_hex(4)}"
    with server.admin().connect() as c:
        for statement in _roles.setup_sql(prefix, database):
            c.exec_driver_sql(statement)
    cloud = Cloud(home)
    cloud.init(Settings("localhost", free_port(), free_port(), "127.0.0.1", free_port(),
                        database=f"postgresql+psycopg:///{database}?host={server.socket_dir}",
                        database_role_prefix=prefix))
    return cloud


def run(receivers: int, boxes: int, batches: int, points: int, server: PgServer | None) -> dict[str, float]:
    table = [PointInfo(f"d.p{i}", "", "float32") for i in range(points)]
    tid = wire.table_id(table)
    with tempfile.TemporaryDirectory(prefix="bench-rx-") as tmp:
        work = Path(tmp)
        cloud = _pg_cloud(work / "cloud", server) if server is not None else make_cloud(work / "cloud")
        cloud.start(receiver=False)
        procs: list[subprocess.Popen[bytes]] = []
        try:
            logs = [work / f"rx{m}.log" for m in range(1, receivers + 1)]
            for m, log in enumerate(logs, start=1):
                with log.open("ab") as out:
                    procs.append(subprocess.Popen([sys.executable, "-m", "cloud.cli", "--home", str(cloud.home),
                                                   "receive", "--member", str(m)], stdout=out,
                                                  stderr=subprocess.STDOUT))
            wait_for(lambda: all(" connected to " in log.read_text() for log in logs), 120, "the receivers")
            fleet = _boxes(cloud, work, boxes, table)
            wait_for(lambda: all(cloud.store.table(b, tid) is not None for b, _ in fleet), 60, "the tables")
            payloads = [wire.encode_batch(7, s, tid, 1_800_000_000_000 + 1000 * s,
                                          [wire.encode_group(0, 0, [float(s + i) for i in range(points)], {})])
                        for s in range(1, batches + 1)]
            load = os.getloadavg()[0]
            t0 = time.monotonic()
            for box_id, c in fleet:
                for payload in payloads:
                    c.client.publish(topics.up(box_id, Up.DATA), payload, 1)
            total = boxes * batches

            def stored() -> int:
                with cloud.store.engine.connect() as db:
                    return int(db.exec_driver_sql("SELECT COUNT(*) FROM batches").scalar_one())
            wait_for(lambda: stored() >= total, 600, "every batch stored", step=0.2)
            took = time.monotonic() - t0
            for _, c in fleet:
                c.close()
            return {"receivers": receivers, "batches": total, "seconds": round(took, 2),
                    "batches_per_s": round(total / took, 1), "samples_per_s": round(total * points / took),
                    "load_1min": load}
        finally:
            for p in procs:
                p.terminate()
                p.wait(20)
            cloud.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.receivers", description=__doc__.split("\n\n")[0])
    p.add_argument("--receivers", type=int, nargs="+", default=[1, 3])
    p.add_argument("--boxes", type=int, default=4)
    p.add_argument("--batches", type=int, default=400, help="per Box (default %(default)s)")
    p.add_argument("--points", type=int, default=100, help="samples per batch (default %(default)s)")
    p.add_argument("--postgres", action="store_true", help="the store on a PostgreSQL server of its own")
    args = p.parse_args(argv)
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(PgServer(durable=True)) if args.postgres else None
        for n in args.receivers:
            print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}", flush=True)
            f = run(n, args.boxes, args.batches, args.points, server)
            print(f"{n} receiver(s) on {'PostgreSQL' if server else 'SQLite'}: {f['batches']} batches of "
                  f"{args.points} samples in {f['seconds']} s: {f['batches_per_s']} batches/s, "
                  f"{f['samples_per_s']} samples/s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
