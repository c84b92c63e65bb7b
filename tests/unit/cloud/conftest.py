"""Fixtures of the cloud's unit tests: the store on SQLite, and on PostgreSQL for the tests marked
`both_engines` (tests/support/storedb.py; the server: `pg_server`, tests/conftest.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.store import Store
from tests.support import storedb


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked `both_engines` that takes the store runs on each engine (once, on the server
    BOXCLOUD_TEST_DATABASE_URL names, when it names one)."""
    if "store_db" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_engines") \
            and not os.environ.get(storedb.ENV):
        metafunc.parametrize("store_db", storedb.ENGINES, indirect=True)


@pytest.fixture
def store_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path | str]:
    """Where a test's store lives: a SQLite file, or a fresh database's URL."""
    server = request.getfixturevalue("pg_server").url() if getattr(request, "param", "sqlite") == "postgresql" \
        else None
    with storedb.database(tmp_path, server) as where:
        yield where


@pytest.fixture
def store(store_db: Path | str) -> Store:
    """A store on a new database (created by the migrations on first use)."""
    return Store(store_db)
