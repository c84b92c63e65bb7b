"""parse_bacnet_network: a valid network, and a precise ConfigError for each invalid input."""

from __future__ import annotations

import copy
import re
import tomllib
from typing import Any

import pytest

from drivers.bacnet import BacnetNetwork, ObjectRef, parse_bacnet_network
from drivers.errors import ConfigError

VALID = """
[[bacnet]]
name = "bacnet-1"
interface = "fb0"
port = 47808
device_instance = 4194300
apdu_timeout_s = 3.0

[[bacnet.devices]]
name = "ahu2"
device_instance = 1001
address = "192.0.2.10"
poll_interval_s = 10.0
cov = "auto"
cov_lifetime_s = 300

[[bacnet.devices.points]]
name = "supply_temp"
object = "analog-input,1"
property = "present-value"
unit = "degC"
writable = false

[[bacnet.devices.points]]
name = "setpoint"
object = "analog-value,1"
writable = true
priority = 8
min = 10.0
max = 30

[[bacnet.devices]]
name = "room3"
device_instance = 1002

[[bacnet.devices.points]]
name = "occupied"
object = "binary-input,4"
"""


def raw() -> dict[str, Any]:
    return copy.deepcopy(tomllib.loads(VALID)["bacnet"][0])


def test_valid_network_with_defaults() -> None:
    net = parse_bacnet_network(raw())
    assert isinstance(net, BacnetNetwork)
    assert (net.name, net.interface, net.port, net.device_instance) == ("bacnet-1", "fb0", 47808, 4194300)
    assert (net.apdu_timeout_s, net.apdu_retries, net.request_time_s) == (3.0, 1, 6.0)
    ahu, room = net.devices
    assert (ahu.address, ahu.poll_interval_s, ahu.cov, ahu.cov_lifetime_s, ahu.cov_confirmed) == (
        "192.0.2.10", 10.0, "auto", 300, True)
    temp, sp = ahu.points
    assert temp.object == ObjectRef("analog-input", 1) and str(temp.object) == "analog-input,1"
    assert (temp.property, temp.unit, temp.writable, temp.kind) == ("present-value", "degC", False, "float32")
    assert (sp.writable, sp.priority, sp.min, sp.max) == (True, 8, 10.0, 30.0)
    assert room.address is None and room.poll_interval_s == 10.0
    assert room.points[0].unit is None and room.points[0].kind == "bool"


NET = 'bacnet "bacnet-1"'
AHU = f'{NET} device "ahu2"'
TEMP = f'{AHU} point "supply_temp"'
SP = f'{AHU} point "setpoint"'


def set_key(r: dict[str, Any], path: str, value: Any) -> None:
    """path like "devices.0.points.1.min"; value ... deletes."""
    *parents, last = path.split(".")
    node: Any = r
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    key: Any = int(last) if last.isdigit() else last
    if value is ...:
        del node[key]
    else:
        node[key] = value


