"""The store at fleet scale (issue 20): exactly-once with several writers at once, on both engines;
on a real PostgreSQL server, the time series partitioned by day, made ahead, and nothing lost
when a day has no partition; an existing database partitioned by the migration, every row kept;
a point's week read through the index of its days' partitions only; finished days rewritten in
(Box, time) order, a Box's day then on a few pages, every answer the same.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from cloud.store import Store, _history, _migrate, _partitions, _telemetry
from proto import wire
from proto.points import PointInfo
from tests.support.storedb import both_engines
from tests.support.together import at_once

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

    def writer(n: int) -> None:
        s, mine = Store(store_db), list(batches)
        random.Random(n).shuffle(mine)
        for b in mine:
            if s.store_batch("BOX-1", b, TABLE, bytes([b.seq])):
                stored.append(b.seq)

    errors = at_once(writer, 3)
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


def fleet_rows(days: range, boxes: int = 30, points: int = 3, step_ms: int = 900_000) -> list[dict[str, Any]]:
    """Samples as the receivers write them: in time order, every Box's batch of an instant in turn."""
    return [{"box_id": f"BOX-{b:02d}", "point": f"d.p{p}", "ts_ms": t + b, "value": str(p + t % 7), "quality": 0}
            for t in range(days.start * DAY, days.stop * DAY, step_ms) for b in range(boxes) for p in range(points)]


def insert_durably(url: str, rows: list[dict[str, Any]]) -> None:
    """`rows` into samples, committed on the disk (VACUUM marks rows visible to all only then:
    the test server does not wait for the disk), then VACUUM (ANALYZE)."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as c:
        c.exec_driver_sql("SET LOCAL synchronous_commit = on")
        c.execute(sa.insert(_telemetry.samples), rows)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.exec_driver_sql("VACUUM (ANALYZE) samples")
    engine.dispose()


@on_postgresql
def test_a_points_week_is_read_through_the_index_of_its_days_partitions_only(store_db: str) -> None:
    """The store's query for a point's 7 days (`_history.samples_query`, what `Store.history`
    runs) reads only the partitions of those days (pruned on its constant bounds), each through
    its ``samples_by_time`` index. The planner is told to avoid sequential scans, which it rightly
    prefers on tables this small: a scan no index can serve is still planned then, and seen."""
    s = Store(store_db)
    today = int(time.time() * 1000) // DAY
    s.maintain()  # yesterday to 7 days ahead
    insert_durably(store_db, fleet_rows(range(today - 1, today + 8), boxes=3, step_ms=3_600_000))
    since = today * DAY + DAY // 2
    until = since + 7 * DAY
    engine = sa.create_engine(store_db, poolclass=sa.pool.NullPool)
    query = _history.samples_query("BOX-02", ["d.p1"], since, until, after=None, limit=1001)
    sql = str(query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
    with engine.connect() as c:
        c.exec_driver_sql("SET enable_seqscan = off")
        plan = c.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}").scalar_one()[0]["Plan"]
    engine.dispose()
    days = [_partitions.name("samples", d) for d in range(today, today + 8)]
    scans = list(_scans(plan))
    assert sorted({table for table, _, _ in scans if table}) == days
    assert {kind for _, kind, _ in scans} <= {"Index Scan", "Bitmap Heap Scan", "Bitmap Index Scan", "Index Only Scan"}
    assert sorted(index for _, _, index in scans if index) == [f"{d}_box_id_ts_ms_idx" for d in days]
    got = s.history("BOX-02", ["d.p1"], since, until, after=None, limit=1001)
    assert [t for _, t, _, _ in got] == list(range(since + 2, until, 3_600_000))
    assert {p for p, _, _, _ in got} == {"d.p1"}


def _scans(node: dict[str, Any]) -> Iterator[tuple[str | None, str, str | None]]:
    """(table, kind of scan, index) of each scan in a JSON plan."""
    if "Scan" in node["Node Type"]:
        yield node.get("Relation Name"), node["Node Type"], node.get("Index Name")
    for child in node.get("Plans", []):
        yield from _scans(child)


def pages_of(url: str, table: str, box_id: str) -> int:
    """The table pages that hold a Box's rows of `table`."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as c:
        n = c.exec_driver_sql(f"SELECT count(DISTINCT (ctid::text::point)[0]) FROM {table} "
                              "WHERE box_id = %(b)s", {"b": box_id}).scalar_one()
    engine.dispose()
    return int(n)


