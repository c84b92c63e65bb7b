"""Fixtures shared by the whole suite."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from cloud.platform import Cloud
from tests.support.cloudkit import make_cloud
from tests.support.pgserver import PgServer

# Hypothesis without its default deadline of 200 ms an example: that is a speed assertion, and on a machine that
# runs other tests beside this one an example takes longer now and then (Hypothesis then calls the test flaky)
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")

# `make test` distributes the suite over pytest-xdist workers by group (--dist loadgroup, pyproject.toml): a
# group's tests run on one worker, one after the other, in the order of the file, as in a run on one process.
# A test's group is its module (a module's tests may share a module-scoped rig and build on each other's
# state, e.g. a modem's resets counted by a later test), except for tests that must not run beside each
# other, grouped across modules:
# - "box-vm": the QEMU VMs (tests/image, and tests/hil, whose target may be a VM), each a vCPU under TCG,
#   CPU-bound for minutes: two at once on a small machine starve each other and everything else; they
#   share the image build, too;
# - "hil-sim" and "hil-sim-faults": the HIL scenarios on the sim target, and its fault scenarios
#   (tests/hil/test_faults.py, which push configurations, evict and revoke: the others' proofs over all that
#   was served must not see them): a simulated Box, no VM, so each on a sim bench of its own in another
#   worker (their vm runs stay in "box-vm", whose wall is the suite's);
# - "demo": `make demo` takes its well-known ports when they are free (8883, 8443, 9443, 15020), so two
#   demos started at once would both pick them.
# The groups are handed out in the order of collection (--no-loadscope-reorder): the VMs, the longest, first,
# then the integration tests, then the many short unit tests, which fill the workers up at the end.
_GROUPS = {"/image/": "box-vm", "/hil/": "box-vm",
           "/integration/test_demo.py": "demo", "/integration/test_readme.py": "demo"}
_TESTS = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.fspath)
        if any(f"/{d}/" in path for d in ("integration", "hil", "image")):
            item.add_marker(pytest.mark.integration)
        group = next((g for where, g in _GROUPS.items() if where in path), None)
        if "/hil/" in path and _target(item) == "sim":  # a sim bench of their own, beside the VMs, not on their wall
            group = "hil-sim-faults" if "/hil/test_faults.py" in path else "hil-sim"
        item.add_marker(pytest.mark.xdist_group(group or str(Path(path).relative_to(_TESTS).with_suffix(""))))


def _target(item: pytest.Item) -> str | None:
    """The HIL target a test is parametrized with (tests/hil/conftest.py), by its file's stem."""
    callspec = getattr(item, "callspec", None)
    target = callspec.params.get("target_file") if callspec is not None else None
    return Path(target).stem if target is not None else None


def pytest_configure(config: pytest.Config) -> None:
    """Take SIGINT as an interactive pytest does, also when started with it ignored (in the background by a
    shell without job control: `nohup make test &`, some CI runners): an ignored signal stays ignored in
    every program a test starts, and a Python program a test stops with Ctrl-C (`make demo`, in
    test_readme.py) would never see it."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """Stop a distributed run whose groups did not take (xdist marks a grouped test's id "...@group"; a
    pytest that this xdist does not support undoes that silently: setup.cfg pins both)."""
    if node.config.getvalue("dist") != "loadgroup":
        return
    lost = [i for i in ids if "@" not in i]
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


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A real PostgreSQL server for this session (one per pytest-xdist worker), on a private Unix
    socket, started when a test first needs it (tests/support/pgserver.py)."""
    with PgServer() as server:
        yield server
