"""Regression tests of what the fuzz harness (tests/fuzz) found: each must be a ConfigError."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

import boxconfig as config
from boxconfig.errors import ConfigError

HUGE = 16**4000  # TOML hex literals are not bound by Python's 4300-digit int-to-text limit

DEVICE: dict[str, Any] = {"name": "d1", "host": "h", "poll_interval_s": 1.0,
                          "points": [{"name": "p", "table": "holding", "address": 0, "type": "uint16"}]}
BACNET: dict[str, Any] = {"name": "b", "interface": "eth0", "device_instance": 1,
                          "devices": [{"name": "d2", "device_instance": 2,
                                       "points": [{"name": "p", "object": "analog-value,1"}]}]}


@pytest.mark.parametrize("raw", [
    {"uplink": {"keepalive_s": HUGE}},
    {"queue": {"max_samples": -HUGE}},
    {"modbus_tcp": [{**DEVICE, "port": HUGE}]},
    {"modbus_tcp": [{**DEVICE, "name": HUGE}]},
    {"modbus_tcp": [{**DEVICE, "points": [{**DEVICE["points"][0], "address": HUGE}]}]},
    {"bacnet": [{**BACNET, "port": HUGE}]},
    {"bacnet": [{**BACNET, "name": [HUGE]}]},
])
def test_huge_integers_are_config_errors(raw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="too big to show"):
        config.parse(raw)
    assert any("too big to show" in p for p in config.problems(raw))


def test_huge_hex_integer_from_toml(tmp_path: Path) -> None:
    text = "[uplink]\nkeepalive_s = 0x" + "f" * 4000 + "\n"
    assert tomllib.loads(text)["uplink"]["keepalive_s"] > 0
    path = tmp_path / "boxd.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="keepalive_s must be an integer from 10 to 1200, not <int too big"):
        config.load(path)


@pytest.mark.parametrize("text", ["a = " + "1" * 5000, "a = " + "[" * 5000])
def test_toml_the_parser_cannot_take_is_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "boxd.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="is not valid TOML"):
        config.load(path)


@pytest.mark.parametrize("raw", [
    {"modbus_tcp": [{**DEVICE, "poll_interval_s": HUGE}]},
    {"modbus_tcp": [{**DEVICE, "points": [{**DEVICE["points"][0], "writable": True, "min": -HUGE}]}]},
    {"bacnet": [{**BACNET, "apdu_timeout_s": HUGE}]},
])
def test_huge_integers_where_numbers_go(raw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="must be a finite number"):
        config.parse(raw)
