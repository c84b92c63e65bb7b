"""HIL: an installer provisions a Box with boxctl, starts boxd, and every field point reaches the cloud."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from cloud.platform import Cloud
from drivers import Quality
from tests.support.boxproc import BoxProcess
from tests.support.wait import wait_for


def test_provisioned_box_delivers_every_point_over_mtls(cloud: Cloud, field_devices: str, tmp_path: Path) -> None:
    token, _ = cloud.add_box("HIL-BOX-1", 600)
    state = tmp_path / "box"
    r = subprocess.run([sys.executable, "-m", "provisioning.cli", "--state-dir", str(state), "provision",
                        "--server", f"https://localhost:{cloud.settings.enroll_port}", "--token", token,
                        "--ca", str(cloud.pki.root_cert)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    conf = tmp_path / "boxd.toml"
    conf.write_text(field_devices)
    configured = {f"{d['name']}.{p['name']}" for d in tomllib.loads(field_devices)["modbus_tcp"] for p in d["points"]}
    box = BoxProcess.start(state, conf)
    try:
        box.wait_connected()
        wait_for(lambda: {p for p, _, _, q, _ in cloud.store.latest("HIL-BOX-1") if q == Quality.GOOD} == configured,
                 60, "every configured point, good, in the cloud")
        s = subprocess.run([sys.executable, "-m", "provisioning.cli", "--state-dir", str(state), "status"],
                           capture_output=True, text=True, timeout=60)
        assert s.returncode == 0 and "connected to the platform" in s.stdout, s.stdout
    finally:
        assert box.stop() == 0
    row = cloud.store.box("HIL-BOX-1")
    assert row is not None and row.status_reason == "stopped"
