"""Boxes that take updates, for the OTA tests: `boxd launch` under a service manager that restarts
it as systemd's ``Restart=always`` would (`tests.support.service`), provisioned against a real
cloud, its TUF root shipped as the image would, and bundles built from this source tree (good
ones, and broken ones on purpose)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from boxkit.machine import hardware_id
from cloud import release
from cloud import tufrepo as repo
from cloud.platform import Cloud
from ota import slots
from tests.support.boxproc import stop_process
from tests.support.cloudkit import provision
from tests.support.wait import wait_for

SOURCE = Path(__file__).resolve().parents[2]
FINAL = ("committed", "rolled_back", "failed", "aborted")  # an update's last event
HEAD = "[uplink]\nbatch_delay_ms = 100\nreconnect_max_s = 2\nheartbeat_s = 2\n\n"

# A release whose daemon dies at start (an import-time error).
BROKEN_START = {"boxd/daemon.py": b'raise RuntimeError("boxd cannot start: a broken release, built on purpose")\n'}


def broken_bus() -> dict[str, bytes]:
    """A release whose Modbus reads all fail (a decoding bug): it runs and connects, never healthy."""
    path = "drivers/modbus/_link.py"
    text = (SOURCE / path).read_text()
    bad = text.replace("if response.function_code != _READ_CODES[table]:", "if True:  # the bug", 1)
    assert bad != text, "drivers/modbus/_link.py changed: update tests/support/otakit.broken_bus"
    return {path: bad.encode()}


def publish(cloud: Cloud, out: Path, version: str, replace: dict[str, bytes] | None = None) -> Path:
    """Build a bundle of this source tree as `version` and publish it in the cloud's TUF repository."""
    path = release.build(SOURCE, out, version, [hardware_id()], replace=replace)
    repo.publish_release(cloud.ota_repo, cloud.ota_keys, path, version, [hardware_id()])
    return path


class LaunchedBox:
    """A provisioned Box run by `boxd launch` as a service (its stderr, the daemon's, goes to `log`);
    `proc` is the service manager, whose one child is the daemon the launcher became."""

    def __init__(self, cloud: Cloud, state: Path, serial: str, config_text: str,
                 env: dict[str, str] | None = None, *, start: bool = True) -> None:
        self.cloud = cloud
        self.state = state
        self.box_id = provision(cloud, state, serial).box_id
        (state / "ota").mkdir(exist_ok=True)
        shutil.copyfile(cloud.ota_repo / "metadata" / "1.root.json", state / "ota" / "root.json")  # the image's
        self.config = state / "boxd.toml"
        self.config.write_text(config_text)
        self.log = state / "boxd.log"
        self.env = {**os.environ, "BOXD_OTA_BACKOFF_S": "0.2", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        if start:
            self.start()

    @property
    def software(self) -> Path:
        return self.state / "software"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.support.service", "--", sys.executable, "-m", "boxd.cli",
                 "--state-dir", str(self.state), "--config", str(self.config), "launch"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env)

    def status(self) -> dict[str, object]:
        """The running daemon's status file ({} when there is none)."""
        try:
            doc = json.loads((self.state / "run" / "status.json").read_text())
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def slot(self) -> slots.SlotState:
        return slots.load(self.software)

    def releases(self) -> list[str]:
        d = self.software / "releases"
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []

    def running(self) -> str:
        """The version of the daemon that runs and is connected ("" if none is)."""
        st = self.status()
        alive = isinstance(st.get("pid"), int) and Path(f"/proc/{st['pid']}").exists()
        return str(st.get("version", "")) if alive and st.get("connected") else ""

    def wait_running(self, version: str, timeout: float = 60) -> None:
        assert self.proc is not None
        wait_for(lambda: self.running() == version or self.proc.poll() is not None, timeout,  # type: ignore[union-attr]
                 f"Box {self.box_id} to run version {version}")
        assert self.proc.poll() is None, self.log.read_text()[-3000:]

    def wait_committed(self, version: str, timeout: float = 90) -> None:
        wait_for(lambda: (s := self.slot()).active == version and s.trial is None and self.running() == version,
                 timeout, f"Box {self.box_id} to commit version {version}")

    def stop(self) -> int:
        return 0 if self.proc is None else stop_process(self.proc, 30)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def events(self) -> list[tuple[str, str, str]]:
        """(deployment, state, detail) of the `ota` events the Box queued for the platform, from its log
        (outside a deployment the cloud only logs them; test_ota_deploy.py follows them in the cloud)."""
        return [(m[1], m[2], m[3]) for m in re.finditer(r"update (\S+) to \S+: (\w+): (.*)", self.text())]

    def send_update(self, deployment: str, target: str, version: str, health_s: int = 30) -> dict[str, object]:
        """The platform's `update` command; the Box's reply to it."""
        cmd = self.cloud.send_command(self.box_id, "update", {"deployment": deployment, "target": target,
                                                             "version": version, "health_s": health_s})
        def answered() -> dict[str, object] | None:
            row = self.cloud.store.command(cmd)
            return row.reply if row is not None and row.status else None

        return wait_for(answered, 30, f"the answer to the update {deployment}")

    def outcome(self, deployment: str, timeout: float = 120) -> tuple[str, str]:
        """The final (state, detail) the Box reported for `deployment`."""
        def done() -> tuple[str, str] | None:
            return next(((state, detail) for d, state, detail in self.events()
                         if d == deployment and state in FINAL), None)
        return wait_for(done, timeout, f"the outcome of {deployment} on {self.box_id}")
