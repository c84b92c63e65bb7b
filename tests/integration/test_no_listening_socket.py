"""boxd never holds a socket that accepts connections or datagrams from others, watched without a
pause (`tests.support.sockwatch`: /proc every 20 ms, and a bind tripwire in every Python process of
the tree) from its start through reconnections to its stop. The same watch runs through an update
(launcher, daemon, OTA download child, the new daemon) in test_ota_update.py."""

from __future__ import annotations

import functools
from pathlib import Path

from cloud.platform import Cloud
from tests.support.boxproc import BoxProcess
from tests.support.cloudkit import provision
from tests.support.faultproxy import FaultProxy
from tests.support.simthread import SimThread
from tests.support.sockwatch import SockWatch
from tests.support.wait import wait_for
from tests.support.wan import retarget

RECONNECTIONS = 3


def _connected(log: Path, times: int) -> bool:
    """Whether the Box's log says it connected `times` times."""
    return log.read_text().count("boxd.uplink: connected to") >= times


def test_boxd_opens_no_listening_socket_from_start_through_reconnections_to_stop(
        cloud: Cloud, tmp_path: Path) -> None:
    ident = provision(cloud, tmp_path, "QUIET-1")
    with SimThread(update_interval_s=0.2) as building, \
            FaultProxy("127.0.0.1", cloud.settings.broker_port) as proxy:
        retarget(ident.directory, "localhost", proxy.port)
        conf = tmp_path / "boxd.toml"
        conf.write_text("[uplink]\nbatch_delay_ms = 100\nreconnect_max_s = 1\n\n" + building.sim.points_toml(0.2))
        watch = SockWatch(0)
        box = BoxProcess.start(tmp_path, conf, env=watch.env())
        watch.start(box.proc.pid)  # from the first instant: the interpreter has not imported anything yet
        try:
            box.wait_connected()
            for n in range(2, RECONNECTIONS + 2):  # a cell handover: the connection reset, the Box reconnects
                proxy.reset_all()
                wait_for(functools.partial(_connected, box.log, n), 30, f"reconnection {n - 1}")
            assert box.stop() == 0
        finally:
            if box.proc.poll() is None:
                box.kill()
        watch.check()
    assert box.proc.pid in watch.seen and watch.polls > 20, (watch.polls, watch.seen)
