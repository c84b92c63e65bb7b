"""The reference cloud on PostgreSQL (issue 20), each service as its own database role: a real Box's
readings reach the database through the receiver's role, its status and heartbeat through the
monitor's, the users' API reads them as its role, the operator's command as the admin's. And a
database whose service roles were never made is refused at `init`, saying what to do.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from cloud.api import operator
from cloud.errors import CloudError
from cloud.platform import Cloud, Settings
from cloud.store import _roles
from tests.support.apikit import PASSWORD
from tests.support.boxproc import BoxProcess
from tests.support.cloudkit import provision
from tests.support.pgserver import PgServer
from tests.support.simthread import SimThread
from tests.support.wait import free_port, wait_for


def settings(server: PgServer, database: str, prefix: str) -> Settings:
    return Settings("localhost", free_port(), free_port(), "127.0.0.1", free_port(),
                    database=f"postgresql+psycopg:///{database}?host={server.socket_dir}",
                    database_role_prefix=prefix)


@pytest.fixture
def pg_cloud(pg_server: PgServer, tmp_path: Path, mosquitto_available: None) -> Iterator[Cloud]:
    """A cloud whose database an operator made as the README says (`_roles.setup_sql`)."""
    prefix, database = f"c{secrets.token_hex(4)}", f"boxcloud_{secrets.token_hex(4)}"
    admin = pg_server.admin()
    with admin.connect() as c:
        for statement in _roles.setup_sql(prefix, database):
            c.exec_driver_sql(statement)
    cloud = Cloud(tmp_path / "cloud")
    try:
        cloud.init(settings(pg_server, database, prefix))
        cloud.start()
        yield cloud
    finally:
        cloud.stop()
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')  # and its connections
            for s in _roles.SERVICES:
                c.exec_driver_sql(f"DROP ROLE IF EXISTS {_roles.role(prefix, s)}")
        admin.dispose()


def test_a_box_on_a_cloud_on_postgresql_each_service_as_its_own_role(pg_cloud: Cloud, tmp_path: Path) -> None:
    cloud = pg_cloud
    prefix = cloud.settings.database_role_prefix
    for service in ("receiver", "api", "admin"):  # each connects as its role, never as the owner
        assert cloud.store_for(service).url.split("//")[1].startswith(f"{prefix}_{service}@")
    provision(cloud, tmp_path, "PG-1")
    with SimThread() as sim:
        conf = tmp_path / "boxd.toml"
        conf.write_text("[uplink]\nbatch_delay_ms = 100\nheartbeat_s = 1\n\n" + sim.sim.points_toml(0.5))
        box = BoxProcess.start(tmp_path, conf)
        try:
            box.wait_connected()
            wait_for(lambda: len(cloud.store.samples("PG-1")) >= 20, 30, "readings stored")
            wait_for(lambda: cloud.store.health("PG-1") is not None, 15, "a heartbeat")
        finally:
            box.stop()
    assert True in [online for _, online, _ in cloud.store.status_history("PG-1", 5)]  # the monitor's write
    operator.create_account(cloud.store, "acme", "owner@acme", PASSWORD)
    operator.assign_box(cloud.store, "PG-1", "acme")
    s = requests.Session()
    s.trust_env, s.verify, s.auth = False, str(cloud.pki.root_cert), ("owner@acme", PASSWORD)
    r = s.get(f"https://localhost:{cloud.settings.api_port}/v1/boxes/PG-1/latest", timeout=30)
    assert r.status_code == 200, r.text
    assert {p["point"] for p in r.json()["points"]} == {p for p, *_ in cloud.store.latest("PG-1")}
    r = s.get(f"https://localhost:{cloud.settings.api_port}/v1/boxes/PG-1/history", timeout=30)
    assert r.status_code == 200, r.text
    stored = {(p, t) for p, t, _, _ in cloud.store.samples("PG-1")}
    assert len(r.json()["items"]) >= 20 and {(x["point"], x["ts_ms"]) for x in r.json()["items"]} <= stored
    with cloud.store.engine.connect() as c:  # who is connected: each service as its role (and the upgrade's owner)
        connected = set(c.exec_driver_sql("SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = "
                                          "current_database()").scalars())
    assert connected == {f"{prefix}_{s}" for s in ("owner", "admin", "receiver", "api")}
    out = subprocess.run([sys.executable, "-m", "cloud.cli", "--home", str(cloud.home), "box", "list"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "PG-1" in out.stdout, out.stderr


def test_a_database_without_the_service_roles_is_refused_at_init(pg_server: PgServer, tmp_path: Path) -> None:
    prefix, database = f"c{secrets.token_hex(4)}", f"boxcloud_{secrets.token_hex(4)}"
    admin = pg_server.admin()
    with admin.connect() as c:  # the owner and the database only
        c.exec_driver_sql(f"CREATE ROLE {prefix}_owner LOGIN")
        c.exec_driver_sql(f"CREATE DATABASE {database} OWNER {prefix}_owner")
    try:
        with pytest.raises(CloudError, match=f"no role {prefix}_admin, {prefix}_api, {prefix}_receiver"):
            Cloud(tmp_path / "cloud").init(replace(settings(pg_server, database, prefix)))
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            c.exec_driver_sql(f"DROP ROLE IF EXISTS {prefix}_owner")
        admin.dispose()
