"""`boxctl scan`, `read` and `import-points` as an installer uses them on site, against the simulators."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import boxconfig as config
from drivers.sim.modbus_rtu_building import RtuBuildingSimulator
from tests.support.simthread import SimThread
from tests.support.wait import free_port


def boxctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "provisioning.cli", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def tcp() -> Iterator[SimThread]:
    with SimThread() as s:
        yield s


def test_scan_a_modbus_tcp_host_export_and_import(tcp: SimThread, tmp_path: Path) -> None:
    export = tmp_path / "found.toml"
    r = boxctl("scan", "modbus-tcp", f"127.0.0.1:{tcp.sim.port}", "--units", "1-4", "--addresses", "0-20",
               "--export", str(export), "--device", "ahu9")
    assert r.returncode == 0, r.stderr
    assert "Units answering: 1, 2, 3" in r.stdout
    assert "unit ids" in r.stderr  # progress was shown
    conf = tmp_path / "boxd.toml"
    conf.write_text("[uplink]\nheartbeat_s = 60\n")
    r = boxctl("import-points", str(export), "--config", str(conf))
    assert r.returncode == 0, r.stderr
    cfg = config.load(conf)
    assert {d.unit_id for d in cfg.modbus_tcp} == {1, 2, 3} and cfg.point_count() > 10
    # importing the same again would duplicate device names: refused, file untouched
    before = conf.read_text()
    r = boxctl("import-points", str(export), "--config", str(conf))
    assert r.returncode == 1 and "used twice" in r.stderr and conf.read_text() == before


def test_read_a_point_live_and_explain_a_fault(tcp: SimThread, tmp_path: Path) -> None:
    conf = tmp_path / "boxd.toml"
    conf.write_text(tcp.sim.points_toml(1.0))
    r = boxctl("read", "ahu1.supply_setpoint", "--config", str(conf))
    assert r.returncode == 0 and r.stdout.strip() == "ahu1.supply_setpoint = 18.0 degC", r.stdout + r.stderr
    tcp.call(tcp.sim.set_offline, 2)
    try:
        r = boxctl("read", "meter1.energy", "--config", str(conf))
    finally:
        tcp.call(tcp.sim.set_offline, 2, False)
    assert r.returncode == 1 and "no answer from the device" in r.stdout
    r = boxctl("read", "ahu1.nope", "--config", str(conf))
    assert r.returncode == 1 and "no point 'ahu1.nope'" in r.stderr and "Traceback" not in r.stderr


def test_installer_errors_are_words(tmp_path: Path) -> None:
    r = boxctl("scan", "modbus-tcp", f"127.0.0.1:{free_port()}")
    assert r.returncode == 1 and "refused" in r.stderr and "Traceback" not in r.stderr
    r = boxctl("scan", "modbus-rtu", "/dev/ttyNOPE9")
    assert r.returncode == 1 and "not found" in r.stderr and "Traceback" not in r.stderr
    r = boxctl("scan", "modbus-tcp", "127.0.0.1", "--units", "300")
    assert r.returncode == 1 and "0..247" in r.stderr
    # an export that could not be written is refused before the scan, not after it
    r = boxctl("scan", "modbus-tcp", f"127.0.0.1:{free_port()}", "--export", str(tmp_path / "missing" / "x.toml"))
    assert r.returncode == 1 and r.stderr == f"boxctl: --export {tmp_path / 'missing' / 'x.toml'}: there is no " \
                                             f"directory {tmp_path / 'missing'}\n"
    # a mistyped --config creates nothing: the points are not imported into a new file
    points = tmp_path / "points.toml"
    points.write_text('[[modbus_tcp]]\nname = "x"\nhost = "10.0.0.1"\npoll_interval_s = 1.0\n'
                      '[[modbus_tcp.points]]\nname = "t"\ntable = "holding"\naddress = 0\ntype = "uint16"\n')
    r = boxctl("import-points", str(points), "--config", str(tmp_path / "bxod.toml"))
    assert r.returncode == 1 and "there is no configuration" in r.stderr and not (tmp_path / "bxod.toml").exists()


def test_scan_an_rtu_line_and_spot_a_wrong_baud_rate(tmp_path: Path) -> None:
    rtu = RtuBuildingSimulator(baudrate=19200)
    with SimThread(sim=rtu):
        path = rtu.path
        r = boxctl("scan", "modbus-rtu", path, "--baud", "19200", "--units", "6-9", "--addresses", "0-3")
        assert r.returncode == 0, r.stderr
        assert "Units answering: 7, 8, 9" in r.stdout
        r = boxctl("scan", "modbus-rtu", path, "--baud", "9600", "--units", "6-9", "--addresses", "0-3")
        assert r.returncode == 1 and "baud rate or parity" in r.stderr, r.stderr
