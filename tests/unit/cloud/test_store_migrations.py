"""Schema versions of the cloud store: a new database is made by the migrations; an old cloud.db is
upgraded in place with every row kept, and the cloud works on it; a newer one is refused, unchanged.

The old databases are made here by the schema SQL of the code that made them, copied verbatim into
store_fixtures/, with rows in every table: release c69b057 (the last landed release before schema
versions), the code at 77cb6f0 (the tables and columns added since: deferred, pending_certs,
clear_retained, alerts.acked, configs.allow_empty), and a c69b057 database that the code at 77cb6f0
opened (its columns then added by ALTER TABLE, as that code did).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from cloud import cli
from cloud.platform import Cloud
from cloud.store import SchemaError, Store, _migrate, metadata
from cloud.store._partitions import is_partition
from drivers import PointInfo
from proto import wire
from tests.support.storedb import both_engines, sqlite_only

FIXTURES = Path(__file__).with_name("store_fixtures")
ADDED_BY_77CB6F0 = ("ALTER TABLE alerts ADD COLUMN acked REAL;"
                    "ALTER TABLE configs ADD COLUMN allow_empty INTEGER NOT NULL DEFAULT 0;")
ORIGINS = {
    "c69b057": ["schema_c69b057.sql", "rows_c69b057.sql"],
    "77cb6f0": ["schema_77cb6f0.sql", "rows_c69b057.sql", "rows_77cb6f0.sql"],
    "c69b057 opened by 77cb6f0": ["schema_c69b057.sql", "rows_c69b057.sql", "schema_77cb6f0.sql", ADDED_BY_77CB6F0,
                                  "rows_77cb6f0.sql"],
}
EPOCH = 8070450532247928832
TABLE = [PointInfo("m.energy", "kWh", "uint32"), PointInfo("m.power", "kW", "float32")]
TID = 305419896


def make_old(path: Path, origin: str) -> None:
    """A cloud.db as the code of `origin` left it (WAL, as that code opened it)."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    for part in ORIGINS[origin]:
        db.executescript((FIXTURES / part).read_text() if part.endswith(".sql") else part)
    db.commit()
    db.close()


def columns_of(path: Path) -> dict[str, list[str]]:
    """Each table's columns."""
    with sqlite3.connect(path) as db:
        names = [n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                          "AND name NOT LIKE 'sqlite_%'")]  # not SQLite's own (AUTOINCREMENT's)
        return {t: [r[1] for r in db.execute(f"PRAGMA table_info({t})")] for t in names}


