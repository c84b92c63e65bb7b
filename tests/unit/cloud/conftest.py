"""Fixtures of the cloud's unit tests: the store on SQLite, or on the database the environment
names (tests/support/storedb.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.store import Store
from tests.support import storedb


@pytest.fixture
def store_db(tmp_path: Path) -> Iterator[Path | str]:
    """Where a test's store lives: a SQLite file, or a fresh database's URL."""
    with storedb.database(tmp_path) as where:
        yield where


@pytest.fixture
def store(store_db: Path | str) -> Store:
    """A store on a new database (created by the migrations on first use)."""
    return Store(store_db)
