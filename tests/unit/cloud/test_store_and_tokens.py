"""Enrollment tokens and exactly-once storage of batches (the database, without a broker).

On SQLite, or on the database BOXCLOUD_TEST_DATABASE_URL names (tests/support/storedb.py).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from cloud.enroll import check_serial, new_token, token_hash
from cloud.errors import EnrollmentError, StoreError
from cloud.store import Store, _dialect, metadata
from drivers import PointInfo, Value
from proto import wire
from proto.errors import WireError
from tests.support.storedb import both_engines, sqlite_only

pytestmark = both_engines  # every test that takes the store runs on SQLite and PostgreSQL

TABLE = [PointInfo("a.t", "degC", "float32"), PointInfo("a.on", "", "bool")]


def test_tokens_are_single_use_and_expire(store: Store) -> None:
    s = store
    tok = new_token()
    s.add_token(token_hash(tok), "SN-1", 60)
    assert s.claim_token(token_hash(tok.lower().replace("-", ""))) == "SN-1"
    with pytest.raises(EnrollmentError, match="already been used"):
        s.claim_token(token_hash(tok))
    old = new_token()
    s.add_token(token_hash(old), "SN-2", -1)
    with pytest.raises(EnrollmentError, match="expired"):
        s.claim_token(token_hash(old))
    with pytest.raises(EnrollmentError, match="not valid"):
        s.claim_token(token_hash(new_token()))


def test_a_released_token_can_be_used_again(store: Store) -> None:
    s = store
    tok = new_token()
    s.add_token(token_hash(tok), "SN-1", 60)
    s.claim_token(token_hash(tok))
    s.release_token(token_hash(tok))
    assert s.claim_token(token_hash(tok)) == "SN-1"


@pytest.mark.parametrize("serial", ["", "a/b", "a+b", "#", "x" * 65, "-lead", "a b"])
def test_serials_that_would_break_topics_are_refused(serial: str) -> None:
    with pytest.raises(EnrollmentError, match="invalid serial"):
        check_serial(serial)


def test_each_batch_is_stored_once(store: Store) -> None:
    s = store
    s.enroll_box("SN-1", "SN-1", 42, 2e9)
    tid = wire.table_id(TABLE)
    s.put_table("SN-1", tid, TABLE)
    batch = wire.decode_batch(wire.encode_batch(5, 1, tid, 1000, [wire.encode_group(0, 0, [21.5, True], {})]))
    assert s.store_batch("SN-1", batch, TABLE) is True
    assert s.store_batch("SN-1", batch, TABLE) is False
    assert sorted(s.samples("SN-1")) == [("a.on", 1000, True, 0), ("a.t", 1000, 21.5, 0)]
    other_epoch = wire.decode_batch(wire.encode_batch(6, 1, tid, 2000, [wire.encode_group(0, 0, [22.0, False], {})]))
    assert s.store_batch("SN-1", other_epoch, TABLE) is True
    assert {p: v for p, _, v, _, _ in s.latest("SN-1")} == {"a.t": 22.0, "a.on": False}


def test_reenrollment_revokes_every_earlier_certificate(store: Store) -> None:
    s = store
    assert s.enroll_box("SN-1", "SN-1", 1, 2e9) == []
    s.renew_cert("SN-1", 1, 2, 2e9)  # 2 pending
    s.confirm_cert("SN-1", 2)  # 2 current, 1 revoked
    s.renew_cert("SN-1", 2, 3, 2e9)  # 3 pending
    assert s.enroll_box("SN-1", "SN-1", 4, 2e9) == [2, 3]
    assert sorted(serial for serial, _ in s.revoked_certs()) == [1, 2, 3]
    assert s.cert_state("SN-1", 4) == "current"
    assert all(s.cert_state("SN-1", n) is None for n in (1, 2, 3))


def test_a_new_token_cancels_the_earlier_one_and_a_guess_takes_no_write_lock(store: Store) -> None:
    s = store
    first, second = new_token(), new_token()
    assert s.add_token(token_hash(first), "SN-1", 60)[1] == 0
    assert s.add_token(token_hash(second), "SN-1", 60)[1] == 1
    assert [t.serial for t in s.pending_tokens()] == ["SN-1"]
    with pytest.raises(EnrollmentError, match="not valid"):
        s.claim_token(token_hash(first))
    with s.engine.connect() as other, other.begin():
        _dialect.begin_write(other)  # another writer holds the lock
        with pytest.raises(EnrollmentError, match="not valid"):
            s.claim_token(token_hash(new_token()))  # answered without waiting for the lock
    assert s.cancel_tokens("SN-1") == 1 and s.pending_tokens() == []


def test_a_write_the_database_cannot_take_is_a_store_error_and_the_store_goes_on(
        store_db: Path | str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the receiver counts on: a batch not stored raises StoreError (it is then not acknowledged)."""
    monkeypatch.setattr(_dialect, "BUSY_TIMEOUT_S", 1)  # instead of 30 s
    s = Store(store_db)
    s.put_table("SN-1", wire.table_id(TABLE), TABLE)
    with s.engine.connect() as other:
        # another writer holds the lock (SQLite's) and the batch's key (PostgreSQL's row lock: a batch
        # takes no database-wide lock there) longer than the store waits, and then gives up
        tx = other.begin()
        _dialect.begin_write(other)
        other.execute(sa.insert(metadata.tables["batches"]).values(box_id="SN-1", epoch=5, seq=1, received=0, n=0))
        with pytest.raises(StoreError, match="the cloud database"):
            s.store_batch("SN-1", _batch(1, 1000, [wire.encode_group(0, 0, [1.0, True], {})]), TABLE)
        tx.rollback()
    assert s.batch_keys("SN-1") == []
    assert s.store_batch("SN-1", _batch(1, 1000, [wire.encode_group(0, 0, [1.0, True], {})]), TABLE)


