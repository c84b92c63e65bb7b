"""The dialect seam: what differs between SQLite and PostgreSQL, and nothing else.

Everything else in the store is SQLAlchemy Core that both databases speak. Here:

- `engine`: for a file path, SQLite with the file and its -wal/-shm 0600 in a 0700 directory,
  WAL, `synchronous=FULL` (a commit is on the disk), a 30 s busy timeout, and the driver's own
  transaction handling off (the store says BEGIN itself); for a URL (``postgresql+psycopg://...``),
  an engine on it as given.
- `begin_write`: a write transaction holds the database's one write lock from its start, as
  SQLite's ``BEGIN IMMEDIATE`` does (PostgreSQL: a transaction-level advisory lock), so that a
  read-then-write (the next configuration version, a token claimed, a deployment's conflicts)
  never interleaves with another writer; on PostgreSQL a transaction whose writes are all keyed
  (a batch stored) takes none, and writers go in parallel. Reads take no lock.
- `plan_by_values`: on PostgreSQL, a read of the time series is planned with its values each
  time, never with a cached generic plan, which would lock (and set up) every day partition
  before pruning them: a day being rewritten (`_partitions.reorder`) or dropped would hold up
  every history read;
- `SECONDS`, `BIGINT`: column types of the same size on both;
- `Upsert`: ``INSERT ... ON CONFLICT`` through each dialect's own ``insert()``.
- `Prepared`, `BulkInsert`, `NewKeys`: statements compiled once per dialect and run on the driver's
  cursor, many rows a statement: the hot paths (a group of batches, their samples; what every API
  request reads) without SQLAlchemy's work per execution.

No network I/O but the database's; `engine` creates nothing until a connection opens.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.engine.interfaces import DBAPICursor
from sqlalchemy.pool import ConnectionPoolEntry, NullPool
from sqlalchemy.sql.dml import Insert, UpdateBase
from sqlalchemy.sql.selectable import Select

from boxkit.files import private_db, private_dir

# Column types that mean the same on both. SQLite's REAL and INTEGER are 8 bytes, and a database
# made before schema versions declares them so: new ones do too. PostgreSQL's REAL and INTEGER are
# 4 bytes: a time there is DOUBLE PRECISION, and a number beyond 32 bits BIGINT.
SECONDS: sa.types.TypeEngine[float] = sa.Double().with_variant(sa.REAL(), "sqlite")  # seconds since the epoch
BIGINT: sa.types.TypeEngine[int] = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # epochs, seqs, ms, keys

BUSY_TIMEOUT_S = 30  # a writer waits this long for another's transaction before failing
_PG_WRITE_LOCK = 0x626F7863  # "boxc": the key of the advisory lock every write transaction takes


def engine(where: Path | str) -> Engine:
    """An engine on a SQLite file (a path) or on a database URL. No I/O until a connection opens."""
    # each thread of the store holds its connection (cloud.store._base): no pool to wait for;
    # each connection ends its transactions itself (no rollback on return)
    if isinstance(where, str):
        url = sa.make_url(where)
        # a writer waits for the write lock (an advisory lock) as long as SQLite's busy timeout
        options = {"options": f"-c lock_timeout={BUSY_TIMEOUT_S}s"} if url.get_backend_name() == "postgresql" else {}
        return sa.create_engine(url, poolclass=NullPool, pool_reset_on_return=None, connect_args=options)
    path = where
    eng = sa.create_engine(
        sa.URL.create("sqlite", database=str(path)), poolclass=NullPool, pool_reset_on_return=None,
        connect_args={"timeout": BUSY_TIMEOUT_S, "isolation_level": None, "check_same_thread": False})

    @sa.event.listens_for(eng, "do_connect")
    def _private(*_: object) -> None:  # before SQLite opens it: it makes -wal and -shm with the file's mode
        if not path.parent.exists():
            private_dir(path.parent)
        private_db(path)

    @sa.event.listens_for(eng, "connect")
    def _pragmas(dbapi: sqlite3.Connection, _: ConnectionPoolEntry) -> None:
        dbapi.execute("PRAGMA journal_mode=WAL")
        dbapi.execute("PRAGMA synchronous=FULL")

    return eng


def begin_write(conn: Connection, *, keyed: bool = False) -> None:
    """Take the database's write lock at the start of the transaction `conn` has just begun.

    `keyed`: every write of the transaction goes through a unique key (an insert that skips a key
    stored already, an upsert, an update of one row by its key), always in the same order, and no
    decision rests on a read of rows another writer may be changing: then, on PostgreSQL, its row
    locks order it against other writers and it takes no database-wide lock (several receivers
    store batches at once; the (Box, epoch, seq) key keeps each stored once). SQLite has one
    writer at a time whatever."""
    if conn.dialect.name == "sqlite":
        conn.connection.driver_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]
    elif conn.dialect.name == "postgresql" and not keyed:
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_WRITE_LOCK)))


def lock_writes(conn: Connection) -> None:
    """Take the database's write lock inside a transaction begun `keyed`, before its first write
    (SQLite's transactions hold it from their start already)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_WRITE_LOCK)))


def plan_by_values(conn: Connection) -> None:
    """In the read transaction `conn` has just begun (PostgreSQL): plan each statement with its
    values (``plan_cache_mode``), so that only the partitions of its time range are locked and
    read (see the module's docstring). Nothing on SQLite."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")


def _insert(dialect: Dialect, table: sa.Table) -> Any:
    if dialect.name == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table)
    if dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql  # imported when used: 25 ms of every command's start

        return postgresql.insert(table)
    raise NotImplementedError(f"no upsert for the {dialect.name} dialect")


class Upsert:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE SET ... [WHERE ...]``, or ``DO NOTHING`` without `set_`.

    `set_` and `where` receive the dialect's ``excluded`` (the row that was not inserted) and
    return the assignments and the condition. Built once per dialect; execute it with the row
    as parameters: ``conn.execute(UPSERT(conn), {"box_id": ..., ...})``.
    """

    def __init__(self, table: sa.Table, keys: Sequence[str] = (),
                 set_: Callable[[Any], Mapping[str, Any]] | None = None,
                 where: Callable[[Any], sa.ColumnElement[bool]] | None = None) -> None:
        self.table, self.keys, self.set_, self.where = table, list(keys), set_, where
        self._built: dict[str, Insert] = {}

    def __call__(self, conn: Connection) -> Insert:
        stmt = self._built.get(conn.dialect.name)
        if stmt is None:
            ins = _insert(conn.dialect, self.table)
            if self.set_ is None:
                stmt = ins.on_conflict_do_nothing(index_elements=self.keys or None)
            else:
                stmt = ins.on_conflict_do_update(index_elements=self.keys, set_=dict(self.set_(ins.excluded)),
                                                 where=self.where(ins.excluded) if self.where else None)
            self._built[conn.dialect.name] = stmt
        return stmt


class Prepared:
    """A Core statement compiled once per dialect, run on the driver's cursor with a row as a tuple.

    `params` names the statement's bind parameters in the order of the row's values. For the hot
    path only: SQLAlchemy does no work per execution (no type processing: the values must be what
    the driver takes: str, int, float, bytes, None, and a SELECT's rows are the driver's tuples), and
    the driver's errors are its own (`StoreBase._tx` and `_read` wrap them).
    """

    def __init__(self, build: Callable[[Connection], UpdateBase | Select[Any]], params: Sequence[str]) -> None:
        self.build, self.params = build, tuple(params)
        self._compiled: dict[str, tuple[str, bool]] = {}

    def _sql(self, conn: Connection) -> tuple[str, bool]:
        got = self._compiled.get(conn.dialect.name)
        if got is None:
            got = self._compiled[conn.dialect.name] = _compile(self.build(conn), conn.dialect, self.params)
        return got

    def run(self, conn: Connection, row: tuple[object, ...]) -> int:
        """Execute with one row; returns the rows it changed."""
        sql, positional = self._sql(conn)
        cur = _cursor(conn)
        cur.execute(sql, row if positional else dict(zip(self.params, row, strict=True)))
        return int(cur.rowcount)

    def run_many(self, conn: Connection, rows: Sequence[tuple[object, ...]]) -> None:
        """Execute once a row, in the rows' order (one ``executemany``: psycopg pipelines it)."""
        if not rows:
            return
        sql, positional = self._sql(conn)
        _cursor(conn).executemany(sql, rows if positional else [dict(zip(self.params, r, strict=True)) for r in rows])

    def rows(self, conn: Connection, row: tuple[object, ...]) -> list[tuple[Any, ...]]:
        """A SELECT's rows (the driver's tuples, in the statement's columns' order)."""
        sql, positional = self._sql(conn)
        cur = _cursor(conn)
        cur.execute(sql, row if positional else dict(zip(self.params, row, strict=True)))
        return [tuple(r) for r in cur.fetchall()]

    def mappings(self, conn: Connection, row: tuple[object, ...]) -> list[dict[str, Any]]:
        """A SELECT's rows as column name -> value."""
        sql, positional = self._sql(conn)
        cur = _cursor(conn)
        cur.execute(sql, row if positional else dict(zip(self.params, row, strict=True)))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


class BulkInsert:
    """An INSERT (or upsert) of many rows given as tuples, in the columns' order: the hot path's.

    On SQLite, `ROWS` rows a statement (``INSERT ... VALUES (...), (...), ...``, compiled once) run
    as one ``executemany`` on the driver's cursor, the rest one row a statement: a third less work
    a row than a row a statement (docs/performance.md). On PostgreSQL, a plain insert
    (`BulkInsert.into`) streams its rows through ``COPY ... FROM STDIN`` (psycopg's, in the
    store's transaction: one round trip, no statement a row); an upsert is one statement whatever
    the rows, its VALUES an ``unnest`` of one array a column (the rows in their order: a writer
    sorting them locks them in that order). The rows of one call must not repeat an upsert's key.
    """

    ROWS = 100

    def __init__(self, build: Callable[[Connection], Insert], columns: Sequence[str], *,
                 copy: str | None = None) -> None:
        self.build, self.columns, self.copy = build, tuple(columns), copy
        self._compiled: dict[int, str] = {}  # SQLite: rows a statement -> SQL
        self._unnest: str | None = None  # PostgreSQL: the statement over arrays

    @classmethod
    def into(cls, table: sa.Table) -> BulkInsert:
        """A plain insert of every column of `table` (COPY on PostgreSQL)."""
        columns = [c.name for c in table.columns]
        quoted = ", ".join(f'"{c}"' for c in columns)
        return cls(lambda _: table.insert(), columns, copy=f'COPY "{table.name}" ({quoted}) FROM STDIN')

    def _sql(self, conn: Connection, rows: int) -> str:
        sql = self._compiled.get(rows)
        if sql is None:
            stmt = self.build(conn).values([{c: sa.bindparam(f"{c}_{i}") for c in self.columns} for i in range(rows)])
            params = [f"{c}_{i}" for i in range(rows) for c in self.columns]
            sql = self._compiled[rows] = _compile(stmt, conn.dialect, params)[0]
        return sql

    def _over_arrays(self, conn: Connection) -> str:
        """The statement with ``SELECT * FROM unnest(%(column)s::type[], ...)`` for its VALUES (PostgreSQL)."""
        if self._unnest is None:
            stmt = self.build(conn).values({c: sa.bindparam(c) for c in self.columns})
            sql, _ = _compile(stmt, conn.dialect, self.columns)
            head, values = sql.split(" VALUES (", 1)
            last = f"%({self.columns[-1]})s"
            tail = values[values.index(")", values.rindex(last) + len(last)) + 1:]  # after VALUES (...)
            table = stmt.table
            arrays = ", ".join(f"%({c})s::{table.c[c].type.compile(conn.dialect)}[]" for c in self.columns)
            self._unnest = f"{head} SELECT * FROM unnest({arrays}){tail}"  # noqa: S608 (the schema's names)
        return self._unnest

    def run(self, conn: Connection, rows: Sequence[tuple[object, ...]]) -> None:
        """Insert every row (nothing for none)."""
        if not rows:
            return
        if conn.dialect.name == "postgresql" and self.copy is not None:
            with _cursor(conn).copy(self.copy) as copy:  # psycopg's
                for r in rows:
                    copy.write_row(r)
            return
        if conn.dialect.name == "postgresql":
            _cursor(conn).execute(self._over_arrays(conn), dict(zip(self.columns, map(list, zip(*rows, strict=True)),
                                                                    strict=True)))
            return
        if conn.dialect.name != "sqlite":
            conn.execute(self.build(conn), [dict(zip(self.columns, r, strict=True)) for r in rows])
            return
        n = self.ROWS
        whole = len(rows) - len(rows) % n
        cur = _cursor(conn)
        if whole:
            cur.executemany(self._sql(conn, n), [list(chain.from_iterable(rows[k:k + n])) for k in range(0, whole, n)])
        if whole < len(rows):
            cur.executemany(self._sql(conn, 1), rows[whole:])


class NewKeys:
    """An insert of many rows that skips those whose key is stored already, and says which rows it
    inserted (by their key, the table's first `keys` columns): the batches of a group.

    On PostgreSQL one statement whatever the rows (``INSERT ... SELECT * FROM unnest(arrays) ON
    CONFLICT DO NOTHING RETURNING key``: one round trip), its rows inserted in the order given (so
    that writers sorting their keys lock them in one order); on SQLite one statement a row (no
    round trips there), its row count saying whether it inserted. Rows as tuples of every column.
    """

    def __init__(self, table: sa.Table, keys: int) -> None:
        self.table, self.keys = table, keys
        self._skip = Prepared(Upsert(table), [c.name for c in table.columns])  # DO NOTHING on any conflict
        self._pg: str | None = None

    def run(self, conn: Connection, rows: Sequence[tuple[object, ...]]) -> set[tuple[Any, ...]]:
        """Insert the rows not stored yet; the keys of those it inserted."""
        if conn.dialect.name != "postgresql":
            return {r[:self.keys] for r in rows if self._skip.run(conn, r) == 1}
        if self._pg is None:
            cols = list(self.table.columns)
            arrays = ", ".join(f"%s::{c.type.compile(conn.dialect)}[]" for c in cols)
            names = [f'"{c.name}"' for c in cols]
            self._pg = (f'INSERT INTO "{self.table.name}" ({", ".join(names)}) SELECT * FROM unnest({arrays}) '  # noqa: S608 (the schema's names)
                        f"ON CONFLICT DO NOTHING RETURNING {', '.join(names[:self.keys])}")
        if not rows:
            return set()
        cur = _cursor(conn)
        cur.execute(self._pg, [list(col) for col in zip(*rows, strict=True)])
        return {tuple(r) for r in cur.fetchall()}


def no_limit_params(stmt: Select[Any], limit: int) -> Select[Any]:
    """`stmt` with LIMIT `limit` in its SQL (SQLAlchemy binds LIMIT and OFFSET as parameters)."""
    return stmt.limit(sa.literal_column(str(int(limit)))).offset(sa.literal_column("0"))


def _compile(stmt: UpdateBase | Select[Any], dialect: Dialect, params: Sequence[str]) -> tuple[str, bool]:
    """(SQL, positional) of `stmt`, checked to take exactly `params` (in that order when positional)."""
    if isinstance(stmt, Insert):  # no implicit RETURNING of a generated key: nobody reads it back, and
        stmt = stmt.inline()      # a role that may only insert (the receiver's, into the feed) may not read it
    compiled = stmt.compile(dialect=dialect)
    names = tuple(compiled.positiontup or compiled.params)
    if sorted(names) != sorted(params) or (compiled.positional and names != tuple(params)):
        raise AssertionError(f"bind parameters {names[:12]} are not {tuple(params)[:12]}")
    return str(compiled), compiled.positional


def _cursor(conn: Connection) -> DBAPICursor:
    """The driver's cursor of `conn`'s connection, made once: it runs in whatever transaction the
    connection has begun."""
    info = conn.connection.info
    cur: DBAPICursor | None = info.get("prepared_cursor")
    if cur is None:
        cur = info["prepared_cursor"] = conn.connection.cursor()
    return cur
