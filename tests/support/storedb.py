"""The database the cloud store's tests run on: a SQLite file by default, or a fresh database on
a server when BOXCLOUD_TEST_DATABASE_URL names one (e.g. ``postgresql+psycopg:///postgres?host=/tmp/pg``:
the URL of a database to connect to while creating and dropping one per test).

`make test` uses SQLite; the same tests run against PostgreSQL by setting the variable (see
docs/architecture.md, "Storage in the cloud"). A test that only means something on SQLite (a
legacy file, file modes) is marked `sqlite_only`.
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

sqlite_only = pytest.mark.skipif(bool(os.environ.get(ENV)), reason=f"SQLite only ({ENV} names another database)")


@contextmanager
def database(tmp_path: Path) -> Iterator[Path | str]:
    """A new, empty database for one test: a path (SQLite) or a URL; dropped afterwards."""
    server = os.environ.get(ENV)
    if not server:
        yield tmp_path / "cloud.db"
        return
    url = sa.make_url(server)
    name = f"store_test_{secrets.token_hex(4)}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
