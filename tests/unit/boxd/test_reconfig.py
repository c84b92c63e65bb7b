"""The configuration files: install keeps the last good one, restore brings it back, a broken
file at start falls back to the last good one, the version handled is kept."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from boxconfig.errors import ConfigError
from boxd import reconfig

GOOD = (b'[[modbus_tcp]]\nname = "a"\nhost = "127.0.0.1"\npoll_interval_s = 1.0\n'
        b'[[modbus_tcp.points]]\nname = "t"\ntable = "holding"\naddress = 0\ntype = "uint16"\n')
OTHER = GOOD.replace(b'"a"', b'"b"')


def test_install_keeps_what_ran_as_the_last_good_and_restore_brings_it_back(tmp_path: Path) -> None:
    path = tmp_path / "boxd.toml"
    path.write_bytes(GOOD)
    files = reconfig.ConfigFiles(path, tmp_path, GOOD)
    files.install(OTHER)
    assert path.read_bytes() == OTHER and files.last_good.read_bytes() == GOOD
    assert files.restore() == GOOD
    assert path.read_bytes() == GOOD and files.running == GOOD


def test_the_version_handled_is_kept_and_garbage_reads_as_none(tmp_path: Path) -> None:
    files = reconfig.ConfigFiles(tmp_path / "boxd.toml", tmp_path)
    assert files.handled_version() == 0
    files.set_handled(7)
    assert reconfig.ConfigFiles(tmp_path / "boxd.toml", tmp_path).handled_version() == 7
    files.version_file.write_text("seven")
    assert files.handled_version() == 0


def test_a_broken_file_at_start_falls_back_to_the_last_good(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "boxd.toml"
    path.write_bytes(GOOD)
    cfg, text = reconfig.load_at_start(path, tmp_path)
    assert cfg.modbus_tcp[0].name == "a" and text == GOOD
    (tmp_path / reconfig.LAST_GOOD).write_bytes(OTHER)
    path.write_bytes(b"[[modbus_tcp]\nbroken")
    with caplog.at_level(logging.WARNING):
        cfg, text = reconfig.load_at_start(path, tmp_path)
    assert cfg.modbus_tcp[0].name == "b" and text == OTHER
    assert "last good configuration" in caplog.text
    (tmp_path / reconfig.LAST_GOOD).write_bytes(b"also broken")
    with pytest.raises(ConfigError, match="not valid TOML"):
        reconfig.load_at_start(path, tmp_path)


def test_a_configuration_that_never_worked_does_not_become_the_last_good(tmp_path: Path) -> None:
    files = reconfig.ConfigFiles(tmp_path / "boxd.toml", tmp_path, GOOD)
    files.install(OTHER)  # GOOD had worked
    files.install(b"# third\n", keep_running=False)  # OTHER had not (yet): GOOD stays the last good
    assert files.last_good.read_bytes() == GOOD
