"""Schema versions: the Alembic migrations in `cloud/store/migrations/`, run on the store's connection.

`upgrade` runs every migration the database lacks in one write transaction (SQLite and
PostgreSQL both change their schema transactionally): an upgrade happens whole or not at all,
and two processes upgrading at once take turns (the second finds nothing left to do). A
database made before migrations (no ``alembic_version`` table, release c69b057 or later)
is brought to the baseline by the baseline itself, keeping every row. `check` only compares.
A database at a revision this code does not know was made by a newer version: refused, never
changed.

Alembic is imported only when the schema is not this code's `HEAD` (an upgrade, or a refusal
that names what is known): a command on an up-to-date database reads one row.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cloud.store import _dialect, _partitions
from cloud.store.errors import SchemaError

if TYPE_CHECKING:
    from alembic.config import Config

HEAD = "0010"  # the newest migration (a test checks it against the migrations directory)
MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "alembic_version"


def current(conn: Connection) -> str | None:
    """The revision the database is at; None for an empty database or one made before migrations.

    Raises:
        SchemaError: the database has more than one (a branched history this code never makes).
    """
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    version: sa.ColumnClause[str] = sa.column("version_num")
    rows = [str(r) for r in conn.execute(sa.select(version).select_from(sa.table(VERSION_TABLE, version))).scalars()]
    if len(rows) > 1:
        raise SchemaError(f"the cloud database is at several schema revisions at once ({', '.join(rows)})")
    return rows[0] if rows else None


def config(conn: Connection | None = None) -> Config:
    """Alembic's configuration for the store's migrations (on `conn`, for env.py)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    cfg.attributes["connection"] = conn
    return cfg


def revisions() -> list[str]:
    """Every revision this code knows, oldest first."""
    from alembic.script import ScriptDirectory

    return [s.revision for s in reversed(list(ScriptDirectory.from_config(config()).walk_revisions()))]


def check(conn: Connection) -> None:
    """Refuse a database whose schema is not this code's.

    Raises:
        SchemaError: newer (made by a newer version), or older (not upgraded yet).
    """
    with conn.begin():
        at = current(conn)
    if at == HEAD:
        return
    _refuse_newer(at)
    was = "was made before schema versions" if at is None else f"is at schema revision {at}"
    raise SchemaError(f"the cloud database {was}, older than this boxcloud's ({HEAD}): "
                      "'boxcloud run' upgrades it in place (stop the running one first)")


def upgrade(conn: Connection) -> tuple[str | None, str]:
    """Run the migrations the database lacks, in one write transaction.

    Returns:
        the revision it was at and the one it is at now (`HEAD`).

    Raises:
        SchemaError: the database was made by a newer version.
    """
    with conn.begin():
        at = current(conn)
    if at == HEAD:
        return at, HEAD
    _refuse_newer(at)
    from alembic import command

    logging.getLogger("alembic").setLevel(logging.WARNING)  # its set-up chatter; the caller says what changed
    with conn.begin():
        _dialect.begin_write(conn)
        at = current(conn)  # again, under the lock: another process may have done it meanwhile
        if at != HEAD:
            _refuse_newer(at)
            command.upgrade(config(conn), "head")
            _partitions.ensure(conn, time.time())  # a new or newly partitioned database: its days ahead
    return at, HEAD


def _refuse_newer(at: str | None) -> None:
    if at is not None and at not in revisions():
        raise SchemaError(f"the cloud database is at schema revision {at!r}, which this boxcloud does not know "
                          f"(it knows up to {HEAD}): it was made by a newer boxcloud; use that one")
