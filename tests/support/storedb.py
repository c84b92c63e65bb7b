"""The database the cloud store's tests run on: a SQLite file, or a fresh database on PostgreSQL.

A test that takes the `store_db` fixture (tests/unit/cloud/conftest.py) runs on SQLite; marked
`both_engines` (the store's and the receiver's key tests), it runs twice, on SQLite and on a real
PostgreSQL server that the suite starts once per session (`tests/support/pgserver.py`), each
test in a new, empty database made by the migrations. BOXCLOUD_TEST_DATABASE_URL names another
server to use instead of both (e.g. ``postgresql+psycopg:///postgres?host=/run/postgresql``: the
database to connect to while creating and dropping one per test): every store test then runs
there. A test that only means something on SQLite (a legacy file, file modes) is marked
`sqlite_only`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

ENV = "BOXCLOUD_TEST_DATABASE_URL"
ENGINES = ("sqlite", "postgresql")

sqlite_only = pytest.mark.skipif(bool(os.environ.get(ENV)), reason=f"SQLite only ({ENV} names another database)")
both_engines = pytest.mark.both_engines


@contextmanager
def database(tmp_path: Path, server: str | None = None) -> Iterator[Path | str]:
    """A new, empty database for one test: a path (SQLite) or, on `server` (the URL of a database
    to connect to while creating one; default: BOXCLOUD_TEST_DATABASE_URL), a URL; dropped afterwards."""
    server = server or os.environ.get(ENV)
    if not server:
        yield tmp_path / "cloud.db"
        return
    url = sa.make_url(server)
    name = f"store_test_{secrets.token_hex(4)}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE template0')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
