"""Device configuration: valid tables parse; each kind of invalid input names its place."""

from __future__ import annotations

import copy
import tomllib
from typing import Any

import pytest

from drivers.errors import ConfigError
from drivers.modbus import (
    ModbusPoint,
    ModbusRtuDevice,
    ModbusRtuLine,
    ModbusTcpDevice,
    check_device,
    check_rtu_line,
    parse_modbus_rtu_line,
    parse_modbus_tcp_device,
)
from drivers.sim import building_devices, building_points_toml, building_rtu_line, building_rtu_points_toml

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


# -- the keys added for scheduling and writes --------------------------------------------


def test_point_write_and_interval_keys_parse() -> None:
    raw = device(write_multiple=True, max_registers=64, points=[
        {"name": "sp", "table": "holding", "address": 0, "type": "float32", "writable": True,
         "min": 12, "max": 28.5, "poll_interval_s": 10},
        {"name": "relay", "table": "coil", "address": 0, "writable": True},
        {"name": "ro", "table": "input", "address": 0, "type": "uint16"},
    ])
    dev = parse_modbus_tcp_device(raw)
    sp, relay, ro = dev.points
    assert (dev.write_multiple, dev.max_registers) == (True, 64)
    assert (sp.writable, sp.min, sp.max, sp.poll_interval_s) == (True, 12.0, 28.5, 10.0)
    assert isinstance(sp.min, float)
    assert relay.writable and (relay.min, relay.max) == (None, None)
    assert (ro.writable, ro.poll_interval_s) == (False, None)


NEW_BAD: list[tuple[str, Any, str]] = [
    ("writable not bool", with_point(writable=1), "writable must be true or false, not 1 (int)"),
    ("writable input", with_point(table="input", writable=True),
     'point "p": a input point cannot be writable (only holding and coil)'),
    ("writable discrete", with_point(table="discrete", type="bool", writable=True), "cannot be writable"),
    ("bounds without writable", with_point(min=1), "min and max bound writes: set writable = true"),
    ("bounds on bool", with_point(type="bool", bit=0, writable=True, max=1), "min and max are only for numbers"),
    ("min above max", with_point(writable=True, min=5, max=4), "min 5.0 is above max 4.0"),
    ("bound nan", with_point(writable=True, min=float("nan")), "min must be finite"),
    ("point interval", with_point(poll_interval_s=0.01), 'point "p": poll_interval_s 0.01 is out of range'),
    ("max registers", device(max_registers=126), "max_registers 126 is out of range 1..125"),
    ("point over max registers", device(max_registers=1),
     'point "supply_temp": 2 registers do not fit one read of max_registers 1'),
    ("write multiple", device(write_multiple="yes"), "write_multiple must be true or false"),
    ("urgent device", device(urgent="yes"), 'device "ahu1": urgent must be true or false, not \'yes\' (str)'),
    ("urgent point", with_point(urgent=1), 'device "ahu1" point "p": urgent must be true or false, not 1 (int)'),
]