def dump(path: Path, columns: dict[str, list[str]] | None = None) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table (of `columns`' tables and columns only, when given), sorted."""
    columns = columns_of(path) if columns is None else columns
    with sqlite3.connect(path) as db:
        return {t: sorted(db.execute(f"SELECT {', '.join(cols)} FROM {t}").fetchall(), key=repr)
                for t, cols in columns.items()}


def schema_differences(where: Path | str, *, made_before_versions: bool = False) -> list[object]:
    """What Alembic's autogenerate finds between the database and the code's tables (nothing: same schema).

    A table made before schema versions declared its one-column primary key without NOT NULL, which
    SQLite then allows (its legacy quirk); the store never writes a NULL there, and declaring it
    would copy the table: not counted for such a database.
    """
    engine = Store(where).engine
    with engine.connect() as conn:
        opts = {"compare_type": True,  # a day's partition of the time series (PostgreSQL) is not in the metadata
                "include_name": lambda name, kind, _: not (kind == "table" and is_partition(str(name)))}
        diffs = compare_metadata(MigrationContext.configure(conn, opts=opts), metadata)
    if made_before_versions:
        diffs = [d for d in diffs if not (isinstance(d, list) and d[0][0] == "modify_nullable"
                                          and d[0][3] in metadata.tables[d[0][2]].primary_key.columns)]
    return list(diffs)


@sqlite_only
@pytest.mark.parametrize("origin", list(ORIGINS))
def test_an_old_database_is_upgraded_in_place_with_every_row_kept(tmp_path: Path, origin: str) -> None:
    path = tmp_path / "cloud.db"
    make_old(path, origin)
    old_columns = columns_of(path)
    before = dump(path)
    assert all(before.values()), f"the fixture leaves a table empty: {[t for t, r in before.items() if not r]}"
    assert Store(path, migrate=False).migrate() == (None, _migrate.HEAD)
    assert dump(path, old_columns) == before  # every row, every value, of every table it had
    after = dump(path)
    assert after["alembic_version"] == [(_migrate.HEAD,)]
    assert set(after) == {*metadata.tables, "alembic_version"}
    if origin == "c69b057":  # what it lacked arrived empty, or with its default
        assert [r[-1] for r in after["alerts"]] == [None, None]
        assert [r[-1] for r in after["configs"]] == [0, 0]
        assert after["deferred"] == after["pending_certs"] == after["clear_retained"] == []
    assert schema_differences(path, made_before_versions=True) == []
    assert Store(path).migrate() == (_migrate.HEAD, _migrate.HEAD)  # nothing left to do


@sqlite_only
@pytest.mark.parametrize("origin", list(ORIGINS))
def test_the_cloud_works_on_an_upgraded_database(tmp_path: Path, origin: str) -> None:
    path = tmp_path / "cloud.db"
    make_old(path, origin)
    s = Store(path)  # upgraded on first use
    box = s.box("BOX-1")
    assert box is not None and box.online and box.cert_serial == 651236985412365478963214569874563214569874
    assert [b.box_id for b in s.boxes()] == ["BOX-1", "BOX-2"] and s.box("BOX-2").revoked  # type: ignore[union-attr]
    assert s.samples("BOX-1", "m.energy") == [("m.energy", 1700000000000, 1, 0), ("m.energy", 1700000001000, 2, 0)]
    assert s.latest("BOX-1") == [("m.energy", 1700000001000, 2, 0, "kWh"), ("m.power", 1700000001000, None, 3, "kW")]
    # the exactly-once key survived: the stored batch is refused, the next one taken
    table = s.table("BOX-1", TID)
    assert table is not None and list(table) == TABLE
    again = wire.decode_batch(wire.encode_batch(EPOCH, 1, TID, 1700000000000, [wire.encode_group(0, 0, [1, 0.5], {})]))
    assert s.store_batch("BOX-1", again, table, bytes.fromhex("00112233445566778899aabbccddeeff")) is False
    following = wire.decode_batch(wire.encode_batch(EPOCH, 5, TID, 1700000002000, [wire.encode_group(0, 0, [3], {})]))
    assert s.store_batch("BOX-1", following, table) is True
    assert s.batch_keys("BOX-1") == [(EPOCH, 1), (EPOCH, 2), (EPOCH, 5)]
    assert s.conflicts("BOX-1") == [(EPOCH, 2)] and s.missing_seqs("BOX-1", EPOCH, 5) == []  # 3-4 evicted
    assert s.unpark("BOX-1", 4000000000) == [bytes.fromhex("a1b2c3")]
    # tokens, certificates, the CRL's list
    assert s.check_token("5f1c0d") == "SN-3" and [t.serial for t in s.pending_tokens()] == ["SN-3"]
    assert sorted(serial for serial, _ in s.revoked_certs()) == [42, 123456789]
    assert s.enroll_box("BOX-2", "BOX-2", 43, 1900000000.0) == []  # re-enrolled: 42 was revoked already
    # alerts: the new ones are numbered after the old ones
    assert [a.id for a in s.alerts("BOX-1")] == [1] and s.ack_alert(1, close=True)
    assert s.open_alert("BOX-1", "rate", "", "too much") and [a.id for a in s.alerts("BOX-1")] == [3]
    # configurations, commands, tags, deployments
    assert [c.version for c in s.configs("BOX-1")] == [2, 1] and s.add_config("BOX-1", "# three") == 3
    assert s.claim_command("cmd-1") and s.command("cmd-2").result == {"value": 0.5}  # type: ignore[union-attr]
    assert s.tags() == {"BOX-1": ["floor-2", "lab"]} and s.tagged("lab") == ["BOX-1"]
    (dep,) = s.deployments("running")
    assert dep.selector == {"tag": "lab"} and [b.state for b in s.deployment_boxes("dep-1")] == ["downloading"]
    assert s.ota_events("dep-1")["BOX-1"][1]["state"] == "downloading"
    assert s.health("BOX-1") is not None and s.bad_devices("BOX-1") == [("x", 1700000180.0, "no answer")]
    if origin != "c69b057":  # what the code after c69b057 added is there too
        assert s.next_deferred("BOX-1") == (1, "data", b"\x01\x02") and s.deferred_counts() == {"BOX-1": 2}
        assert s.cert_state("BOX-1", 888) == "pending" and s.retained_to_clear() == ["BOX-2"]
        assert s.alert(1).acked == 1700000245.0 and s.configs("BOX-1")[1].allow_empty  # type: ignore[union-attr]
    s.delete_box("BOX-1")
    assert s.box("BOX-1") is None and s.samples("BOX-1") == []


@both_engines
def test_a_new_database_is_made_by_the_migrations(store_db: Path | str) -> None:
    s = Store(store_db)
    assert s.migrate() == (None, _migrate.HEAD)
    assert s.schema_revision() == _migrate.HEAD
    assert schema_differences(store_db) == []
    assert _migrate.revisions()[-1] == _migrate.HEAD  # HEAD is the newest migration in the directory


def _newer(path: Path) -> None:
    Store(path).migrate()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE alembic_version SET version_num='0099'")


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / "cloud.json").write_text(json.dumps({"host": "localhost", "broker_port": 0, "enroll_port": 0, "api_port": 0,
                                                 "bind": "127.0.0.1"}))
    return home