@on_postgresql
def test_finished_days_are_rewritten_in_box_order_newest_first_with_every_answer_the_same(store_db: str) -> None:
    """Samples of 30 Boxes over 4 days, stored as receivers store them (a Box's rows of a day on
    as many pages as it sent batches): `Store.reorder` rewrites the finished days, one a call,
    the newest first, then none; today (not finished) stays as it was. A Box's day is then on a
    few pages, and its history and aggregates are what they were."""
    s = Store(store_db)
    today = int(time.time() * 1000) // DAY
    noon = (today * DAY + DAY // 2) / 1000
    s.maintain(noon)
    insert_durably(store_db, fleet_rows(range(today - 3, today + 1)))
    assert s.maintain(noon) == [_partitions.name("samples", d) for d in (today - 3, today - 2)]  # from the default
    since, until = (today - 3) * DAY, (today + 1) * DAY
    history = s.history("BOX-07", [], since, until, after=None, limit=100_000)
    hourly = s.aggregates("BOX-07", ["d.p2"], since, until, 3_600_000, after=None, limit=1000)
    finished = [_partitions.name("samples", d) for d in (today - 1, today - 2, today - 3)]
    assert min(pages_of(store_db, d, "BOX-07") for d in finished) > 50  # spread: the test means something
    assert [s.reorder(noon) for _ in range(4)] == [*finished, None]
    assert max(pages_of(store_db, d, "BOX-07") for d in finished) <= 4  # 3 points x 96 samples together
    assert pages_of(store_db, _partitions.name("samples", today), "BOX-07") > 50  # not finished: as it was
    assert s.history("BOX-07", [], since, until, after=None, limit=100_000) == history
    assert len(history) == 4 * 96 * 3
    assert s.aggregates("BOX-07", ["d.p2"], since, until, 3_600_000, after=None, limit=1000) == hourly


@on_postgresql
def test_a_finished_day_too_big_to_rewrite_stays_as_it_came(store_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A day bigger than `_partitions.REORDER_MAX_BYTES` is not rewritten (the hourly maintenance
    is not held for long): its rows stay where they were, and nothing else is left to do."""
    s = Store(store_db)
    today = int(time.time() * 1000) // DAY
    noon = (today * DAY + DAY // 2) / 1000
    s.maintain(noon)
    insert_durably(store_db, fleet_rows(range(today - 1, today)))
    yesterday = _partitions.name("samples", today - 1)
    spread = pages_of(store_db, yesterday, "BOX-07")
    monkeypatch.setattr(_partitions, "REORDER_MAX_BYTES", 16384)  # two pages: this day has more
    assert s.reorder(noon) is None
    assert pages_of(store_db, yesterday, "BOX-07") == spread > 50


@on_postgresql
def test_while_a_day_is_rewritten_batches_and_history_of_other_days_do_not_wait(store_db: str) -> None:
    """The rewrite of a finished day holds that day's partition alone (``CLUSTER`` takes it
    exclusively): held here the same way, a receiver stores today's batch and a user reads
    today's history, neither waiting for it (a wait would end in the store's lock timeout: an
    error, and the test fails), also once their statements are prepared and their plans cached
    (a generic plan locks every partition before it prunes: `_dialect.plan_by_values`)."""
    s = Store(store_db)
    s.maintain()
    s.put_table("BOX-1", TID, TABLE)
    now = int(time.time() * 1000)
    yesterday = _partitions.name("samples", now // DAY - 1)
    writer, reader = Store(store_db), Store(store_db)
    for seq in range(1, 11):  # as a receiver and the API run: statements prepared, plans cached
        assert writer.store_batch("BOX-1", batch(seq, now - 600_000 + seq * 10_000), TABLE)
        assert reader.history("BOX-1", ["d.p3"], now - 3_600_000, now, after=None, limit=10)
    engine = sa.create_engine(store_db, poolclass=sa.pool.NullPool)
    with engine.connect() as rewrite, rewrite.begin():
        rewrite.exec_driver_sql(f"LOCK TABLE {yesterday} IN ACCESS EXCLUSIVE MODE")
        assert writer.store_batch("BOX-1", batch(11, now), TABLE)
        got = reader.history("BOX-1", ["d.p3"], now, now + 1000, after=None, limit=10)
        assert [(p, t) for p, t, _, _ in got] == [("d.p3", now)]
    engine.dispose()


def test_reorder_on_sqlite_has_nothing_to_do(store: Store) -> None:
    """On SQLite (one file, no partitions) `Store.reorder` does nothing and says so."""
    assert store.reorder() is None
