"""The Box configuration file: defaults, limits, and errors that say where."""

from __future__ import annotations

from pathlib import Path

import pytest

import boxconfig as config
from boxconfig.errors import ConfigError
from drivers.sim._building import building_points_toml


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "boxd.toml"
    p.write_text(text)
    return p


def test_the_demo_building_parses(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, building_points_toml("127.0.0.1", 15020)))
    assert [d.name for d in cfg.modbus_tcp] == ["ahu1", "meter1", "room1"]
    assert cfg.uplink == config.UplinkSettings()


@pytest.mark.parametrize(("text", "words"), [
    ("[uplink]\nkeepalive_s = 5\n", "keepalive_s must be an integer from 10 to 1200"),
    ("[uplink]\nbatch_delay_ms = true\n", "batch_delay_ms must be an integer"),
    ("[uplink]\nbatch_delay_ms = 900001\n", "batch_delay_ms must be an integer from 0 to 900000"),
    ("[uplink]\ntime_slack_ms = 1001\n", "time_slack_ms must be an integer from 0 to 1000"),
    ("[uplink]\nkeepalive = 60\n", "unknown key(s): keepalive"),
    ("[uplinks]\n", "unknown section(s): uplinks"),
    ("modbus_tcp = 3\n", "must be a list of tables"),
    ("[uplink\n", "not valid TOML"),
    ("[[modbus_tcp]]\nname = \"a\"\n", "[[modbus_tcp]] #1"),
])
def test_bad_configurations_say_what_and_where(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        config.load(write(tmp_path, text))
    assert words in str(e.value)


def test_duplicate_device_names_are_refused(tmp_path: Path) -> None:
    one = building_points_toml("127.0.0.1", 15020)
    with pytest.raises(ConfigError, match='device name "ahu1" is used twice'):
        config.load(write(tmp_path, one + one))


def test_missing_or_binary_files_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(_binary(tmp_path))


def _binary(tmp_path: Path) -> Path:
    p = tmp_path / "bin.toml"
    p.write_bytes(b"\xff\xfe\x00garbage")
    return p


def test_the_parse_cache_serves_only_the_same_bytes(tmp_path: Path) -> None:
    conf, cache = tmp_path / "boxd.toml", tmp_path / config.CACHE_FILE
    conf.write_text(building_points_toml("127.0.0.1", 1502))
    first = config.load(conf, cache)
    assert cache.exists() and cache.stat().st_mode & 0o777 == 0o600
    assert config.load(conf, cache) == first  # from the cache
    # an edited file is parsed anew: a stale cache never wins
    conf.write_text(conf.read_text().replace("port = 1502", "port = 1503"))
    assert {d.port for d in config.load(conf, cache).modbus_tcp} == {1503}
    # a broken file is refused even though a cache exists, and a corrupt cache is ignored
    cache.write_text("{not json")
    assert {d.port for d in config.load(conf, cache).modbus_tcp} == {1503}
    conf.write_text("[uplink]\nbatch_delay_ms = -1\n")
    with pytest.raises(ConfigError, match="batch_delay_ms"):
        config.load(conf, cache)


URGENT = """
[[modbus_tcp]]
name = "ahu1"
host = "127.0.0.1"
poll_interval_s = 1.0
[[modbus_tcp.points]]
name = "fire"
table = "coil"
address = 0
urgent = true
[[modbus_tcp.points]]
name = "temp"
table = "holding"
address = 0
type = "int16"

[[modbus_tcp]]
name = "alarms"
host = "127.0.0.1"
poll_interval_s = 1.0
urgent = true
[[modbus_tcp.points]]
name = "smoke"
table = "coil"
address = 0
[[modbus_tcp.points]]
name = "count"
table = "holding"
address = 0
type = "uint16"
urgent = false

[[modbus_rtu]]
name = "rs485-1"
port = "/dev/ttyUSB0"
[[modbus_rtu.devices]]
name = "meter2"
unit_id = 7
poll_interval_s = 5.0
urgent = true
[[modbus_rtu.devices.points]]
name = "trip"
table = "coil"
address = 0

[[bacnet]]
name = "bacnet-1"
interface = "fb0"
device_instance = 4194300
[[bacnet.devices]]
name = "ahu2"
device_instance = 1001
[[bacnet.devices.points]]
name = "supply_temp"
object = "analog-input,1"
[[bacnet.devices.points]]
name = "alarm"
object = "binary-input,1"
urgent = true
"""


def test_urgent_on_a_point_overrides_its_devices_on_every_bus(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, URGENT))
    assert cfg.urgent_points() == {"ahu1.fire", "alarms.smoke", "meter2.trip", "ahu2.alarm"}
    assert config.BoxConfig().urgent_points() == frozenset()  # nothing is urgent unless marked


REPORTING = """
[report]
mode = "change"
deadband = 0.1
max_age_s = 600

[[modbus_tcp]]
name = "ahu1"
host = "127.0.0.1"
poll_interval_s = 1.0
report = { deadband = 0.5, deadband_pct = 2 }
points = [
  { name = "t", table = "holding", address = 0, type = "float32", report = { max_age_s = 60 } },
  { name = "sp", table = "holding", address = 2, type = "float32", report = { mode = "poll" } },
]

[[modbus_tcp]]
name = "meter1"
host = "127.0.0.1"
poll_interval_s = 1.0
points = [{ name = "kwh", table = "input", address = 0, type = "uint32" }]
"""


def test_report_tables_override_field_by_field(tmp_path: Path) -> None:
    from boxconfig.report import Rule, report_rules

    cfg = config.load(write(tmp_path, REPORTING))
    assert report_rules(cfg, ["ahu1.t", "ahu1.sp", "meter1.kwh", "other.x"]) == [
        Rule(False, 0.5, 2.0, 60_000), Rule(True, 0.5, 2.0, 600_000),
        Rule(False, 0.1, 0.0, 600_000), Rule(False, 0.1, 0.0, 600_000)]
    assert report_rules(config.BoxConfig(), ["a.b"]) == [Rule(True, 0.0, 0.0, 900_000)]  # no [report]: poll


@pytest.mark.parametrize(("text", "words"), [
    ('[report]\nmode = "cov"\n', '[report]: mode must be one of change | poll, not \'cov\''),
    ("[report]\ndeadband = -1\n", "[report]: deadband -1.0 must be from 0 to 1e12 (in the point's unit)"),
    ("[report]\ndeadband_pct = 150\n", "[report]: deadband_pct 150.0 is out of range 0..100"),
    ("[report]\nmax_age_s = 0\n", "[report]: max_age_s 0 is out of range 1..86400"),
    ("[report]\nmax_age_s = 1.5\n", "[report]: max_age_s must be an integer"),
    ("[report]\ndeadband = nan\n", "[report]: deadband must be finite"),
    ("[report]\ndead_band = 1\n", "[report]: unknown key(s) 'dead_band'"),
    ("report = 3\n", "[report] must be a table"),
    (REPORTING.replace("max_age_s = 60 }", "max_age_s = 100000 }"),
     '[[modbus_tcp]] #1: device "ahu1" point "t": report: max_age_s 100000 is out of range 1..86400'),
    (REPORTING.replace("deadband_pct = 2 }", "deadband_pct = true }"),
     '[[modbus_tcp]] #1: device "ahu1": report: deadband_pct must be a number'),
])
def test_bad_report_tables_say_what_and_where(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        config.load(write(tmp_path, text))
    assert words in str(e.value)
    assert any(words in p for p in config.file_problems(write(tmp_path, text)))