def test_writers_at_once_take_turns(store_db: Path | str) -> None:
    """Two processes pushing configurations to one Box at once get a version each (the next version
    is read and written under the write lock)."""
    errors: list[BaseException] = []

    def push(n: int) -> None:
        s = Store(store_db)  # a store of its own, as another boxcloud process has
        try:
            for i in range(25):
                s.add_config("SN-1", f"# {n}.{i}")
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=push, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(c.version for c in Store(store_db).configs("SN-1", 100)) == list(range(1, 51))


def _batch(seq: int, base: int, groups: list[list[object]], table: list[PointInfo] = TABLE) -> wire.Batch:
    return wire.decode_batch(wire.encode_batch(5, seq, wire.table_id(table), base, groups))


def test_every_value_is_stored_as_its_own_json_text(store: Store) -> None:
    table = [PointInfo(f"d.p{i}", "", "x") for i in range(9)]
    values: list[Value] = [1, -2, 3.25, True, False, None, "a,b \"c\"", 2**64 - 1, float("inf")]
    s = store
    s.put_table("SN-1", wire.table_id(table), table)
    assert s.store_batch("SN-1", _batch(1, 1000, [wire.encode_group(0, 0, values, {5: 1})], table), table)
    assert s.store_batch("SN-1", _batch(2, 2000, [wire.encode_group(0, 0, values[:6], {})], table), table)
    samples = metadata.tables["samples"]
    with s.engine.connect() as db:
        texts = list(db.execute(sa.select(samples.c.value).order_by(samples.c.ts_ms, samples.c.point)).scalars())
    assert texts == [json.dumps(v) for v in values + values[:6]]
    assert [(p, v, q) for p, _, v, q in s.samples("SN-1")][:9] == [
        (f"d.p{i}", v, 1 if i == 5 else 0) for i, v in enumerate(values)]