@pytest.mark.parametrize(("raw", "message"), [(r, m) for _, r, m in NEW_BAD], ids=[c for c, _, _ in NEW_BAD])
def test_invalid_new_keys_name_their_place(raw: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_modbus_tcp_device(raw)
    assert message in str(info.value)


# -- serial lines ---------------------------------------------------------------------------

RTU_EXAMPLE = """
[[modbus_rtu]]
name = "rs485-1"            # bus name
port = "/dev/ttyUSB0"
baudrate = 9600
parity = "N"                 # N | E | O
stopbits = 1
bytesize = 8
timeout_s = 0.5
[[modbus_rtu.devices]]
name = "meter2"
unit_id = 7
poll_interval_s = 5.0
[[modbus_rtu.devices.points]]
name = "energy"
table = "holding"
address = 0
type = "uint32"
unit = "kWh"
"""


def rtu_line(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "rs485-1", "port": "/dev/ttyUSB0",
        "devices": [rtu_device()],
    }
    raw.update(overrides)
    return raw


def rtu_device(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "meter2", "unit_id": 7, "poll_interval_s": 5.0,
        "points": [{"name": "energy", "table": "holding", "address": 0, "type": "uint32"}],
    }
    raw.update(overrides)
    return raw


def test_the_documented_rtu_example_parses() -> None:
    line = parse_modbus_rtu_line(tomllib.loads(RTU_EXAMPLE)["modbus_rtu"][0])
    assert line == ModbusRtuLine(
        name="rs485-1", port="/dev/ttyUSB0", baudrate=9600, parity="N", stopbits=1, bytesize=8,
        timeout_s=0.5,
        devices=(ModbusRtuDevice(name="meter2", unit_id=7, poll_interval_s=5.0, points=(
            ModbusPoint(name="energy", table="holding", address=0, type="uint32", unit="kWh"),
        )),),
    )
    assert line.settings == "9600 8N1" and line.retries == 1
    assert (line.devices[0].timeout_s, line.devices[0].retries) == (None, None)


def test_every_rtu_key_parses() -> None:
    line = parse_modbus_rtu_line(rtu_line(
        baudrate=19200, parity="E", stopbits=2, bytesize=8, timeout_s=1, retries=0,
        devices=[rtu_device(timeout_s=0.2, retries=3, max_gap=0, max_registers=16,
                            byte_order="little", word_order="little", write_multiple=True),
                 rtu_device(name="meter3", unit_id=247)],
    ))
    first, second = line.devices
    assert (line.baudrate, line.parity, line.stopbits, line.bytesize, line.timeout_s) == (19200, "E", 2, 8, 1.0)
    assert (first.timeout_s, first.retries, first.max_gap, first.max_registers) == (0.2, 3, 0, 16)
    assert (first.byte_order, first.word_order, first.write_multiple) == ("little", "little", True)
    assert second.unit_id == 247 and line.settings == "19200 8E2"


def test_the_rtu_simulators_configuration_parses_to_its_line() -> None:
    raw = tomllib.loads(building_rtu_points_toml("/dev/pts/7"))
    (line_raw,) = raw["modbus_rtu"]
    assert parse_modbus_rtu_line(line_raw) == building_rtu_line("/dev/pts/7")


RTU_BAD: list[tuple[str, Any, str]] = [
    ("not a table", 3, "line: must be a table"),
    ("unknown key", rtu_line(baud=9600), 'line "rs485-1": unknown key(s) \'baud\''),
    ("missing port", {k: v for k, v in rtu_line().items() if k != "port"}, 'line "rs485-1": missing key "port"'),
    ("port relative", rtu_line(port="ttyUSB0"), "port 'ttyUSB0' must be a device path like /dev/ttyUSB0"),
    ("port escape", rtu_line(port="/dev/../etc/passwd"), "must be a device path"),
    ("baudrate", rtu_line(baudrate=9601), "baudrate 9601 is not one of"),
    ("parity", rtu_line(parity="e"), "parity must be one of N | E | O, not 'e'"),
    ("stopbits", rtu_line(stopbits=3), "stopbits 3 must be 1 or 2"),
    ("bytesize", rtu_line(bytesize=7), "Modbus RTU frames need 8 data bits"),
    ("line timeout", rtu_line(timeout_s=0), "timeout_s 0.0 is out of range 0.05..60"),
    ("no devices", rtu_line(devices=[]), 'line "rs485-1": has no devices'),
    ("devices type", rtu_line(devices={}), "devices must be a list of tables"),
    ("device not a table", rtu_line(devices=["x"]), 'line "rs485-1" device #1: must be a table'),
    ("device unknown key", rtu_line(devices=[rtu_device(host="x")]),
     'line "rs485-1" device "meter2": unknown key(s) \'host\''),
    ("device no unit", rtu_line(devices=[{k: v for k, v in rtu_device().items() if k != "unit_id"}]),
     'device "meter2": missing key "unit_id"'),
    ("unit 0", rtu_line(devices=[rtu_device(unit_id=0)]), 'device "meter2": unit_id 0 is out of range 1..247'),
    ("unit twice", rtu_line(devices=[rtu_device(), rtu_device(name="meter3")]),
     'device "meter3": unit_id 7 is already device "meter2"'),
    ("name twice", rtu_line(devices=[rtu_device(), rtu_device(unit_id=8)]),
     'device "meter2": name is used twice on the line'),
    ("device timeout", rtu_line(devices=[rtu_device(timeout_s=100)]), "timeout_s 100.0 is out of range"),
    ("device point", rtu_line(devices=[rtu_device(points=[{"name": "x", "table": "holding", "address": -1,
                                                            "type": "uint16"}])]),
     'line "rs485-1" device "meter2" point "x": address -1 is out of range 0..65535'),
    ("bad line name", rtu_line(name="RS485"), "line name 'RS485' must match"),
]


@pytest.mark.parametrize(("raw", "message"), [(r, m) for _, r, m in RTU_BAD], ids=[c for c, _, _ in RTU_BAD])
def test_invalid_lines_name_their_place(raw: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_modbus_rtu_line(raw)
    assert message in str(info.value)


def test_lines_built_in_code_are_checked_too() -> None:
    line = building_rtu_line("/dev/pts/1")
    check_rtu_line(line)
    with pytest.raises(ConfigError, match="baudrate 1000 is not one of"):
        check_rtu_line(ModbusRtuLine(name="l", port="/dev/x", devices=line.devices, baudrate=1000))
