"""Storage isolation (issue 20) on a real PostgreSQL server: each service connects as its own role,
does its work, and is refused what it must not do; none is a superuser; only the owner changes
the schema. And the database URL the settings may name: this host only, no password anywhere.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from cloud._checks import database_url
from cloud.errors import CloudError
from cloud.store import Store, StoreError, _partitions, _roles
from proto import wire
from proto.points import PointInfo
from tests.support.pgserver import PgServer

TABLE = [PointInfo("d.t", "degC", "float32")]
TID = wire.table_id(TABLE)


@dataclass
class Roles:
    server: PgServer
    prefix: str
    database: str

    def url(self, service: str) -> str:
        return database_url(self.server.url(self.database, "x").replace("x@", ""), _roles.role(self.prefix, service))

    def store(self, service: str) -> Store:
        return Store(self.url(service), migrate=False)

    def refused(self, service: str, sql: str) -> str:
        """Run `sql` as `service`'s role; the database's refusal (the test fails if it ran)."""
        engine = sa.create_engine(self.url(service), poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as c, c.begin():
                c.exec_driver_sql(sql)
        except sa.exc.ProgrammingError as e:  # InsufficientPrivilege and its kind
            return str(e.orig).splitlines()[0]
        finally:
            engine.dispose()
        raise AssertionError(f"{service} was allowed: {sql}")


@pytest.fixture
def roles(pg_server: PgServer) -> Iterator[Roles]:
    """A database made as an operator makes it (`_roles.setup_sql`, as the README says), upgraded and
    granted by its owner role. Role names are the server's: unique to the test."""
    r = Roles(pg_server, f"t{secrets.token_hex(4)}", f"boxcloud_{secrets.token_hex(4)}")
    admin = pg_server.admin()
    with admin.connect() as c:
        for statement in _roles.setup_sql(r.prefix, r.database):
            c.exec_driver_sql(statement)
    owner = Store(r.url("owner"))
    owner.migrate()
    assert sorted(owner.grant_roles(r.prefix)) == sorted(_roles.role(r.prefix, s) for s in _roles.RUN_TIME)
    owner.engine.dispose()
    try:
        yield r
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{r.database}" WITH (FORCE)')
            for s in _roles.SERVICES:
                c.exec_driver_sql(f"DROP ROLE IF EXISTS {_roles.role(r.prefix, s)}")
        admin.dispose()


