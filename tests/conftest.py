"""Fixtures shared by the whole suite."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud.platform import Cloud
from tests.support.cloudkit import make_cloud

# Tests that must not run beside each other run in one pytest-xdist group (`make test` distributes with
# --dist loadgroup: a group's tests run one after the other on one worker):
# - "box-vm": the QEMU VMs (tests/image, and tests/hil, whose target may be a VM), each a vCPU under TCG,
#   CPU-bound for minutes: two at once on a small machine starve each other and everything else; they
#   share the image build, too;
# - "demo": `make demo` takes its well-known ports when they are free (8883, 8443, 9443, 15020), so two
#   demos started at once would both pick them.
_GROUPS = {"/image/": "box-vm", "/hil/": "box-vm",
           "/integration/test_demo.py": "demo", "/integration/test_readme.py": "demo"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.fspath)
        if any(f"/{d}/" in path for d in ("integration", "hil", "image")):
            item.add_marker(pytest.mark.integration)
        for where, group in _GROUPS.items():
            if where in path:
                item.add_marker(pytest.mark.xdist_group(group))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """Stop a distributed run whose groups did not take (xdist marks a grouped test's id "...@group"; a
    pytest that this xdist does not support undoes that silently: setup.cfg pins both)."""
    if node.config.getvalue("dist") != "loadgroup":
        return
    lost = [i for i in ids if any(where in f"/{i}" for where in _GROUPS) and "@" not in i]
    if lost:
        pytest.exit(f"{lost[0]}: its xdist group was lost: this pytest-xdist does not support this pytest "
                    "(see setup.cfg)", returncode=3)


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
