"""Fixtures shared by the whole suite."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.platform import Cloud
from tests.support.cloudkit import make_cloud
from tests.support.pgserver import PgServer


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(f"/{d}/" in str(item.fspath) for d in ("integration", "hil", "image")):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def mosquitto_available() -> None:
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.fail("mosquitto is not installed: run 'make test' (it installs it)")


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory, mosquitto_available: None) -> Iterator[Cloud]:
    """A running reference cloud (real Mosquitto with mTLS), shared by one test module."""
    c = make_cloud(tmp_path_factory.mktemp("cloud"))
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def fresh_cloud(tmp_path: Path, mosquitto_available: None) -> Iterator[Cloud]:
    """A running cloud of one test's own (for tests that stop or break the broker)."""
    c = make_cloud(tmp_path / "cloud")
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A real PostgreSQL server for this session (one per pytest-xdist worker), on a private Unix
    socket, started when a test first needs it (tests/support/pgserver.py)."""
    with PgServer() as server:
        yield server
