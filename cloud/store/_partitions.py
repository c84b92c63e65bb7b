"""Time partitions of the time series on PostgreSQL: `samples` and `spans`, one partition a UTC day.

On PostgreSQL both tables are partitioned by range of ``ts_ms`` (migration 0007): one partition a
day (``samples_d20261206`` holds [00:00, 24:00) UTC of that day) and a default partition
(``samples_default``) for any row no day partition takes, so that an insert never fails for want
of a partition. A history query names a time range: PostgreSQL reads only the days it spans
(partition pruning), and old data goes by dropping a day's table, not by a DELETE.

Partitions are made ahead by `ensure` (`Store.maintain`), run by the role that owns the schema:
by ``boxcloud init`` and ``boxcloud run`` when they upgrade the database, and by the running
cloud every hour (`cloud.platform`). It makes the partitions of yesterday, today and `AHEAD_DAYS`
ahead, and one for each day found in the default partition (a Box's backlog from before, a clock
that was wrong), within `BACK_DAYS`: those rows move from the default partition to their day's in
the same transaction, then the day's table is attached (PostgreSQL checks the default partition
holds nothing of that day). The receivers never change the schema: if maintenance stops, rows
land in the default partition, nothing is refused or lost, and the next run sorts them out.

A day's rows arrive in time order, every Box's batches interleaved: one Box's rows of an
instant share a table page, and a point's day is spread over as many pages as the Box sent
batches (a point's 7 days at 5-minute samples: 2,016 pages read, one a row). `reorder`
(`Store.reorder`, run by the running cloud every hour after `ensure`) rewrites one finished day
at a time in (Box, time) order (``CLUSTER`` on the day's ``samples_by_time`` index): the newest
day that ended `SETTLE_MS` ago or more and was not rewritten yet (``pg_index.indisclustered``
says which were). A Box's day is then a few adjacent pages (its points' rows together), read
once (docs/performance.md, "A point's history over 100 million rows"). Rows that arrive for a
rewritten day later are appended as before; that day is not rewritten again. A day bigger than
`REORDER_MAX_BYTES` stays as it came (its rewrite would hold the hourly maintenance for many
minutes: at a fleet's full rate, pg_repack or hourly partitions are the tools). ``CLUSTER`` holds
the day's partition exclusively while it copies it (reads and late writes of that day wait, up
to the connections' lock timeout; other days are not touched) and needs the day's size free
on the disk meanwhile (docs/production.md).

Nothing here on SQLite (one file, no partitions: `ensure` returns at once). No network I/O but
the database's.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

TABLES = ("samples", "spans")  # partitioned by range of ts_ms
DAY_MS = 86_400_000
AHEAD_DAYS = 7  # partitions made ahead of today
BACK_DAYS = 3650  # a day older than this (or beyond AHEAD_DAYS ahead) stays in the default partition
_LOCK = 0x626F7870  # "boxp": two maintenance runs at once take turns
SETTLE_MS = 6 * 3_600_000  # a day is rewritten in (Box, time) order once it ended this long ago
REORDER_MAX_BYTES = 4 << 30  # a bigger day stays as it came: its rewrite would hold the hourly maintenance too long


def name(table: str, day: int) -> str:
    """The partition of `table` for `day` (days since the epoch, UTC)."""
    return f"{table}_d{datetime.fromtimestamp(day * 86400, UTC):%Y%m%d}"


def is_partition(table_name: str) -> bool:
    """Whether a table is one of the partitions (not in the store's metadata: Alembic's comparison
    leaves them out)."""
    return any(table_name.startswith(f"{t}_d") or table_name == f"{t}_default" for t in TABLES)


def ensure(conn: Connection, now_s: float, ahead: int = AHEAD_DAYS) -> list[str]:
    """Make the day partitions that are missing (see the module's docstring); returns their names.
    Run in the caller's transaction, by the owner of the tables."""
    if conn.dialect.name != "postgresql":
        return []
    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK)))
    today = int(now_s // 86400)
    made = []
    for table in TABLES:
        if not _partitioned(conn, table):
            continue
        have = _days(conn, table)
        found = {int(d) for d in conn.exec_driver_sql(
            f"SELECT DISTINCT ts_ms / {DAY_MS} FROM {table}_default").scalars()}  # noqa: S608 - our names
        wanted = set(range(today - 1, today + ahead + 1)) | {d for d in found
                                                             if today - BACK_DAYS <= d <= today + ahead}
        for day in sorted(wanted - have):
            part, low, high = name(table, day), day * DAY_MS, (day + 1) * DAY_MS
            conn.exec_driver_sql(f"CREATE TABLE {part} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
            if day in found:  # its rows leave the default partition in this transaction
                conn.exec_driver_sql(
                    f"WITH moved AS (DELETE FROM {table}_default WHERE ts_ms >= {low} AND ts_ms < {high} "  # noqa: S608
                    f"RETURNING *) INSERT INTO {part} SELECT * FROM moved")
            conn.exec_driver_sql(f"ALTER TABLE {table} ATTACH PARTITION {part} FOR VALUES FROM ({low}) TO ({high})")
            made.append(part)
    return made


def reorder(conn: Connection, now_s: float) -> str | None:
    """Rewrite one finished day of `samples` in (Box, time) order (see the module's docstring);
    returns its partition's name, or None when none is left to do (or on SQLite). Run in the
    caller's transaction, by the owner of the tables, without the database's write lock."""
    if conn.dialect.name != "postgresql" or not _partitioned(conn, "samples"):
        return None
    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK)))
    rows = conn.exec_driver_sql(
        "SELECT t.relname, x.relname, pg_get_expr(t.relpartbound, t.oid) FROM pg_inherits h "
        "JOIN pg_index i ON i.indexrelid = h.inhrelid JOIN pg_class x ON x.oid = i.indexrelid "
        "JOIN pg_class t ON t.oid = i.indrelid "
        "WHERE h.inhparent = to_regclass('samples_by_time') AND NOT i.indisclustered "
        "AND pg_table_size(t.oid) <= %(most)s", {"most": REORDER_MAX_BYTES}).all()
    finished = [(low, str(table), str(index)) for table, index, bound in rows if (low := _low(bound)) is not None
                and low + DAY_MS <= now_s * 1000 - SETTLE_MS]
    if not finished:
        return None
    _, table, index = max(finished)  # the newest first: the days read most
    conn.exec_driver_sql(f'CLUSTER "{table}" USING "{index}"')
    return table


def _low(bound: str) -> int | None:
    """The lower bound of a day partition (FOR VALUES FROM ('1765065600000') TO (...)); None: DEFAULT."""
    if not bound.startswith("FOR VALUES FROM"):
        return None
    return int(bound.split("(", 1)[1].split(")", 1)[0].strip("'"))


def _partitioned(conn: Connection, table: str) -> bool:
    return conn.exec_driver_sql(
        "SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass(%(t)s)", {"t": table}).scalar() is True


def _days(conn: Connection, table: str) -> set[int]:
    """The days `table` has a partition of (read from each partition's bounds)."""
    rows = conn.exec_driver_sql(
        "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass(%(t)s)", {"t": table}).scalars()
    return {low // DAY_MS for bound in rows if (low := _low(bound)) is not None}