def test_each_service_does_its_work_as_its_own_role(roles: Roles) -> None:
    admin, receiver, api = roles.store("admin"), roles.store("receiver"), roles.store("api")
    now = time.time()
    admin.add_token("a" * 64, "BOX-1", 600)  # the operator's command; enrollment
    admin.enroll_box("BOX-1", "BOX-1", 10, now + 86400)
    account = admin.add_account("acme")
    receiver.put_table("BOX-1", TID, TABLE)  # the receiver: a Box's data, status, alerts
    batch = wire.decode_batch(wire.encode_batch(1, 1, TID, int(now * 1000), [wire.encode_group(0, 0, [21.5], {})]))
    assert receiver.store_batch("BOX-1", batch, TABLE) and not receiver.store_batch("BOX-1", batch, TABLE)
    receiver.set_status("BOX-1", True, now, "connected", "1.0")
    receiver.put_health("BOX-1", {"uptime_s": 5})
    assert receiver.open_alert("BOX-1", "gap", "1", "batches missing")
    assert [p for p, *_ in api.latest("BOX-1")] == ["d.t"]  # the users' API: reads, and writes its own
    assert api.history("BOX-1", [], 0, 2**62, after=None, limit=10)[0][2] == 21.5
    user = api.add_user(account, "ann", "user", None)
    api.add_key("k1", user, "ci", "h" * 64, scopes=["read"], expires=now + 3600)
    api.assign_box("BOX-1", account)
    api.audit(account, "ann", "key.add", "k1")
    assert api.ack_alert(api.alerts("BOX-1")[0].id, close=True)
    assert api.box("BOX-1").online  # type: ignore[union-attr]
    # a connector made through the API: the receiver, another store, feeds it the next batch
    svc = api.add_user(account, "feed", "service", None)
    cid = api.add_connector(account, "hook", "webhook", service_account_id=svc, config={}, sealed="")
    later = wire.decode_batch(wire.encode_batch(1, 2, TID, int(now * 1000), [wire.encode_group(0, 0, [22.0], {})]))
    assert receiver.store_batch("BOX-1", later, TABLE, payload=b"batch 2")
    assert [f.payload for f in admin.feed_after(0, 10)] == [b"batch 2"]
    assert api.replay(cid, None, now) == 0
    api.delete_connector(cid)
    # an MQTT connector: the running cloud (admin) queues and sends; the API shows and deletes it
    mid = api.add_connector(account, "bridge", "mqtt", service_account_id=svc, config={}, sealed="")
    api.update_connector(mid, state="enabled")
    assert admin.mqtt_queue(mid, admin.connector(mid).feed_pos, 10**9, [("t", b"p")], cap=1000) == (True, 0)  # type: ignore[union-attr]
    assert api.mqtt_state(mid).queued == 1  # type: ignore[union-attr]
    api.delete_connector(mid)
    api.mqtt_forget(mid)
    admin.delete_box("BOX-1")  # the operator's: every row of a Box
    assert api.samples("BOX-1") == [] and admin.verify_audit()[2] == []
    today = int(now // 86400)  # the running cloud, as the owner: a finished day rewritten in (Box, time) order
    assert roles.store("owner").reorder((today + 3) * 86400) == _partitions.name("samples", today + 1)


def test_each_role_is_refused_what_it_must_not_do(roles: Roles) -> None:
    denied = "permission denied"
    # the receiver: no users, keys, tokens, certificates, audit; no telemetry deleted or read back
    for sql in ("SELECT * FROM api_keys", "SELECT * FROM users", "SELECT * FROM tokens", "SELECT * FROM audit",
                "SELECT * FROM pending_certs", "SELECT * FROM samples", "DELETE FROM samples",
                "UPDATE batches SET n = 0", "DELETE FROM batches", "INSERT INTO audit (seq) VALUES (1)"):
        assert denied in roles.refused("receiver", sql), sql
    # the users' API: reads telemetry, writes none; the audit trail appended, never changed
    for sql in ("INSERT INTO samples VALUES ('B', 'p', 1, '1', 0)", "INSERT INTO batches (box_id) VALUES ('B')",
                "DELETE FROM samples", "UPDATE latest SET value = '0'", "UPDATE audit SET outcome = 'ok'",
                "DELETE FROM audit", "SELECT * FROM tokens", "SELECT * FROM pending_certs",
                "UPDATE boxes SET revoked = NULL"):
        assert denied in roles.refused("api", sql), sql
    # the operator's tool: every row, but the audit trail is append-only for it too
    for sql in ("UPDATE audit SET outcome = 'ok'", "DELETE FROM audit"):
        assert denied in roles.refused("admin", sql), sql
    # nobody but the owner changes the schema (a day's partition included, or its order); nobody is a superuser
    today = _partitions.name("samples", int(time.time() // 86400))
    for service in _roles.RUN_TIME:
        for sql in ("DROP TABLE samples", "ALTER TABLE boxes ADD COLUMN x TEXT", "CREATE TABLE x (a INT)",
                    "TRUNCATE samples", "CREATE TABLE samples_d29991231 PARTITION OF samples "
                    "FOR VALUES FROM (0) TO (1)", f"CLUSTER {today} USING {today}_box_id_ts_ms_idx"):
            assert any(w in roles.refused(service, sql) for w in (denied, "must be owner")), (service, sql)
    for service in _roles.SERVICES:
        assert denied in roles.refused(service, "CREATE ROLE intruder")
        with roles.store(service).engine.connect() as c:
            assert c.exec_driver_sql("SELECT rolsuper OR rolcreaterole OR rolcreatedb FROM pg_roles "
                                     "WHERE rolname = current_user").scalar() is False


def test_a_refusal_reaches_the_service_as_a_store_error(roles: Roles) -> None:
    """What the receiver counts on: a batch its role may not store is an error (never acknowledged)."""
    receiver = roles.store("receiver")
    receiver.put_table("BOX-1", TID, TABLE)
    owner = sa.create_engine(roles.url("owner"), poolclass=sa.pool.NullPool)
    with owner.connect() as c, c.begin():
        c.exec_driver_sql(f"REVOKE INSERT ON samples FROM {_roles.role(roles.prefix, 'receiver')}")
    owner.dispose()
    batch = wire.decode_batch(wire.encode_batch(1, 1, TID, 1000, [wire.encode_group(0, 0, [1.0], {})]))
    with pytest.raises(StoreError, match="permission denied"):
        receiver.store_batch("BOX-1", batch, TABLE)
    assert roles.store("admin").batch_keys("BOX-1") == []  # nothing of it stored


@pytest.mark.parametrize(("url", "why"), [
    ("postgresql+psycopg://:secret@/boxcloud?host=/run/postgresql", "holds a password"),
    ("postgresql+psycopg://boxcloud_admin@/boxcloud?host=/run/postgresql", "names a user"),
    ("postgresql+psycopg://db.example.com/boxcloud", "not this machine"),
    ("postgresql+psycopg:///boxcloud?host=10.0.0.5", "not this machine"),
    ("mysql:///boxcloud", "only PostgreSQL"),
    ("not a url", "not a URL"),
])
def test_a_database_url_off_this_host_or_with_a_password_is_refused(url: str, why: str) -> None:
    with pytest.raises(CloudError, match=why) as e:
        database_url(url, "boxcloud_receiver")
    assert "secret" not in str(e.value)


def test_a_socket_or_loopback_url_gets_the_services_role_and_a_passfile_must_be_private(tmp_path: Path) -> None:
    assert database_url("postgresql+psycopg:///boxcloud?host=/run/postgresql", "boxcloud_api") \
        == "postgresql+psycopg://boxcloud_api@/boxcloud?host=%2Frun%2Fpostgresql"
    passfile = tmp_path / "pgpass"
    passfile.write_text("localhost:5432:boxcloud:boxcloud_api:pw\n")
    os.chmod(passfile, 0o644)
    loopback = f"postgresql+psycopg://127.0.0.1/boxcloud?passfile={passfile}"
    with pytest.raises(CloudError, match="can be read by others"):
        database_url(loopback, "boxcloud_api")
    os.chmod(passfile, 0o600)
    assert database_url(loopback, "boxcloud_api").startswith("postgresql+psycopg://boxcloud_api@127.0.0.1/boxcloud")


def test_the_readme_makes_the_roles_as_the_tests_do() -> None:
    """The operator's set-up in the README is the one these tests run (no drift)."""
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    for statement in _roles.setup_sql("boxcloud", "boxcloud"):
        assert f"   {statement};\n" in readme, statement
