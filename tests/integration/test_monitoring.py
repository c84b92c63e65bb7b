"""The platform watches each Box: heartbeats, offline by Last Will or silence, one alert per Box,
and a field device that stops answering kept apart from the Box going offline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cloud.platform import Cloud
from tests.support.boxproc import BoxProcess
from tests.support.cloudkit import provision
from tests.support.simthread import SimThread
from tests.support.wait import wait_for


def open_alerts(cloud: Cloud, box_id: str) -> list[str]:
    return sorted(a.kind + (f":{a.subject}" if a.subject else "") for a in cloud.store.alerts(box_id))


def supervised(cloud: Cloud) -> bool:
    """One round of what `boxcloud run` does every second (then true)."""
    cloud.supervise()
    return True


def test_box_offline_and_device_unreachable_are_told_apart(fresh_cloud: Cloud, tmp_path: Path) -> None:
    cloud = fresh_cloud
    assert cloud.receiver is not None
    cloud.receiver.monitor.device_grace_s = 1.0
    provision(cloud, tmp_path, "MON-1")
    with SimThread() as sim:
        conf = tmp_path / "boxd.toml"
        conf.write_text("[uplink]\nbatch_delay_ms = 100\nheartbeat_s = 1\n\n" + sim.sim.points_toml(0.5))
        box = BoxProcess.start(tmp_path, conf)
        try:
            box.wait_connected()
            wait_for(lambda: cloud.store.health("MON-1") is not None, 15, "a heartbeat")
            # a field device stops answering: one device alert, the Box stays online
            sim.call(sim.sim.set_offline, 2)
            wait_for(lambda: supervised(cloud) and "device:meter1" in open_alerts(cloud, "MON-1"), 30,
                     "the device alert")
            assert open_alerts(cloud, "MON-1") == ["device:meter1"] and cloud.box("MON-1").online
            sim.call(sim.sim.set_offline, 2, False)
            wait_for(lambda: open_alerts(cloud, "MON-1") == [], 30, "the device alert to close")
            # the Box dies: one offline alert (its Last Will), no device alerts with it
            sim.call(sim.sim.set_offline, 3)
            box.kill()
            wait_for(lambda: "offline" in open_alerts(cloud, "MON-1"), 15, "the offline alert")
            for _ in range(3):
                cloud.supervise()
            assert open_alerts(cloud, "MON-1") == ["offline"]
            out = subprocess.run([sys.executable, "-m", "cloud.cli", "--home", str(cloud.home), "alerts"],
                                 capture_output=True, text=True, timeout=30).stdout
            assert "MON-1" in out and "offline" in out and "Last Will" in out
            # it comes back: the alert closes and stays in the history
            box = BoxProcess.start(tmp_path, conf)
            box.wait_connected()
            wait_for(lambda: "offline" not in open_alerts(cloud, "MON-1"), 15, "the offline alert to close")
            assert any(a.kind == "offline" and a.closed for a in cloud.store.alerts("MON-1", include_closed=True))
            history = [online for _, online, _ in cloud.store.status_history("MON-1", 10)]
            assert history[:3] == [True, False, True]
        finally:
            box.stop()
