"""The Box recovers by itself, with nothing lost, from real network faults between it and the cloud.

The Box (boxd and the building it polls) runs in a network namespace of its own, joined
to the cloud's by a veth pair (tests.support.wan). Figures (samples lost and duplicated,
time to recover) are printed; only "nothing lost, nothing twice" is asserted, sample by sample: the
building (in the Box's namespace, on a thread of this process) counts every value it serves
(`tests.support.proofs`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloud.platform import Cloud
from tests.support.boxproc import BoxProcess
from tests.support.cloudkit import make_cloud, provision
from tests.support.faultproxy import FaultProxy
from tests.support.proofs import assert_nothing_lost, wait_stored
from tests.support.simthread import SimThread
from tests.support.wait import wait_for
from tests.support.wan import Wan, free_block, retarget

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
BOX = "WAN-1"


@dataclass
class Setup:
    cloud: Cloud
    wan: Wan
    box: BoxProcess
    state: Path
    building: SimThread

    def batches(self) -> int:
        return len(self.cloud.store.batch_keys(BOX))

    def flowing(self, timeout: float = 30) -> None:
        n = self.batches()
        wait_for(lambda: self.batches() > n + 2, timeout, "data to flow")

    def recover(self, fault_cleared: float, timeout: float = 90) -> float:
        """Wait until data flows again and the backlog is gone (every value served before the fault
        cleared is stored: the Box's queue is never empty, it holds each batch until the platform's
        stored notice); returns seconds to the first new batch."""
        owed = self.building.served.reads()
        n = self.batches()
        wait_for(lambda: self.batches() > n, timeout, "the first batch after the fault")
        first = time.monotonic() - fault_cleared
        wait_stored(self.cloud.store, BOX, owed, timeout)
        return first

    def prove(self) -> dict[str, int]:
        """Every sample the Box owes so far is stored, none twice; the figures."""
        log = self.building.served
        reads = log.reads()
        wait_stored(self.cloud.store, BOX, reads, 60)
        return assert_nothing_lost(self.cloud.store, BOX, reads, log=log)


def _building(wan: Wan) -> SimThread:
    return SimThread(netns=wan.ns, host="127.0.0.1", update_interval_s=0.1, counters=True, record=True)


def _conf(state: Path, building: SimThread) -> Path:
    conf = state / "boxd.toml"
    # no retry: a read the Box gave up on would be served again as if it were its next poll
    conf.write_text("[uplink]\nkeepalive_s = 10\nreconnect_max_s = 4\nbatch_delay_ms = 100\n\n"
                    + building.sim.points_toml(0.2, timeout_s=10.0, retries=0))
    return conf


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    cloud_ip, box_ip = free_block()
    cloud = make_cloud(tmp_path / "cloud", bind="", names=[cloud_ip])
    cloud.start()
    try:
        with Wan(cloud_ip=cloud_ip, box_ip=box_ip) as wan, _building(wan) as building:
            state = tmp_path / "box"
            ident = provision(cloud, state, BOX)
            retarget(ident.directory, cloud_ip, cloud.settings.broker_port)
            box = BoxProcess.start(state, _conf(state, building), prefix=wan.prefix())
            try:
                box.wait_connected()
                s = Setup(cloud, wan, box, state, building)
                s.flowing()
                yield s
            finally:
                box.stop()
    finally:
        cloud.stop()


def test_link_down_then_up(setup: Setup) -> None:
    setup.wan.link(False)
    wait_for(lambda: not setup.box.status().get("connected"), 60, "boxd to notice the dead link (keepalive)")
    # its own link, not the broker: the next try within a second, not spread as after a broker restart
    wait_for(lambda: "connection to the broker lost: no answer, or this Box's link failed" in setup.box.log.read_text(),
             10, "boxd to log its link's failure")
    assert "closed by the broker's side" not in setup.box.log.read_text()
    wait_for(lambda: setup.box.queue_samples(0) > 500, 30, "a backlog")
    setup.wan.link(True)
    recovered = setup.recover(time.monotonic())
    figures = setup.prove()
    print(f"\nlink down/up: {figures}, first batch {recovered:.1f} s after the link came back")


def test_bandwidth_cap(setup: Setup) -> None:
    before = setup.batches()
    setup.wan.cap("4kbit")  # far below what 125 points/s need
    try:
        wait_for(lambda: setup.box.queue_samples(0) > 300, 60, "a backlog behind the cap")
        assert setup.batches() > before  # data still trickles through
    finally:
        setup.wan.cap(None)
    recovered = setup.recover(time.monotonic())
    figures = setup.prove()
    print(f"\ntbf 4 kbit/s: {figures}, first batch {recovered:.1f} s after the cap was lifted")


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[Setup, FaultProxy]]:
    """The same Box, reaching the broker through a fault-injecting proxy on the cloud's WAN address."""
    cloud_ip, box_ip = free_block()
    cloud = make_cloud(tmp_path / "cloud", bind="", names=[cloud_ip])
    cloud.start()
    try:
        with Wan(cloud_ip=cloud_ip, box_ip=box_ip) as wan, \
                FaultProxy("127.0.0.1", cloud.settings.broker_port, listen_host=cloud_ip) as proxy, \
                _building(wan) as building:
            state = tmp_path / "box"
            ident = provision(cloud, state, BOX)
            retarget(ident.directory, cloud_ip, proxy.port)
            box = BoxProcess.start(state, _conf(state, building), prefix=wan.prefix())
            try:
                box.wait_connected()
                s = Setup(cloud, wan, box, state, building)
                s.flowing()
                yield s, proxy
            finally:
                box.stop()
    finally:
        cloud.stop()


def test_a_poor_4g_cell(proxied: tuple[Setup, FaultProxy]) -> None:
    setup, proxy = proxied
    figures: dict[str, float] = {}
    # 1-2 s of latency with jitter, both ways: slow, but the data keeps coming
    proxy.set_latency(1.0, 1.0)
    setup.flowing(timeout=60)
    proxy.heal()
    figures["latency 1-2 s"] = setup.recover(time.monotonic())
    # a stall: the path goes silent with the connection open (half-open); keepalive must notice
    proxy.stall()
    wait_for(lambda: not setup.box.status().get("connected"), 60, "boxd to notice the half-open link")
    proxy.resume()
    figures["stall (half-open)"] = setup.recover(time.monotonic())
    # resets, as a cell handover does
    for _ in range(3):
        proxy.reset_all()
        setup.box.wait_connected(60)
    figures["3 resets"] = setup.recover(time.monotonic())
    # the platform refuses connections for a while, then a blackhole swallows everything
    proxy.refuse(True)
    proxy.reset_all()
    wait_for(lambda: "refused" in setup.box.log.read_text(), 30, "boxd to meet the refusal")
    proxy.refuse(False)
    figures["refused"] = setup.recover(time.monotonic())
    proxy.blackhole(True)
    wait_for(lambda: not setup.box.status().get("connected"), 60, "boxd to notice the blackhole")
    proxy.blackhole(False)
    proxy.reset_all()  # connections accepted while blackholed stay dead: the cell drops them
    figures["blackhole"] = setup.recover(time.monotonic())
    result = setup.prove()
    print(f"\npoor 4G cell: {result}; seconds to the first batch after each fault: "
          + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()))