def test_latest_holds_each_points_newest_sample_whatever_the_order_of_groups(store: Store) -> None:
    s = store
    groups = [wire.encode_group(20, 0, [3.0, True], {}), wire.encode_group(0, 0, [1.0, False], {}),
              wire.encode_group(20, 0, [4.0], {}), wire.encode_group(10, 1, [None], {0: 5})]
    assert s.store_batch("SN-1", _batch(1, 1000, groups), TABLE)
    assert [(p, t, v, q, u) for p, t, v, q, u in s.latest("SN-1")] == [
        ("a.on", 1020, True, 0, ""), ("a.t", 1020, 4.0, 0, "degC")]  # a tie: the later in the batch
    assert s.store_batch("SN-1", _batch(2, 500, [wire.encode_group(0, 0, [9.0, False], {})]), TABLE)
    assert {p: t for p, t, *_ in s.latest("SN-1")} == {"a.on": 1020, "a.t": 1020}  # an older batch
    assert [t for _, t, _, _ in s.samples("SN-1")] == [500, 500, 1000, 1000, 1010, 1020, 1020, 1020]


def test_a_batch_of_many_samples_is_stored_whole_each_sample_once(store: Store) -> None:
    """Hundreds of samples (the store writes them many rows a statement, and the rest one a statement)."""
    table = [PointInfo(f"d{i // 100}.p{i % 100}", "kWh", "float32") for i in range(250)]
    first, later = [float(i) for i in range(250)], [1000.0 + i for i in range(120)]
    batch = _batch(1, 5000, [wire.encode_group(0, 0, first, {7: 4}), wire.encode_group(10, 0, later, {})], table)
    assert store.store_batch("SN-1", batch, table) is True
    stored = store.samples("SN-1")
    assert len(stored) == 370 and sorted((p, t, v) for p, t, v, _ in stored) == sorted(
        [(table[i].name, 5000, first[i]) for i in range(250)] + [(table[i].name, 5010, later[i]) for i in range(120)])
    assert [q for p, t, _, q in stored if q] == [4]
    newest = {p: (t, v) for p, t, v, _, _ in store.latest("SN-1")}
    assert newest == {table[i].name: (5010, later[i]) if i < 120 else (5000, first[i]) for i in range(250)}
    assert store.store_batch("SN-1", batch, table) is False and len(store.samples("SN-1")) == 370


def test_numbers_too_large_for_the_database_are_refused_and_nothing_is_stored(store: Store) -> None:
    for epoch, base in ((2**63, 1000), (5, 2**63 - 5)):
        big = wire.decode_batch(wire.encode_batch(epoch, 1, wire.table_id(TABLE), base,
                                                  [wire.encode_group(10, 0, [1.0, True], {})]))
        with pytest.raises(WireError, match="too large to store"):
            store.store_batch("SN-1", big, TABLE)
    assert store.samples("SN-1") == [] and store.batch_keys("SN-1") == []


def test_a_group_past_the_table_is_refused_and_nothing_is_stored(store: Store) -> None:
    s = store
    with pytest.raises(WireError, match="runs past"):
        s.store_batch("SN-1", _batch(1, 1000, [wire.encode_group(0, 1, [1.0, 2.0], {})]), TABLE)
    assert s.samples("SN-1") == [] and s.batch_keys("SN-1") == []


def test_point_tables_are_read_once_and_know_their_devices(store: Store) -> None:
    table = [PointInfo("a.x", "", "bool"), PointInfo("a.y", "", "bool"), PointInfo("b.x", "", "bool"),
             PointInfo("a.z", "", "bool")]
    s = store
    s.put_table("SN-1", 7, table)
    got = s.table("SN-1", 7)
    assert got is not None and list(got) == table and s.table("SN-1", 7) is got and s.table("SN-1", 8) is None
    assert got.devices == ("a", "a", "b", "a") and got.run_end == (2, 2, 3, 4)


@sqlite_only
def test_an_old_database_loses_the_per_point_index_for_the_time_index(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "c.db") as db:
        db.execute("CREATE TABLE samples (box_id TEXT NOT NULL, point TEXT NOT NULL, ts_ms INTEGER NOT NULL, "
                   "value TEXT, quality INTEGER NOT NULL)")
        db.execute("CREATE INDEX samples_by_point ON samples (box_id, point, ts_ms)")
    Store(tmp_path / "c.db").boxes()
    with sqlite3.connect(tmp_path / "c.db") as db:
        names = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "samples_by_time" in names and "samples_by_point" not in names
