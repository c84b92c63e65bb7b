"""What an operator and an installer meet around one real Box (boxd process, running cloud, Modbus
simulator), through the commands themselves: one daemon per state directory, the configuration
the Box runs fetched and diffed, a planned restart that raises no alarm, a revoked Box that says
so in words, acknowledging alerts, decommissioning; `boxcloud run` on a busy port and twice."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from cloud.platform import Cloud
from tests.support.boxproc import BoxProcess
from tests.support.cloudkit import make_cloud, provision
from tests.support.simthread import SimThread
from tests.support.wait import free_port, wait_for


def boxcloud(cloud: Cloud, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cloud.cli", "--home", str(cloud.home), *argv],
                          capture_output=True, text=True, timeout=120)


def test_an_operator_manages_a_box_through_the_commands(fresh_cloud: Cloud, tmp_path: Path) -> None:
    cloud = fresh_cloud
    provision(cloud, tmp_path, "OPS-1")
    with SimThread() as sim:
        conf = tmp_path / "boxd.toml"
        text = "[uplink]\nbatch_delay_ms = 100\nheartbeat_s = 2\n\n" + sim.sim.points_toml(0.5)
        conf.write_text(text)
        box = BoxProcess.start(tmp_path, conf, env={"BOXD_PROBATION_S": "5"})
        try:
            box.wait_connected()
            # one daemon per state directory
            second = subprocess.run([sys.executable, "-m", "boxd.cli", "--state-dir", str(tmp_path), "--config",
                                     str(conf), "run"], capture_output=True, text=True, timeout=60)
            assert second.returncode == 2, second.stderr
            assert second.stderr == (f"boxd: boxd is already running on {tmp_path} (pid {box.proc.pid}); one daemon "
                                     "per state directory: stop it first (systemctl stop boxd)\n")
            # the configuration it runs: written on the Box, then the same pushed, fetched and diffed
            wait_for(lambda: cloud.store.health("OPS-1") is not None, 15, "a heartbeat")
            r = boxcloud(cloud, "config", "get", "OPS-1")
            assert r.returncode == 1 and "not pushed from this cloud" in r.stderr
            r = boxcloud(cloud, "config", "push", "OPS-1", str(conf), "--wait", "60")
            assert r.returncode == 0 and "configuration version 1 applied." in r.stdout, r.stdout + r.stderr
            r = boxcloud(cloud, "config", "get", "OPS-1")
            assert r.returncode == 0 and r.stdout == text
            edited = tmp_path / "edited.toml"
            edited.write_text(text.replace("heartbeat_s = 2", "heartbeat_s = 3"))
            r = boxcloud(cloud, "config", "diff", "OPS-1", str(edited))
            assert r.returncode == 5 and "-heartbeat_s = 2\n+heartbeat_s = 3\n" in r.stdout, r.stdout
            assert boxcloud(cloud, "config", "diff", "OPS-1", str(conf)).returncode == 0
            status = subprocess.run([sys.executable, "-m", "provisioning.cli", "--state-dir", str(tmp_path), "status",
                                     "--json"], capture_output=True, text=True, timeout=60)
            doc = json.loads(status.stdout)
            assert doc["daemon"]["config_version"] == 1 and doc["daemon"]["points"] > 0
            assert all(b["polling"] and b["points"] > 0 for b in doc["daemon"]["bus_health"].values()), doc
            # a second push that changes something: on probation, then kept, said by the push itself
            r = boxcloud(cloud, "config", "push", "OPS-1", str(edited), "--wait", "60")
            assert r.returncode == 0 and "on probation" in r.stdout and "version 2 kept." in r.stdout, r.stdout

            # a planned restart: the Box says so, and no offline alert opens (unless it stays away)
            r = boxcloud(cloud, "cmd", "OPS-1", "restart")
            assert r.returncode == 0 and "restart ok" in r.stdout
            assert box.proc.wait(30) == 75
            wait_for(lambda: cloud.store.box("OPS-1").status_reason == "restarting", 15,  # type: ignore[union-attr]
                     "the planned offline status")
            assert cloud.receiver is not None
            cloud.receiver.monitor.check()
            assert [a.kind for a in cloud.store.alerts("OPS-1")] == []
            cloud.receiver.monitor.check(now=time.time() + 600)  # ... and it did not come back
            (alert,) = cloud.store.alerts("OPS-1")
            assert alert.kind == "offline" and "not back" in alert.message
            box = BoxProcess.start(tmp_path, conf)
            box.wait_connected()
            wait_for(lambda: not cloud.store.alerts("OPS-1"), 15, "the alert to close when it is back")

            # alerts: numbered, with a duration; an acknowledgement is said, a second one changes nothing
            r = boxcloud(cloud, "alerts", "--all", "--json")
            (listed,) = json.loads(r.stdout)
            assert listed["kind"] == "offline" and listed["state"] == "closed" and listed["duration_s"] >= 0
            cloud.store.open_alert("OPS-1", "evicted", "", "the Box's queue was full")
            (ev,) = cloud.store.alerts("OPS-1")
            r = boxcloud(cloud, "alerts", "ack", str(ev.id))
            assert r.returncode == 0 and "acknowledged and closed" in r.stdout
            r = boxcloud(cloud, "alerts", "ack", str(ev.id))
            assert r.returncode == 0 and "nothing changed" in r.stdout

            # revoked: the daemon says it in words, with what to do; a second revoke changes nothing
            r = boxcloud(cloud, "box", "revoke", "OPS-1")
            assert r.returncode == 0 and "live session was ended" in r.stdout
            wait_for(lambda: "REVOKED" in box.log.read_text() or "revoked" in box.log.read_text(), 30,
                     "the daemon to say its certificate was revoked")
            assert "what to do" in box.log.read_text() and "boxcloud box add OPS-1" in box.log.read_text()
            r = boxcloud(cloud, "box", "revoke", "OPS-1")
            assert r.returncode == 0 and "already revoked" in r.stdout and "nothing changed" in r.stdout
        finally:
            box.stop()

    # decommissioned: the retained configuration is cleared by the running cloud; the data kept, then deleted
    r = boxcloud(cloud, "box", "decommission", "OPS-1")
    assert r.returncode == 0 and "data kept" in r.stdout, r.stdout + r.stderr
    wait_for(lambda: cloud.store.retained_to_clear() == [], 15, "the retained configuration to be cleared")
    assert cloud.store.latest("OPS-1")
    r = boxcloud(cloud, "box", "decommission", "OPS-1", "--delete-data")
    assert r.returncode == 0 and "data deleted" in r.stdout
    r = boxcloud(cloud, "box", "show", "OPS-1")
    assert r.returncode == 1 and r.stderr == "boxcloud: no Box 'OPS-1' here ('boxcloud box list' shows them)\n"
    assert not cloud.store.latest("OPS-1") and not cloud.store.alerts("OPS-1", include_closed=True)


def _mosquittos_of(home: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"mosquitto" in cmdline and str(home).encode() in cmdline:
            pids.append(int(proc.name))
    return pids


def test_boxcloud_run_names_a_busy_port_leaves_nothing_and_runs_once(tmp_path: Path,
                                                                     mosquitto_available: None) -> None:
    cloud = make_cloud(tmp_path / "cloud")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", cloud.settings.enroll_port))
        busy.listen()
        r = boxcloud(cloud, "run")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and str(cloud.settings.enroll_port) in r.stderr, r.stderr
    assert "enrollment" in r.stderr and _mosquittos_of(cloud.home) == []
    first = subprocess.Popen([sys.executable, "-m", "cloud.cli", "--home", str(cloud.home), "run"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert first.stdout is not None
        assert "broker on" in first.stdout.readline()
        r = boxcloud(cloud, "run")
        assert r.returncode == 1 and r.stderr == f"boxcloud: boxcloud is already running on {cloud.home} " \
                                                 f"(pid {first.pid})\n"
        # init refuses the same port twice, and a bind that is no address, before anything is made
        other = tmp_path / "other"
        r = subprocess.run([sys.executable, "-m", "cloud.cli", "--home", str(other), "init", "--broker-port",
                            str(free_port()), "--enroll-port", "9443", "--bind", "localhost"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and "--bind 'localhost' is not an IP address" in r.stderr and not other.exists()
    finally:
        first.terminate()
        first.wait(30)
    wait_for(lambda: _mosquittos_of(cloud.home) == [], 15, "the broker to stop with boxcloud run")
    assert os.path.exists(cloud.home / "cloud.json")