@sqlite_only
def test_a_database_newer_than_the_code_is_refused_by_every_command_and_left_alone(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = _home(tmp_path)
    _newer(home / "cloud.db")
    before = dump(home / "cloud.db")
    for store in (Store(home / "cloud.db"), Store(home / "cloud.db", migrate=False)):
        with pytest.raises(SchemaError, match="revision '0099', which this boxcloud does not know"):
            store.boxes()
    for command in (["box", "list"], ["alerts"], ["run"]):
        assert cli.main(["--home", str(home), *command]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "made by a newer boxcloud" in err, err
    assert dump(home / "cloud.db") == before


@sqlite_only
def test_a_command_refuses_an_old_database_until_run_upgrades_it(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    home = _home(tmp_path)
    make_old(home / "cloud.db", "c69b057")
    before = dump(home / "cloud.db")
    assert cli.main(["--home", str(home), "box", "list"]) == 1
    err = capsys.readouterr().err
    assert "older than this boxcloud's" in err and "'boxcloud run' upgrades it" in err
    assert dump(home / "cloud.db") == before
    Cloud(home).upgrade_store()  # what `boxcloud run` does first
    assert cli.main(["--home", str(home), "box", "list", "--json"]) == 0
    assert [b["box_id"] for b in json.loads(capsys.readouterr().out)] == ["BOX-1", "BOX-2"]


@sqlite_only
def test_two_processes_upgrading_at_once_take_turns(tmp_path: Path) -> None:
    path = tmp_path / "cloud.db"
    make_old(path, "c69b057")
    old_columns, before = columns_of(path), dump(path)
    done: list[tuple[str | None, str]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def upgrade() -> None:
        start.wait()
        try:
            done.append(Store(path, migrate=False).migrate())
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=upgrade) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(done, key=lambda d: d[0] or "") == [(None, _migrate.HEAD), (_migrate.HEAD, _migrate.HEAD)]
    assert dump(path, old_columns) == before


FAILING_REVISION = '''"""A revision that fails half-way (a test's)."""
import sqlalchemy as sa
from alembic import op

revision = "9999"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("samples", sa.Column("source", sa.Text()))
    raise RuntimeError("the disk is full (injected by the test)")
'''


@sqlite_only
def test_an_upgrade_that_fails_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(_migrate.MIGRATIONS, migrations, ignore=shutil.ignore_patterns("__pycache__"))
    (migrations / "versions" / "9999_fails.py").write_text(FAILING_REVISION.replace("{head}", _migrate.HEAD))
    monkeypatch.setattr(_migrate, "MIGRATIONS", migrations)
    monkeypatch.setattr(_migrate, "HEAD", "9999")
    path = tmp_path / "cloud.db"
    make_old(path, "c69b057")
    before = dump(path)
    with pytest.raises(RuntimeError, match="injected"):
        Store(path).migrate()
    assert dump(path) == before  # not even the baseline's tables: one transaction, rolled back
    with sa.create_engine(f"sqlite:///{path}").connect() as conn:
        assert "alembic_version" not in sa.inspect(conn).get_table_names()
