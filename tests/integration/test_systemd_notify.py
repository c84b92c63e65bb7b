"""boxd speaks systemd's notify protocol: READY once started, WATCHDOG pings, STATUS, STOPPING.

systemd itself is not PID 1 here, so the test plays its part: it binds the datagram
socket that systemd would pass in NOTIFY_SOCKET and reads what boxd sends on it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from cloud.platform import Cloud
from tests.support.cloudkit import provision
from tests.support.simthread import SimThread
from tests.support.wait import wait_for


def test_ready_watchdog_status_and_stopping(cloud: Cloud, tmp_path: Path) -> None:
    provision(cloud, tmp_path, "SYSTEMD-1")
    sock_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(sock_path))
    notify.settimeout(0.2)
    got: list[str] = []

    def receive() -> list[str]:
        try:
            got.append(notify.recv(4096).decode())
        except TimeoutError:
            pass
        return got

    with SimThread() as sim:
        conf = tmp_path / "boxd.toml"
        conf.write_text(sim.sim.points_toml(1.0))
        env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "1000000"}
        proc = subprocess.Popen([sys.executable, "-m", "boxd.cli", "--state-dir", str(tmp_path), "--config",
                                 str(conf), "run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: any("READY=1" in m for m in receive()), 30, "READY=1")
            wait_for(lambda: sum("WATCHDOG=1" in m for m in receive()) >= 2, 30, "two watchdog pings")
            wait_for(lambda: any("STATUS=uplink connected" in m for m in receive()), 30, "a STATUS line")
            proc.terminate()
            wait_for(lambda: any("STOPPING=1" in m for m in receive()), 30, "STOPPING=1")
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            notify.close()
