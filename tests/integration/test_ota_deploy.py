"""Deployments end to end: a fleet of simulated Boxes (`boxd launch`, real daemons, a Modbus TCP
simulator behind them) takes a release from the reference cloud in waves, installs it A/B and
commits; a broken release is rolled back on the first wave and the rollout stops itself; the
emergency stop halts a rollout while Boxes download (they abort, nothing is installed) and the
Boxes not started never start.

The Boxes reach the cloud's HTTPS endpoint (TUF repository) through a fault-injecting proxy,
so that the last test can make their downloads slow enough to be caught in the middle."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import boxd
from cloud.platform import Cloud
from cloud.store import DeploymentBoxRow
from ota import slots
from tests.support.faultproxy import Direction, FaultProxy
from tests.support.otakit import BROKEN_START, HEAD, LaunchedBox, publish
from tests.support.simthread import SimThread
from tests.support.wait import wait_for

FLEET = 5
HEALTH_S = 20
FACTORY = boxd.__version__
TERMINAL = {"committed", "rolled_back", "failed", "aborted", "timeout", "cancelled"}


@pytest.fixture(scope="module")
def proxy(cloud: Cloud) -> Iterator[FaultProxy]:
    p = FaultProxy("127.0.0.1", cloud.settings.enroll_port).start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="module")
def fleet(cloud: Cloud, proxy: FaultProxy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[LaunchedBox]]:
    boxes: list[LaunchedBox] = []
    with SimThread(update_interval_s=0.2) as building:
        try:
            base = tmp_path_factory.mktemp("fleet")
            for n in range(FLEET):
                box = LaunchedBox(cloud, base / f"box{n}", f"FLEET-{n}", HEAD + building.sim.points_toml(1.0),
                                  start=False)
                meta = box.state / "identity" / "identity.json"
                doc = json.loads(meta.read_text())
                meta.write_text(json.dumps({**doc, "server": f"https://127.0.0.1:{proxy.port}"}))
                box.start()
                cloud.tag(box.box_id, ["site-a"])
                boxes.append(box)
            for box in boxes:
                box.wait_running(FACTORY)
            yield boxes
        finally:
            for box in boxes:
                box.stop()


def _rows(cloud: Cloud, dep_id: str) -> dict[str, DeploymentBoxRow]:
    return {r.box_id: r for r in cloud.store.deployment_boxes(dep_id)}


def _when(cloud: Cloud, dep_id: str, cond: Callable[[dict[str, DeploymentBoxRow]], bool],
          what: str) -> dict[str, DeploymentBoxRow]:
    """The deployment's rows once `cond` holds for them."""
    def check() -> dict[str, DeploymentBoxRow] | None:
        rows = _rows(cloud, dep_id)
        return rows if cond(rows) else None
    return wait_for(check, 60, what)


def _ended(cloud: Cloud, dep_id: str, timeout: float = 240) -> str:
    def ended() -> str | None:
        status = cloud.deployment(dep_id).status
        return status if status != "running" else None

    return wait_for(ended, timeout, f"deployment {dep_id} to end")


def test_a_release_goes_out_in_waves_and_a_broken_one_stops_at_the_first_wave(
        cloud: Cloud, fleet: list[LaunchedBox], tmp_path: Path) -> None:
    publish(cloud, tmp_path, "0.2.0")
    dep = cloud.create_deployment("boxd-0.2.0.tar.gz", tag="site-a", waves="1,10%,50%,100%",
                                  health_s=HEALTH_S, box_timeout_s=300)
    assert dep.waves == [1, 2, 3, 5]  # 10 % of 5 rounds to a wave of its own

    assert _ended(cloud, dep.id) == "completed", cloud.store.deployment_boxes(dep.id)
    rows = _rows(cloud, dep.id)
    assert {r.state for r in rows.values()} == {"committed"}, rows
    for wave in (2, 3, 4):  # a wave was sent only once every Box of the previous one had committed
        first_sent = min(r.sent or 0 for r in rows.values() if r.wave == wave)
        previous_done = max(r.updated for r in rows.values() if r.wave == wave - 1)
        assert first_sent >= previous_done, (wave, rows)
    for box in fleet:
        box.wait_committed("0.2.0")
        assert box.slot().previous == slots.FACTORY

    # A release whose daemon cannot start: the first Box rolls back, nothing else is sent.
    publish(cloud, tmp_path, "0.3.0", BROKEN_START)
    bad = cloud.create_deployment("boxd-0.3.0.tar.gz", tag="site-a", health_s=HEALTH_S, box_timeout_s=300)
    assert _ended(cloud, bad.id) == "halted"
    rows = _rows(cloud, bad.id)  # halted and the rest cancelled in one transaction
    first = next(r for r in rows.values() if r.wave == 1)
    assert first.state == "rolled_back" and "before it was healthy" in first.detail, first
    assert all(r.state == "cancelled" and r.sent is None for r in rows.values() if r.wave > 1), rows  # never sent
    assert first.box_id in (cloud.deployment(bad.id).reason or "")
    for box in fleet:  # every Box runs the good release; the one that tried the broken one came back to it
        box.wait_committed("0.2.0")
        assert box.releases() == ["0.2.0"], box.box_id


def test_the_emergency_stop_halts_a_rollout_mid_download(
        cloud: Cloud, fleet: list[LaunchedBox], proxy: FaultProxy, tmp_path: Path) -> None:
    # A release of a few MB over a link capped to 40 kB/s: its download takes minutes.
    publish(cloud, tmp_path, "0.4.0", {"ota/padding.bin": os.urandom(3_000_000)})
    proxy.set_bandwidth(40_000, Direction.DOWN)
    try:
        dep = cloud.create_deployment("boxd-0.4.0.tar.gz", tag="site-a", waves="2,100%", health_s=HEALTH_S,
                                      box_timeout_s=600)
        wave1 = wait_for(lambda: [r for r in _rows(cloud, dep.id).values() if r.state == "downloading"]
                         if sum(r.state == "downloading" for r in _rows(cloud, dep.id).values()) == 2 else None,
                         60, "both Boxes of the first wave to be downloading")
        stopped = cloud.stop_deployment(dep.id, "emergency stop by the test")
        assert stopped.status == "stopped"
        assert all(r.state == "cancelled" for r in _rows(cloud, dep.id).values() if r.wave == 2)  # at once

        rows = _when(cloud, dep.id, lambda r: all(r[b.box_id].state in TERMINAL for b in wave1)
                     and all(x.state == "cancelled" for x in r.values() if x.wave == 2),
                     "the first wave to abort and the second to be cancelled")
        for b in wave1:
            assert rows[b.box_id].state == "aborted", rows[b.box_id]
        assert all(r.state == "cancelled" and r.sent is None for r in rows.values() if r.wave == 2), rows
    finally:
        proxy.set_bandwidth(None, Direction.DOWN)
    for box in fleet:  # nothing installed anywhere, every Box on the release it had
        assert box.releases() == ["0.2.0"], (box.box_id, box.releases())
        assert not list((box.state / "ota" / "downloads").iterdir()), box.box_id
        box.wait_committed("0.2.0")
