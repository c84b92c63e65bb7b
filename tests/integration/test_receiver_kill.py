"""Storage is the acknowledgement: receivers killed mid-stream lose nothing (issue 20).

Three receiver processes (`boxcloud receive --member N`, each its own certificate) share the uplink
through the MQTT 5 shared subscription ``$share/receivers/boxes/+/up/#``; a real boxd polls the
simulated building (its "reads" counters and served log on, `tests.support.proofs`) and publishes.
Again and again a receiver is frozen mid-stream (SIGSTOP: the broker goes on handing it its share
of the batches, which it never acknowledges), then SIGKILLed: Mosquitto drops what that member had
in flight (its issue 2662). Some killed members are started again, the last one never returns.
Then: every sample the simulator served and the Box owed is stored exactly once, every batch number
is there, and no gap alert was ever opened. What the Box sent again for want of a stored notice is
counted from its log (the loss the proof is about did happen).
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.platform import Cloud
from tests.support.boxproc import BoxProcess, stop_process
from tests.support.cloudkit import make_cloud, provision
from tests.support.proofs import assert_nothing_lost, wait_stored
from tests.support.simthread import SimThread
from tests.support.wait import wait_for

KILLS = 5  # the first ones started again at once, the last never
RESENT = "were not stored within"  # boxd.sender's log line


class Receivers:
    """`boxcloud receive` processes, one per member."""

    def __init__(self, cloud: Cloud, logs: Path) -> None:
        self.cloud, self.logs = cloud, logs
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.starts: dict[int, int] = {}

    def start(self, *members: int) -> None:
        """Start members N and wait until each is connected (its log says so)."""
        for member in members:
            with (self.logs / f"receiver-{member}.log").open("ab") as out:
                self.procs[member] = subprocess.Popen(
                    [sys.executable, "-m", "cloud.cli", "--home", str(self.cloud.home), "receive", "--member",
                     str(member)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            self.starts[member] = self.starts.get(member, 0) + 1
        for member in members:
            log, n, proc = self.logs / f"receiver-{member}.log", self.starts[member], self.procs[member]
            wait_for(lambda: log.read_text().count(" connected to ") >= n or proc.poll() is not None, 60,
                     f"receiver {member} to connect")
            assert proc.poll() is None, log.read_text()[-2000:]

    def kill(self, member: int) -> None:
        p = self.procs.pop(member)
        p.send_signal(signal.SIGKILL)
        p.wait()

    def stop(self) -> None:
        for p in self.procs.values():
            stop_process(p, 10)


@pytest.fixture
def cloud_without_receiver(tmp_path: Path, mosquitto_available: None) -> Iterator[Cloud]:
    c = make_cloud(tmp_path / "cloud")
    c.start(receiver=False)
    try:
        yield c
    finally:
        c.stop()


def test_receivers_killed_mid_stream_lose_and_duplicate_no_sample(cloud_without_receiver: Cloud,
                                                                  tmp_path: Path) -> None:
    cloud, rng = cloud_without_receiver, random.Random(2026_12_07)
    provision(cloud, tmp_path, "KILL-1")
    rx = Receivers(cloud, tmp_path)
    building = SimThread(update_interval_s=0.1, counters=True, record=True)
    with building:
        conf = tmp_path / "boxd.toml"
        conf.write_text("[uplink]\nbatch_delay_ms = 100\nheartbeat_s = 2\n\n"
                        + building.sim.points_toml(0.2, timeout_s=10.0, retries=0))
        try:
            rx.start(1, 2, 3)
            box = BoxProcess.start(tmp_path, conf)
            try:
                box.wait_connected()
                alive, gone = [1, 2, 3], []
                for k in range(KILLS):
                    victim = rng.choice(alive)
                    stored = len(cloud.store.batch_keys("KILL-1"))
                    rx.procs[victim].send_signal(signal.SIGSTOP)  # frozen: its share piles up unacknowledged
                    wait_for(lambda s=stored: len(cloud.store.batch_keys("KILL-1")) >= s + 8, 30,
                             "the other receivers to store batches while one is frozen")
                    rx.kill(victim)
                    if k < KILLS - 1:
                        rx.start(victim)  # back at once, with a new session
                    else:
                        alive.remove(victim)
                        gone.append(victim)
                # the last victim never returns: what it held must not be stranded
                stored = len(cloud.store.batch_keys("KILL-1"))
                wait_for(lambda: len(cloud.store.batch_keys("KILL-1")) >= stored + 10, 30, "more batches")
                reads = building.served.reads()
                wait_stored(cloud.store, "KILL-1", reads, 60)
                assert box.proc.poll() is None, box.log.read_text()[-2000:]
            finally:
                box.stop()
        finally:
            rx.stop()
        figures = assert_nothing_lost(cloud.store, "KILL-1", reads, log=building.served)
    gaps = [a for a in cloud.store.alerts("KILL-1", include_closed=True) if a.kind == "gap"]
    assert not gaps, [a.message for a in gaps]
    resent = box.log.read_text().count(RESENT)
    assert resent > 0, "no batch was lost with a killed receiver: the proof proved nothing"
    print(f"\n3 receivers on a shared subscription, SIGKILL x{KILLS} (the last never back): {figures}; "
          f"the Box sent again {resent} time(s) what a killed receiver had taken; 0 gap alerts")
