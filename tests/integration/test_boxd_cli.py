"""The `boxd` command's failures as an installer sees them: one line, an exit status, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from drivers.sim._building import building_points_toml


def boxd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "boxd.cli", *args], capture_output=True, text=True, timeout=60)


def test_check_config_accepts_a_good_file_and_explains_a_bad_one(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(building_points_toml("127.0.0.1", 502))
    r = boxd("check-config", str(good))
    assert r.returncode == 0 and "valid (3 bus(es): 3 Modbus TCP, 0 Modbus RTU, 0 BACnet/IP; 25 point(s))" in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(building_points_toml("127.0.0.1", 502).replace('type = "float32"', 'type = "float33"', 1))
    r = boxd("check-config", str(bad))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "float33" in r.stderr


def test_an_unprovisioned_box_says_what_to_do(tmp_path: Path) -> None:
    conf = tmp_path / "boxd.toml"
    conf.write_text(building_points_toml("127.0.0.1", 502))
    r = boxd("--state-dir", str(tmp_path / "state"), "--config", str(conf), "run")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "not provisioned" in r.stderr and "boxctl provision" in r.stderr
