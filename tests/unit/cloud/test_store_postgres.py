"""The store at fleet scale (issue 20): exactly-once with several writers at once, on both engines;
on a real PostgreSQL server, the time series partitioned by day, made ahead, and nothing lost
when a day has no partition; an existing database partitioned by the migration, every row kept.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from cloud.store import Store, _migrate, _partitions
from proto import wire
from proto.points import PointInfo
from tests.support.storedb import both_engines

TABLE = [PointInfo(f"d.p{i}", "kW", "float32") for i in range(20)]
TID = wire.table_id(TABLE)
DAY = 86_400_000
on_postgresql = pytest.mark.parametrize("store_db", ["postgresql"], indirect=True)


def batch(seq: int, ts_ms: int, epoch: int = 1) -> wire.Batch:
    return wire.decode_batch(wire.encode_batch(epoch, seq, TID, ts_ms, [
        wire.encode_group(0, 0, [float(seq * 100 + i) for i in range(20)], {}),
        wire.encode_group(1000, 0, 20, {})]))  # and a span: the 20 points polled again, unchanged


def counts(url: str, table: str) -> dict[str, int]:
    """Rows of `table` per partition."""
    with Store(url).engine.connect() as c:
        rows = c.exec_driver_sql(f"SELECT tableoid::regclass::text, count(*) FROM {table} GROUP BY 1")
        return {str(p): int(n) for p, n in rows}


@both_engines
def test_a_batch_stored_by_several_writers_at_once_is_stored_once(store_db: Path | str) -> None:
    """Three writers (each a store of its own: receivers in three processes) store the same 30
    batches at once, each in its own order: each batch is stored once, each sample once."""
    Store(store_db).put_table("BOX-1", TID, TABLE)
    base = int(time.time() * 1000)
    batches = [batch(s, base + s * 10_000) for s in range(1, 31)]
    stored: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def writer(n: int) -> None:
        s, mine = Store(store_db), list(batches)
        random.Random(n).shuffle(mine)
        try:
            start.wait(30)
            for b in mine:
                if s.store_batch("BOX-1", b, TABLE, bytes([b.seq])):
                    stored.append(b.seq)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    s = Store(store_db)
    assert sorted(stored) == list(range(1, 31))  # stored once: True once, False for the others
    assert s.batch_keys("BOX-1") == [(1, q) for q in range(1, 31)] and s.conflicts("BOX-1") == []
    got = s.samples("BOX-1")
    assert len(got) == 30 * 20 and len({(p, t) for p, t, _, _ in got}) == 30 * 20
    assert sorted(float(str(v)) for p, _, v, _ in got if p == "d.p3") == [float(q * 100 + 3) for q in range(1, 31)]


@on_postgresql
def test_samples_go_to_their_days_partition_and_a_day_without_one_loses_nothing(store_db: str) -> None:
    """Today's rows land in today's partition (made by the migrations, ahead); a Box's backlog
    from a year ago and a clock a month ahead land in the default partition, stored all the same;
    maintenance moves the old day into a partition of its own; history is the same throughout."""
    s = Store(store_db)
    s.put_table("BOX-1", TID, TABLE)
    now = int(time.time() * 1000)
    year_ago, month_ahead = now - 365 * DAY, now + 30 * DAY
    for seq, ts in enumerate((now, year_ago, month_ahead), 1):
        assert s.store_batch("BOX-1", batch(seq, ts), TABLE)
    today, old = _partitions.name("samples", now // DAY), _partitions.name("samples", year_ago // DAY)
    assert counts(store_db, "samples") == {today: 20, "samples_default": 40}
    assert counts(store_db, "spans") == {_partitions.name("spans", now // DAY): 1, "spans_default": 2}

    def history() -> list[tuple[str, int, object, int]]:
        return s.history("BOX-1", ["d.p0", "d.p7"], year_ago - DAY, month_ahead + DAY, after=None, limit=100)

    before = history()
    assert len(before) == 3 * 2 * 2  # three batches, two points, a value and a poll unchanged each
    assert old in s.maintain()
    assert counts(store_db, "samples") == {today: 20, old: 20, "samples_default": 20}  # a month ahead: not yet
    assert counts(store_db, "spans")["spans_default"] == 1
    assert history() == before and s.maintain() == []  # made once


@on_postgresql
def test_the_migration_partitions_an_existing_database_and_keeps_every_row(store_db: str) -> None:
    """A PostgreSQL database at revision 0004 (plain tables) with rows: upgraded, every row kept,
    the time series partitioned, each day's rows in that day's partition."""
    engine = sa.create_engine(store_db, poolclass=sa.pool.NullPool)
    now = int(time.time() * 1000)
    with engine.connect() as c, c.begin():
        command.upgrade(_migrate.config(c), "0004")
        c.exec_driver_sql("INSERT INTO samples VALUES ('BOX-1', 'd.p0', %(t)s, '1.5', 0), "
                          "('BOX-1', 'd.p0', %(o)s, '2.5', 0)", {"t": now, "o": now - 400 * DAY})
        c.exec_driver_sql("INSERT INTO spans VALUES ('BOX-1', 1, 2, %(tid)s, %(t)s, 0, 20)", {"t": now, "tid": TID})
    engine.dispose()
    s = Store(store_db)
    assert s.migrate() == ("0004", _migrate.HEAD)
    old = _partitions.name("samples", (now - 400 * DAY) // DAY)  # a day found in the rows: its own too
    assert counts(store_db, "samples") == {_partitions.name("samples", now // DAY): 1, old: 1}
    assert counts(store_db, "spans") == {_partitions.name("spans", now // DAY): 1}
    assert sorted(s.samples("BOX-1")) == [("d.p0", now - 400 * DAY, 2.5, 0), ("d.p0", now, 1.5, 0)]
