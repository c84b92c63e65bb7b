"""Device configuration: valid tables parse; each kind of invalid input names its place."""

from __future__ import annotations

import copy
import tomllib
from typing import Any

import pytest

from drivers.errors import ConfigError
from drivers.modbus import ModbusPoint, ModbusTcpDevice, check_device, parse_modbus_tcp_device
from drivers.sim import building_devices, building_points_toml

EXAMPLE = """
[[modbus_tcp]]
name = "ahu1"
host = "127.0.0.1"
port = 15020
unit_id = 1
poll_interval_s = 1.0
[[modbus_tcp.points]]
name = "supply_temp"
table = "holding"      # holding | input | coil | discrete
address = 0
type = "float32"
unit = "degC"
"""


def device(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "ahu1",
        "host": "127.0.0.1",
        "poll_interval_s": 1.0,
        "points": [{"name": "supply_temp", "table": "holding", "address": 0, "type": "float32"}],
    }
    raw.update(overrides)
    return raw


def with_point(**fields: Any) -> dict[str, Any]:
    point: dict[str, Any] = {"name": "p", "table": "holding", "address": 0, "type": "uint16"}
    point.update(fields)
    return device(points=[point])


def test_the_documented_example_parses() -> None:
    raw = tomllib.loads(EXAMPLE)["modbus_tcp"][0]
    dev = parse_modbus_tcp_device(raw)
    assert dev == ModbusTcpDevice(
        name="ahu1",
        host="127.0.0.1",
        port=15020,
        unit_id=1,
        poll_interval_s=1.0,
        points=(
            ModbusPoint(name="supply_temp", table="holding", address=0, type="float32", unit="degC"),
        ),
    )
    assert (dev.timeout_s, dev.retries, dev.max_gap, dev.byte_order, dev.word_order) == (
        1.0, 1, 8, "big", "big",
    )


def test_every_key_parses() -> None:
    raw = device(
        port=502, unit_id=0, poll_interval_s=5, timeout_s=0.5, retries=0, max_gap=0,
        byte_order="little", word_order="little",
        points=[
            {"name": "a", "table": "input", "address": 10, "type": "int32", "unit": "kWh",
             "scale": 0.1, "offset": -5, "byte_order": "big", "word_order": "big"},
            {"name": "flag-1", "table": "input", "address": 12, "type": "bool", "bit": 15},
            {"name": "label", "table": "holding", "address": 65534, "type": "string", "length": 2},
            {"name": "relay", "table": "coil", "address": 65535},
            {"name": "door", "table": "discrete", "address": 3, "type": "bool"},
        ],
    )
    dev = parse_modbus_tcp_device(raw)
    a, flag, label, relay, door = dev.points
    assert (a.scale, a.offset, a.byte_order, a.word_order, a.size) == (0.1, -5.0, "big", "big", 2)
    assert isinstance(dev.poll_interval_s, float) and dev.poll_interval_s == 5.0
    assert (flag.bit, label.length, label.size, relay.type, door.size) == (15, 2, 2, "bool", 1)
    assert (a.bit, a.length, relay.byte_order) == (None, None, None)


def test_the_simulators_configuration_parses_to_its_devices() -> None:
    raw = tomllib.loads(building_points_toml("127.0.0.1", 15020))
    parsed = tuple(parse_modbus_tcp_device(d) for d in raw["modbus_tcp"])
    assert parsed == building_devices("127.0.0.1", 15020)


def test_allowed_overlaps() -> None:
    raw = device(points=[
        {"name": "status", "table": "holding", "address": 5, "type": "uint16"},
        {"name": "bit0", "table": "holding", "address": 5, "type": "bool", "bit": 0},
        {"name": "bit1", "table": "holding", "address": 5, "type": "bool", "bit": 1},
        {"name": "temp_c", "table": "holding", "address": 6, "type": "float32"},
        {"name": "temp_f", "table": "holding", "address": 6, "type": "float32", "scale": 1.8,
         "offset": 32},
        {"name": "same_address_other_table", "table": "input", "address": 5, "type": "int32"},
    ])
    assert len(parse_modbus_tcp_device(raw).points) == 6


