"""The store's metadata, connections and transactions, under every concern's methods.

`metadata` holds every table (each concern module adds its own). `StoreBase` owns the engine
and one connection per thread (opened on its first use, closed when the thread ends), and the
two ways to use it: `_read()` (no lock: a guess at a token never waits for a writer) and `_tx()`
(one write transaction, holding the write lock from its start, committed at the end of the
block or rolled back on any exception). Database failures leave here as `StoreError`; the
store's own refusals (EnrollmentError, WireError...) pass through unchanged.

On first use the database's schema is checked against this code's migrations
(`cloud.store._migrate`): brought up to date, or refused when newer.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from cloud.store import _dialect, _migrate, _partitions, _roles
from cloud.store._dialect import BIGINT, SECONDS
from cloud.store.errors import StoreError

# names for constraints and indexes that have none of their own: the same on every database, so
# that a later migration can name what it changes
metadata = sa.MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s", "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s", "fk": "fk_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s"})

ROW_ID = BIGINT  # a generated key (on SQLite the rowid itself: its primary key is declared INTEGER)

AnyRow = sa.Row[*tuple[Any, ...]]  # a result row, its columns by name in `._mapping`


class _Held:
    """A thread's connection, closed when the thread ends (or the store goes)."""

    __slots__ = ("conn", "failures")

    def __init__(self, conn: Connection, failures: tuple[type[Exception], ...]) -> None:
        self.conn, self.failures = conn, failures

    def __del__(self) -> None:
        with contextlib.suppress(*self.failures):
            self.conn.close()


class StoreBase:
    """Connections and transactions over one database. The constructor does no I/O."""

    def __init__(self, where: Path | str, *, migrate: bool = True) -> None:
        """`where`: a SQLite file (a path) or a database URL. With `migrate` (the default), a
        database older than this code is upgraded on first use; without it, it is refused
        (`boxcloud` upgrades only in `init` and `run`)."""
        self.path = where if isinstance(where, Path) else None
        self.url = str(where) if isinstance(where, str) else f"sqlite:///{where}"
        self._where, self._auto_migrate = where, migrate
        self._engine: Engine | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._checked = False  # the schema is this code's (checked on first use)
        self._failures: tuple[type[Exception], ...] = (sa.exc.SQLAlchemyError,)  # what the database raises

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for tools and tests that read the database themselves)."""
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    engine = _dialect.engine(self._where)
                    # SQLAlchemy's, and the driver's own (the hot path runs on the driver's cursor)
                    self._failures = (sa.exc.SQLAlchemyError, engine.dialect.loaded_dbapi.Error)
                    self._engine = engine
        return self._engine

    def _connection(self) -> Connection:
        """This thread's connection, opened on its first use (the schema not checked)."""
        held: _Held | None = getattr(self._local, "held", None)
        if held is None:
            try:
                conn = self.engine.connect()
            except OSError as e:  # the file's directory or mode (cloud.store._dialect)
                raise StoreError(f"cannot open the cloud database {self._name()}: {e}") from e
            except self._failures as e:
                raise StoreError(f"cannot open the cloud database {self._name()}: {_reason(e)}") from e
            held = self._local.held = _Held(conn, self._failures)
        return held.conn

    def _check(self, conn: Connection) -> None:
        """Once per process: the schema is this code's, or is upgraded to it (or refused)."""
        if self._checked:
            return
        try:
            if self._auto_migrate:
                _migrate.upgrade(conn)
            else:
                _migrate.check(conn)
        except self._failures as e:
            raise StoreError(f"cannot read the schema of the cloud database {self._name()}: {_reason(e)}") from e
        self._checked = True

    def migrate(self) -> tuple[str | None, str]:
        """Bring the database's schema up to this code's (a new database is created).

        Returns:
            the revision it was at (None: a new database, or one made before migrations) and the
            one it is at now.

        Raises:
            SchemaError: the database was made by a newer version (its revision is unknown here).
            StoreError: the database cannot be opened or changed.
        """
        try:
            done = _migrate.upgrade(self._connection())
        except self._failures as e:
            raise StoreError(f"cannot upgrade the cloud database {self._name()}: {_reason(e)}") from e
        self._checked = True
        return done

    def maintain(self, now: float | None = None) -> list[str]:
        """Make the time partitions that are missing (PostgreSQL; nothing on SQLite), by the schema's
        owner (`cloud.store._partitions`); returns their names.

        Raises:
            StoreError: the database refused (e.g. a role that does not own the tables).
        """
        with self._tx() as conn:
            return _partitions.ensure(conn, time.time() if now is None else now)

    def reorder(self, now: float | None = None) -> str | None:
        """Rewrite one finished day of the samples in (Box, time) order (PostgreSQL; nothing on
        SQLite), by the schema's owner (`cloud.store._partitions.reorder`); returns its partition.

        Raises:
            StoreError: the database refused (a role that does not own the tables, a lock not had
                in time: the next run tries again).
        """
        with self._tx(keyed=True) as conn:  # no database-wide lock: CLUSTER locks that day's partition alone
            return _partitions.reorder(conn, time.time() if now is None else now)

    def grant_roles(self, prefix: str) -> list[str]:
        """Give each service's role its privileges (PostgreSQL, `cloud.store._roles`), as the owner;
        returns the roles found.

        Raises:
            StoreError: the database refused (a role that does not own the tables).
        """
        with self._tx() as conn:
            return _roles.grant(conn, prefix)

    @property
    def display_name(self) -> str:
        """The database as said in messages and logs: a path, or a URL without a password."""
        return self._name()

    def schema_revision(self) -> str | None:
        """The migration the database is at (None before any)."""
        with self._read() as conn:
            return _migrate.current(conn)

    @contextmanager
    def _read(self, *, by_time: bool = False) -> Iterator[Connection]:
        """Statements that only read: no lock taken (on SQLite each statement sees the last commit).
        `by_time`: they read the time series by time range (`_dialect.plan_by_values`)."""
        conn = self._connection()
        self._check(conn)
        try:
            with conn.begin():
                if by_time:
                    _dialect.plan_by_values(conn)
                yield conn
        except self._failures as e:
            raise StoreError(f"the cloud database {self._name()}: {_reason(e)}") from e

    @contextmanager
    def _tx(self, *, keyed: bool = False) -> Iterator[Connection]:
        """One write transaction: the write lock from its start (`keyed`: see `_dialect.begin_write`),
        committed at the block's end."""
        conn = self._connection()
        self._check(conn)
        try:
            with conn.begin():
                _dialect.begin_write(conn, keyed=keyed)
                yield conn
        except self._failures as e:
            raise StoreError(f"the cloud database {self._name()}: {_reason(e)}") from e

    def feeding(self, db: Connection | None = None) -> bool:
        """Whether stored batches go to the connectors' feed (`cloud.store._connectors` says; asked in
        the transaction `db` when given)."""
        return False

    def _name(self) -> str:
        return str(self.path) if self.path is not None else sa.make_url(self.url).render_as_string()


def _reason(e: BaseException) -> str:
    orig = getattr(e, "orig", None)
    return str(orig if orig is not None else e).splitlines()[0]


__all__ = ["BIGINT", "ROW_ID", "SECONDS", "AnyRow", "StoreBase", "metadata"]