CASES = [
    ("name", "Bacnet 1", "bacnet name 'Bacnet 1' must match"),
    ("name", ..., 'bacnet: missing key "name"'),
    ("interface", "eth0 ; rm", f"{NET}: interface 'eth0 ; rm' is not a network interface name"),
    ("interface", 7, f"{NET}: interface must be a string, not 7 (int)"),
    ("port", 0, f"{NET}: port 0 is out of range 1..65535"),
    ("port", "47808", f"{NET}: port must be an integer, not '47808' (str)"),
    ("device_instance", 4194303, f"{NET}: device_instance 4194303 is out of range 0..4194302"),
    ("device_instance", ..., f'{NET}: missing key "device_instance"'),
    ("apdu_timeout_s", 0.01, f"{NET}: apdu_timeout_s 0.01 is out of range 0.1..60"),
    ("apdu_timeout_s", float("nan"), f"{NET}: apdu_timeout_s must be finite, not nan"),
    ("apdu_retries", 9, f"{NET}: apdu_retries 9 is out of range 0..5"),
    ("bbmd", "x", f"{NET}: unknown key(s) 'bbmd'"),
    ("devices", [], f"{NET}: has no devices"),
    ("devices", {"name": "x"}, f"{NET}: devices must be a list of tables"),
    ("devices.0.name", "AHU", f"{NET}: device name 'AHU' must match"),
    ("devices.0.device_instance", -1, f"{AHU}: device_instance -1 is out of range 0..4194302"),
    ("devices.0.device_instance", 4194300, f"{AHU}: device_instance 4194300 is the Box's own"),
    ("devices.1.device_instance", 1001, f'{NET} device "room3": device_instance 1001 is device "ahu2"\'s too'),
    ("devices.1.name", "ahu2", f'{AHU}: name is used twice'),
    ("devices.0.address", "ahu2.local",
     f'{AHU}: address \'ahu2.local\' is not an IPv4 address with an optional ":port"'),
    ("devices.0.address", "192.0.2.10:0", f"{AHU}: address '192.0.2.10:0' is not an IPv4 address"),
    ("devices.0.address", "224.0.0.1", f"{AHU}: address 224.0.0.1 is not a device's unicast address"),
    ("devices.0.address", "0.0.0.0", f"{AHU}: address 0.0.0.0 is not a device's unicast address"),
    ("devices.0.poll_interval_s", 0.1, f"{AHU}: poll_interval_s 0.1 is out of range 0.5..86400"),
    ("devices.0.cov", "on", f"{AHU}: cov must be one of auto | off, not 'on'"),
    ("devices.0.cov_lifetime_s", 300.0, f"{AHU}: cov_lifetime_s must be an integer, not 300.0 (float)"),
    ("devices.0.cov_lifetime_s", 10, f"{AHU}: cov_lifetime_s 10 is too short: a renewal may take 6 s"),
    ("devices.0.cov_confirmed", "yes", f"{AHU}: cov_confirmed must be true or false, not 'yes' (str)"),
    ("devices.0.points", [], f"{AHU}: has no points"),
    ("devices.0.points.0.name", "Supply Temp", f"{AHU}: point name 'Supply Temp' must match"),
    ("devices.0.points.1.name", "supply_temp", f'{TEMP}: name is used twice'),
    ("devices.0.points.0.object", "analog-inptu,1",
     f'{TEMP}: object \'analog-inptu,1\' is not "<standard object type>,<instance 0..4194302>"'),
    ("devices.0.points.0.object", "analog-input,4194303", f"{TEMP}: object 'analog-input,4194303' is not"),
    ("devices.0.points.0.object", "analog-input:1", f"{TEMP}: object 'analog-input:1' is not"),
    ("devices.0.points.0.object", ..., f'{TEMP}: missing key "object"'),
    ("devices.0.points.0.property", "present-valu", f"{TEMP}: property 'present-valu' is not a standard BACnet"),
    ("devices.0.points.0.property", "priority-array",
     f"{TEMP}: property priority-array of analog-input is not a single value"),
    ("devices.0.points.0.property", "number-of-states",
     f"{TEMP}: property number-of-states of analog-input is not a single value"),
    ("devices.0.points.0.unit", "x" * 33, f"{TEMP}: unit 'xxxxx"),
    ("devices.0.points.0.writable", 1, f"{TEMP}: writable must be true or false, not 1 (int)"),
    ("devices.0.points.0.priority", 8, f"{TEMP}: priority only for a writable point"),
    ("devices.0.points.0.min", 1.0, f"{TEMP}: min only for a writable point"),
    ("devices.0.points.0.colour", "red", f"{TEMP}: unknown key(s) 'colour'"),
    ("devices.0.points.1.priority", 6, f"{SP}: priority 6 is reserved for minimum on/off"),
    ("devices.0.points.1.priority", 17, f"{SP}: priority 17 is out of range 1..16"),
    ("devices.0.points.1.min", 40.0, f"{SP}: min 40.0 is greater than max 30.0"),
    ("devices.0.points.1.max", True, f"{SP}: max must be a number, not True (bool)"),
    ("devices.0.points.1.object", "analog-input,1",
     f"{SP}: analog-input,1 present-value is point \"supply_temp\" already"),
    ("devices.0.points.1.object", "characterstring-value,1", f"{SP}: min and max are for numbers, not string"),
    ("devices.0.points.0", "supply_temp", f"{AHU} point #1: must be a table, not 'supply_temp' (str)"),
    ("devices.0.urgent", "on", f"{AHU}: urgent must be true or false, not 'on' (str)"),
    ("devices.0.points.0.urgent", 0, f"{TEMP}: urgent must be true or false, not 0 (int)"),
]


@pytest.mark.parametrize(("path", "value", "message"), CASES, ids=[f"{c[0]}={c[1]!r}"[:60] for c in CASES])
def test_invalid_input_gives_a_precise_error(path: str, value: Any, message: str) -> None:
    r = raw()
    set_key(r, path, value)
    with pytest.raises(ConfigError) as caught:
        parse_bacnet_network(r)
    assert str(caught.value).startswith(message), str(caught.value)


def test_duplicate_addresses_are_refused() -> None:
    r = raw()
    r["devices"][1]["address"] = "192.0.2.10:47808"
    with pytest.raises(ConfigError, match=re.escape('address 192.0.2.10:47808 is device "ahu2"\'s too')):
        parse_bacnet_network(r)


def test_not_a_table() -> None:
    with pytest.raises(ConfigError, match=r"bacnet: must be a table, not \[\] \(list\)"):
        parse_bacnet_network([])  # type: ignore[arg-type]
