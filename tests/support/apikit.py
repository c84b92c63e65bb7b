"""The users' API for tests and benchmarks: a real cloud's store, the API served over real HTTPS on a
free port, Boxes in accounts, samples, and HTTP clients that verify the server against the platform CA.

The broker is not started (the API only queues configurations and commands in the store, which
the running cloud sends): `Cloud.start()` is shown serving the API in its own test.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from cloud.api import ApiServer, operator
from cloud.platform import Cloud
from cloud.store._telemetry import latest, samples
from tests.support.cloudkit import make_cloud
from tests.support.wait import free_port

PASSWORD = "correct horse battery staple"


@dataclass
class Api:
    cloud: Cloud
    server: ApiServer
    url: str

    def session(self, user: str | None = None, password: str = PASSWORD, key: str | None = None) -> requests.Session:
        s = requests.Session()
        s.trust_env = False  # REQUESTS_CA_BUNDLE in the environment would replace `verify`
        s.verify = str(self.cloud.pki.root_cert)
        if user is not None:
            s.auth = (user, password)
        if key is not None:
            s.headers["Authorization"] = f"Bearer {key}"
        return s


def add_box(cloud: Cloud, box_id: str, account: str | None, tags: tuple[str, ...] = ()) -> None:
    """A Box as enrolment leaves it (no certificate needed by the API), in an account, with tags."""
    cloud.store.enroll_box(box_id, box_id, int(time.time() * 1000), time.time() + 86400 * 365)
    if account is not None:
        operator.assign_box(cloud.store, box_id, account)
    if tags:
        cloud.store.tag_box(box_id, tags)


def add_samples(cloud: Cloud, box_id: str, points: list[str], start_ms: int, n: int, step_ms: int = 1000) -> None:
    """`n` samples a point from `start_ms`, `step_ms` apart (value: the index), and the latest values
    (written straight into the tables, as the receiver's batches leave them)."""
    rows = [(box_id, p, start_ms + i * step_ms, f"{float(i)}", 0) for i in range(n) for p in points]
    with cloud.store.engine.begin() as db:
        for i in range(0, len(rows), 100_000):
            if db.dialect.name == "sqlite":  # the driver's executemany: 604,800 rows in seconds (bench.api)
                db.exec_driver_sql("INSERT INTO samples (box_id, point, ts_ms, value, quality) VALUES (?, ?, ?, ?, ?)",
                                   rows[i:i + 100_000])
            else:
                names = ("box_id", "point", "ts_ms", "value", "quality")
                db.execute(samples.insert(), [dict(zip(names, r, strict=True)) for r in rows[i:i + 100_000]])
        db.execute(latest.insert(), [{"box_id": box_id, "point": p, "ts_ms": start_ms + (n - 1) * step_ms,
                                      "value": json.dumps(float(n - 1)), "quality": 0, "unit": "degC"}
                                     for p in points])


@contextmanager
def serving(home: Path) -> Iterator[Api]:
    """A new cloud under `home` with its users' API over HTTPS (stopped on exit)."""
    cloud = make_cloud(home)
    cloud.upgrade_store()
    port = free_port()
    server = ApiServer(cloud.store, cloud, cloud.pki.dir / "api.crt", cloud.pki.dir / "api.key",
                       seeds_file=home / "api-seeds.key", bind="127.0.0.1", port=port)
    server.start()
    try:
        yield Api(cloud, server, f"https://localhost:{port}")
    finally:
        server.stop()


def basic(user: str, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