BAD: list[tuple[str, Any, str]] = [
    ("not a table", ["x"], "device: must be a table"),
    ("unknown device key", device(prot=1), 'device "ahu1": unknown key(s) \'prot\''),
    ("missing name", {k: v for k, v in device().items() if k != "name"}, 'device: missing key "name"'),
    ("bad name", device(name="AHU 1"), "device name 'AHU 1' must match"),
    ("long name", device(name="a" * 33), "must match"),
    ("name not str", device(name=1), "device: name must be a string, not 1 (int)"),
    ("missing host", {k: v for k, v in device().items() if k != "host"}, 'device "ahu1": missing key "host"'),
    ("bad host", device(host="a b"), 'device "ahu1": host \'a b\' is not an IP address or a DNS name'),
    ("port type", device(port="502"), 'device "ahu1": port must be an integer, not \'502\' (str)'),
    ("port bool", device(port=True), "port must be an integer, not True (bool)"),
    ("port range", device(port=70000), 'device "ahu1": port 70000 is out of range 1..65535'),
    ("unit id", device(unit_id=248), 'device "ahu1": unit_id 248 is out of range 0..247'),
    ("poll fast", device(poll_interval_s=0.01), "poll_interval_s 0.01 is out of range 0.1..86400"),
    ("poll slow", device(poll_interval_s=86401), "poll_interval_s 86401.0 is out of range"),
    ("poll nan", device(poll_interval_s=float("nan")), "poll_interval_s must be finite"),
    ("timeout", device(timeout_s=0.01), "timeout_s 0.01 is out of range 0.05..60"),
    ("retries", device(retries=11), "retries 11 is out of range 0..10"),
    ("max gap", device(max_gap=-1), "max_gap -1 is out of range 0..125"),
    ("order", device(byte_order="BIG"), "byte_order must be one of big | little, not 'BIG'"),
    ("points type", device(points={}), 'device "ahu1": points must be a list of tables'),
    ("no points", device(points=[]), 'device "ahu1": has no points'),
    ("too many points", device(points=[{}] * 10001), "10001 points, more than 10000"),
    ("point not a table", device(points=[3]), 'device "ahu1" point #1: must be a table'),
    ("unknown point key", with_point(adress=1), 'device "ahu1" point "p": unknown key(s) \'adress\''),
    ("missing address", device(points=[{"name": "p", "table": "holding", "type": "uint16"}]),
     'device "ahu1" point "p": missing key "address"'),
    ("missing table", device(points=[{"name": "p", "address": 0, "type": "uint16"}]),
     'device "ahu1" point "p": missing key "table"'),
    ("missing type", device(points=[{"name": "p", "table": "input", "address": 0}]),
     'device "ahu1" point "p": missing key "type"'),
    ("bad point name", with_point(name="Supply"), 'device "ahu1": point name \'Supply\' must match'),
    ("address range", with_point(name="supply_temp", address=70000),
     'device "ahu1" point "supply_temp": address 70000 is out of range 0..65535'),
    ("negative address", with_point(address=-1), "address -1 is out of range 0..65535"),
    ("address float", with_point(address=1.0), "address must be an integer, not 1.0 (float)"),
    ("address end", with_point(address=65535, type="float32"),
     'point "p": float32 at address 65535 takes 2 registers and ends at 65536, past 65535'),
    ("table", with_point(table="holdings"), "table must be one of holding | input | coil | discrete"),
    ("type", with_point(type="int8"), "type must be one of bool | int16"),
    ("coil not bool", with_point(table="coil", type="uint16"), 'a coil point has type "bool"'),
    ("bool no bit", with_point(type="bool"), "a bool in a holding register needs bit (0..15)"),
    ("bit range", with_point(type="bool", bit=16), "bit 16 is out of range 0..15"),
    ("bit on int", with_point(bit=1), "bit is only for a bool in a holding or input register"),
    ("bit on coil", with_point(table="coil", type="bool", bit=1), "bit is only for a bool"),
    ("string no length", with_point(type="string"), "a string needs length"),
    ("string length", with_point(type="string", length=126), "length 126 is out of range 1..125"),
    ("length on int", with_point(length=2), "length is only for a string"),
    ("scale zero", with_point(scale=0), 'point "p": scale must be finite and not 0'),
    ("scale type", with_point(scale="1"), "scale must be a number, not '1' (str)"),
    ("scale on bool", with_point(type="bool", bit=0, scale=2), "scale and offset are only for numbers"),
    ("unit type", with_point(unit=5), "unit must be a string"),
    ("unit long", with_point(unit="x" * 33), "must be at most 32 printable characters"),
    ("unit control", with_point(unit="deg\nC"), "must be at most 32 printable characters"),
    ("point order", with_point(word_order="middle"), "word_order must be one of big | little"),
    ("duplicate", device(points=[
        {"name": "p", "table": "holding", "address": 0, "type": "uint16"},
        {"name": "p", "table": "input", "address": 0, "type": "uint16"}]),
     'device "ahu1" point "p": name is used twice'),
    ("overlap", device(points=[
        {"name": "a", "table": "holding", "address": 0, "type": "float32"},
        {"name": "b", "table": "holding", "address": 1, "type": "uint16"}]),
     'device "ahu1" point "b": uint16 at holding 1 overlaps point "a" (float32 at holding 0..1); '
     "overlapping points must cover the same registers"),
    ("same range other type", device(points=[
        {"name": "a", "table": "holding", "address": 0, "type": "int16"},
        {"name": "b", "table": "holding", "address": 0, "type": "uint16"}]),
     'point "b": uint16 at holding 0 overlaps point "a" (int16 at holding 0) with a different type'),
    ("bits on a float", device(points=[
        {"name": "a", "table": "holding", "address": 0, "type": "float32"},
        {"name": "b", "table": "holding", "address": 0, "type": "bool", "bit": 0}]),
     'point "a": float32 at holding 0..1 overlaps point "b" (bool at holding 0)'),
]


@pytest.mark.parametrize(("raw", "message"), [(r, m) for _, r, m in BAD], ids=[c for c, _, _ in BAD])
def test_invalid_input_names_its_place(raw: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_modbus_tcp_device(raw)
    assert message in str(info.value)


def test_untrusted_strings_are_shortened_in_messages() -> None:
    with pytest.raises(ConfigError) as info:
        parse_modbus_tcp_device(device(byte_order="x" * 1000))
    assert len(str(info.value)) < 200


def test_input_is_not_modified() -> None:
    raw = device()
    before = copy.deepcopy(raw)
    parse_modbus_tcp_device(raw)
    assert raw == before


def test_devices_built_in_code_are_checked_too() -> None:
    dev = ModbusTcpDevice(
        name="x", host="h", poll_interval_s=1,
        points=(ModbusPoint(name="p", address=0, type="bool"),),
    )
    with pytest.raises(ConfigError, match='device "x" point "p": a bool in a holding register needs bit'):
        check_device(dev)
