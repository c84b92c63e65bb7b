"""Updates on one Box, end to end: a real cloud (TUF repository over HTTPS, Mosquitto with mTLS),
a Modbus TCP simulator, and `boxd launch` running the daemon from its software slot. The
platform sends the ``update`` command; the Box downloads through TUF, installs A/B, restarts on
trial and commits, or rolls back by itself and says why."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

import boxd
from cloud.platform import Cloud
from ota import slots
from tests.support.boxproc import BoxProcess
from tests.support.cloudkit import provision
from tests.support.otakit import BROKEN_START, HEAD, SOURCE, LaunchedBox, broken_bus, publish
from tests.support.simthread import SimThread
from tests.support.sockwatch import SockWatch
from tests.support.wait import wait_for

FACTORY = boxd.__version__


class MakeBox(Protocol):
    """The `make_box` fixture: a new `LaunchedBox` of the test, with extra environment."""

    def __call__(self, env: dict[str, str] | None = None) -> LaunchedBox: ...


@pytest.fixture(scope="module")
def building() -> Iterator[SimThread]:
    with SimThread(update_interval_s=0.2) as s:
        yield s


@pytest.fixture
def make_box(cloud: Cloud, building: SimThread, tmp_path: Path,
             request: pytest.FixtureRequest) -> Iterator[MakeBox]:
    made: list[LaunchedBox] = []

    def make(env: dict[str, str] | None = None) -> LaunchedBox:
        n = len(made)
        serial = f"OTA-{request.node.name[5:30].replace('_', '-')}-{n}"
        box = LaunchedBox(cloud, tmp_path / f"box{n}", serial, HEAD + building.sim.points_toml(0.5), env)
        made.append(box)
        return box

    try:
        yield make
    finally:
        for b in made:
            b.stop()


def test_an_update_is_installed_a_b_and_committed_then_a_broken_one_rolls_back(
        cloud: Cloud, make_box: MakeBox, tmp_path: Path) -> None:
    # the whole tree (the service, daemons old and new, OTA download children) is watched for listening
    # sockets from its start to the end (tests.support.sockwatch)
    watch = SockWatch(0)
    box = make_box(watch.env())
    assert box.proc is not None
    watch.start(box.proc.pid)
    box.wait_running(FACTORY)
    older = publish(cloud, tmp_path / "out", "0.1.5")
    good = publish(cloud, tmp_path / "out", "0.2.0")

    reply = box.send_update("d-good", good.name, "0.2.0")
    assert reply["status"] == "ok", reply
    assert box.outcome("d-good")[0] == "committed", box.events()
    box.wait_committed("0.2.0")
    states = [s for d, s, _ in box.events() if d == "d-good"]
    assert states[:1] == ["downloading"] and {"installing", "restarting", "committed"} <= set(states)
    assert box.slot().previous == slots.FACTORY  # the factory software is B, kept to come back to
    # the service is one process: the launcher became the daemon of the new slot (no second interpreter)
    daemon = box.status()["pid"]
    assert _children(box.proc.pid) == [daemon], (box.proc.pid, daemon)
    assert "/releases/0.2.0" in os.readlink(f"/proc/{daemon}/cwd")
    assert Path(f"/proc/{daemon}/cmdline").read_bytes().split(b"\0")[-2:] == [b"run", b""]
    installed = box.software / "releases" / "0.2.0"
    assert (installed / "boxd" / "__init__.py").read_text().count('__version__ = "0.2.0"') == 1
    assert not list((box.state / "ota" / "downloads").iterdir())  # the bundle is not kept once unpacked
    assert not (box.state / "ota" / "job.json").exists()  # no update under way
    wait_for(lambda: (h := cloud.store.health(box.box_id)) is not None and h[1].get("version") == "0.2.0", 30,
             "a heartbeat from version 0.2.0")

    # A release whose daemon cannot start: the launcher takes 0.2.0 back and the platform hears why.
    broken = publish(cloud, tmp_path / "out", "0.3.0", BROKEN_START)
    assert box.send_update("d-broken", broken.name, "0.3.0")["status"] == "ok"
    state, detail = box.outcome("d-broken")
    assert state == "rolled_back", box.events()
    assert "exited with status 70 before it was healthy" in detail and "broken release" in detail  # no traceback
    box.wait_committed("0.2.0")
    assert box.releases() == ["0.2.0"]  # the failed release is gone; the factory software stays
    assert box.slot().previous is None

    # An instruction to go back to an older release, signed or not, is refused.
    assert box.send_update("d-down", older.name, "0.1.5")["status"] == "ok"
    state, detail = box.outcome("d-down")
    assert state == "failed" and "a downgrade instruction" in detail and "nothing installed" in detail, detail
    assert box.releases() == ["0.2.0"] and box.running() == "0.2.0"
    box.stop()
    watch.check()
    commands = watch.commands()
    assert sum("ota.client download" in c for c in commands) >= 3, commands  # each update's download child
    assert sum("boxd.cli" in c and " run" in c for c in commands) >= 3, commands  # daemons: factory, 0.2.0, ...


def test_a_release_that_runs_but_never_polls_is_rolled_back_at_its_deadline(
        cloud: Cloud, make_box: MakeBox, tmp_path: Path) -> None:
    box = make_box()
    box.wait_running(FACTORY)
    bad = publish(cloud, tmp_path / "out", "0.4.0", broken_bus())
    assert box.send_update("d-nopoll", bad.name, "0.4.0", health_s=12)["status"] == "ok"
    box.wait_running("0.4.0")  # it starts and connects ...
    state, detail = box.outcome("d-nopoll")  # ... but never reads a good value
    assert state == "rolled_back"
    assert "not healthy within 12 s" in detail and "no good reading yet" in detail, detail
    box.wait_running(FACTORY)
    assert box.slot().active == slots.FACTORY and box.releases() == []


def test_a_tampered_release_is_refused_and_nothing_is_installed(
        cloud: Cloud, make_box: MakeBox, tmp_path: Path) -> None:
    box = make_box()
    box.wait_running(FACTORY)
    good = publish(cloud, tmp_path / "out", "0.5.0")
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    served = cloud.ota_repo / "targets" / f"{digest}.{good.name}"
    data = bytearray(served.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a mirror or an attacker changed one byte
    served.write_bytes(bytes(data))

    assert box.send_update("d-tampered", good.name, "0.5.0")["status"] == "ok"
    state, detail = box.outcome("d-tampered")
    assert state == "failed" and "does not match the length or hash" in detail, detail
    assert "nothing installed" in detail
    assert box.releases() == [] and box.slot().active == slots.FACTORY and box.slot().trial is None
    assert box.running() == FACTORY


def test_a_target_the_repository_does_not_hold_is_refused(cloud: Cloud, make_box: MakeBox,
                                                            tmp_path: Path) -> None:
    box = make_box()
    box.wait_running(FACTORY)
    assert box.send_update("d-absent", "boxd-9.9.9.tar.gz", "9.9.9")["status"] == "ok"
    state, detail = box.outcome("d-absent")
    assert state == "failed" and "offers no target" in detail, detail
    assert box.releases() == [] and box.running() == FACTORY


def test_a_daemon_not_started_by_the_launcher_refuses_updates(cloud: Cloud, building: SimThread,
                                                              tmp_path: Path) -> None:
    state = tmp_path / "plain"
    box_id = provision(cloud, state, "OTA-plain-run").box_id
    (state / "boxd.toml").write_text(HEAD + building.sim.points_toml(0.5))
    proc = BoxProcess.start(state, state / "boxd.toml")
    try:
        proc.wait_connected()
        cmd = cloud.send_command(box_id, "update", {"deployment": "d-plain", "target": "boxd-0.2.0.tar.gz",
                                                    "version": "0.2.0"})

        def answer() -> dict[str, object] | None:
            row = cloud.store.command(cmd)
            return row.reply if row is not None and row.status else None

        reply = wait_for(answer, 30, "the answer to the update")
        assert reply["status"] == "rejected" and "boxd launch" in str(reply["detail"]), reply
        assert proc.proc.poll() is None
    finally:
        proc.stop()


def test_a_crash_in_the_download_process_is_a_failed_update_not_a_dead_daemon(
        cloud: Cloud, make_box: MakeBox, tmp_path: Path) -> None:
    # A release whose TUF client aborts (SIGABRT, as a heap corruption in native code would) ...
    text = (SOURCE / "ota" / "client.py").read_text()
    crashing = text.replace('if __name__ == "__main__":\n    raise SystemExit(main())',
                            'if __name__ == "__main__":\n    import os\n\n    os.abort()')
    assert crashing != text
    box = make_box()
    box.wait_running(FACTORY)
    fragile = publish(cloud, tmp_path / "out", "0.6.0", {"ota/client.py": crashing.encode()})
    assert box.send_update("d-fragile", fragile.name, "0.6.0")["status"] == "ok"
    assert box.outcome("d-fragile")[0] == "committed"
    box.wait_committed("0.6.0")
    pid = box.status()["pid"]

    # ... takes the next update: the download process dies, the daemon says so and runs on.
    nxt = publish(cloud, tmp_path / "out", "0.7.0")
    assert box.send_update("d-after", nxt.name, "0.7.0")["status"] == "ok"
    state, detail = box.outcome("d-after")
    assert state == "failed" and "the download process ended with signal 6" in detail, detail
    assert box.status()["pid"] == pid and box.running() == "0.6.0"
    assert box.releases() == ["0.6.0"]


def _children(pid: object) -> list[int]:
    """The pids whose parent is `pid` (from /proc/<pid>/task/*/children)."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(n) for n in (task / "children").read_text().split()]
    return sorted(kids)
