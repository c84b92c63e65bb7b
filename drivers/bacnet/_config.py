"""BACnet/IP network configuration: typed values and strict validation (pure).

Does: turn one untrusted mapping (a ``[[bacnet]]`` table of the Box's TOML file, as
`tomllib` parses it) into a frozen `BacnetNetwork`, or raise `ConfigError` naming the
network, the device, the point and the field. Does not: read files, look up the
interface (that happens when the source runs) or talk to devices.

Raw format; unknown keys are errors, integers must be TOML integers, floats may be
either::

    [[bacnet]]
    name = "bacnet-1"            # required, ^[a-z0-9][a-z0-9_-]{0,31}$
    interface = "fieldbus0"            # required: the field-bus interface; the socket binds to its
                                 # IPv4 address only
    port = 47808                 # UDP port, 1..65535
    device_instance = 4194300    # required: the Box's own device instance, 0..4194302
    apdu_timeout_s = 3.0         # wait for each try of a confirmed request, 0.1..60
    apdu_retries = 1             # tries after the first, 0..5

    [[bacnet.devices]]           # 1..1000 per network
    name = "ahu2"                # required, same rule as the network's name, unique
    device_instance = 1001       # required, 0..4194302, unique, not the Box's
    address = "192.0.2.10"       # IPv4 address, optionally ":port"; found by Who-Is when absent
    poll_interval_s = 10.0       # 0.5..86400
    cov = "auto"                 # auto: subscribe where the device supports it, else poll | off
    cov_lifetime_s = 300         # subscription lifetime, 2..86400, >= 2 x the longest request
    cov_confirmed = true         # confirmed (acknowledged) or unconfirmed notifications
    urgent = false               # true: every point's readings leave at once, not after the
                                 # [uplink] batch_delay_ms (alarms, states that matter)

    [[bacnet.devices.points]]    # 1..10000 per device
    name = "supply_temp"         # required, same rule as device names, unique in the device
    object = "analog-input,1"    # required: standard object type, instance 0..4194302
    property = "present-value"   # a standard property holding one value (not a list)
    unit = "degC"                # up to 32 printable characters; absent: the object's units
    writable = false
    priority = 8                 # writable points only: default write priority, 1..16 but not 6
    min = 10.0                   # writable numeric points only: write bounds
    max = 30.0
    urgent = true                # overrides the device's urgent
"""

from __future__ import annotations

import builtins
import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, cast

from drivers._fields import (
    as_bool,
    as_float,
    as_int,
    as_str,
    check_name,
    check_range,
    choice,
    kind_of,
    label,
    opt,
    reject_unknown,
    req,
    table_list,
)
from drivers._report import Report, parse_report
from drivers.bacnet._names import NUMERIC_KINDS, object_type_number, property_number, value_kind
from drivers.errors import ConfigError, show

CovMode = Literal["auto", "off"]
IFNAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")  # Linux IFNAMSIZ - 1
MAX_INSTANCE: Final = 4194302  # 4194303 is the wildcard
MAX_DEVICES: Final = 1000
MAX_POINTS: Final = 10000
RESERVED_PRIORITY: Final = 6  # minimum on/off (clause 19.2.3): not for clients
_NETWORK_KEYS: Final = frozenset({
    "name", "interface", "port", "device_instance", "apdu_timeout_s", "apdu_retries", "devices",
})
_DEVICE_KEYS: Final = frozenset({
    "name", "device_instance", "address", "poll_interval_s", "cov", "cov_lifetime_s",
    "cov_confirmed", "points", "urgent", "report",
})
_POINT_KEYS: Final = frozenset({
    "name", "object", "property", "unit", "writable", "priority", "min", "max", "urgent", "report",
})
_OBJECT_RE: Final = re.compile(r"([a-z][a-z-]*),([0-9]{1,7})")


@dataclass(frozen=True, slots=True, order=True)
class ObjectRef:
    """A BACnet object of a device: a standard type name and an instance number."""

    type: str
    instance: int

    def __str__(self) -> str:
        return f"{self.type},{self.instance}"


@dataclass(frozen=True, slots=True, kw_only=True)
class BacnetPoint:
    """One property of one object of a device."""

    name: str
    object: ObjectRef
    property: str = "present-value"
    unit: str | None = None  # None: taken from the object's units
    writable: bool = False
    priority: int = 8
    min: float | None = None
    max: float | None = None
    urgent: bool | None = None  # None: the device's (an urgent reading leaves at once, not after the batch delay)
    report: Report | None = None  # report on change: this point's own (drivers._report)

    @builtins.property  # the field "property" hides the builtin here
    def kind(self) -> str:
        """The Box kind of the point's value, e.g. "float32" (see `_names`)."""
        return value_kind(self.object.type, self.property) or "string"


@dataclass(frozen=True, slots=True, kw_only=True)
class BacnetDevice:
    """One BACnet device on the network and its points."""

    name: str
    device_instance: int
    points: tuple[BacnetPoint, ...]
    address: str | None = None  # "a.b.c.d" or "a.b.c.d:port"; None: found by Who-Is
    poll_interval_s: float = 10.0
    cov: CovMode = "auto"
    cov_lifetime_s: int = 300
    cov_confirmed: bool = True
    urgent: bool = False  # its points' readings leave at once, unless a point says otherwise
    report: Report | None = None  # report on change: the device's (drivers._report)

    def is_urgent(self, point: BacnetPoint) -> bool:
        """Whether `point`'s readings are urgent: its own say, else this device's."""
        return self.urgent if point.urgent is None else point.urgent


@dataclass(frozen=True, slots=True, kw_only=True)
class BacnetNetwork:
    """One BACnet/IP network on one field-bus interface: the Box's side and the devices."""

    name: str
    interface: str
    device_instance: int
    devices: tuple[BacnetDevice, ...]
    port: int = 47808
    apdu_timeout_s: float = 3.0
    apdu_retries: int = 1

    @property
    def request_time_s(self) -> float:
        """The longest a confirmed request can take before it counts as unanswered."""
        return self.apdu_timeout_s * (self.apdu_retries + 1)


def _as_cov(value: object, what: str) -> str:
    return choice(value, what, ("auto", "off"))


def parse_object(text: str) -> ObjectRef | None:
    """ "analog-input,1" -> ObjectRef("analog-input", 1); None if malformed or not standard."""
    match = _OBJECT_RE.fullmatch(text)
    if not match or object_type_number(match[1]) is None or int(match[2]) > MAX_INSTANCE:
        return None
    return ObjectRef(match[1], int(match[2]))


def split_address(address: str) -> tuple[str, int | None]:
    """ "192.0.2.10:47809" -> ("192.0.2.10", 47809); the port is None when absent.

    Raises:
        ValueError: not an IPv4 address with an optional port.
    """
    host, sep, port = address.partition(":")
    ip = ipaddress.IPv4Address(host)  # raises ValueError
    if sep and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(port)
    return str(ip), int(port) if sep else None


# -- parsing ------------------------------------------------------------------------------


def parse_bacnet_network(raw: Mapping[str, object]) -> BacnetNetwork:
    """Validate one raw ``[[bacnet]]`` table into a `BacnetNetwork`.

    Raises:
        ConfigError: the first problem found, e.g. ``bacnet "bacnet-1" device "ahu2"
            point "supply_temp": object "analog-inptu,1" is not "<standard object
            type>,<instance 0..4194302>"``.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"bacnet: must be a table, not {kind_of(raw)}")
    where = label("bacnet", raw.get("name"))
    reject_unknown(raw, _NETWORK_KEYS, where)
    devices_raw = table_list(raw, "devices", where, MAX_DEVICES)
    network = BacnetNetwork(
        name=req(raw, "name", where, as_str),
        interface=req(raw, "interface", where, as_str),
        device_instance=req(raw, "device_instance", where, as_int),
        devices=tuple(_parse_device(d, i, where) for i, d in enumerate(devices_raw, 1)),
        port=opt(raw, "port", where, as_int, 47808),
        apdu_timeout_s=opt(raw, "apdu_timeout_s", where, as_float, 3.0),
        apdu_retries=opt(raw, "apdu_retries", where, as_int, 1),
    )
    check_network(network)
    return network


def _parse_device(raw: object, index: int, network_where: str) -> BacnetDevice:
    name = raw.get("name") if isinstance(raw, Mapping) else None
    where = f"{network_where} {label('device', name, index)}"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a table, not {kind_of(raw)}")
    reject_unknown(raw, _DEVICE_KEYS, where)
    points_raw = table_list(raw, "points", where, MAX_POINTS)
    return BacnetDevice(
        name=req(raw, "name", where, as_str),
        device_instance=req(raw, "device_instance", where, as_int),
        points=tuple(_parse_point(p, i, where) for i, p in enumerate(points_raw, 1)),
        address=opt(raw, "address", where, as_str, None),
        poll_interval_s=opt(raw, "poll_interval_s", where, as_float, 10.0),
        cov=cast(CovMode, opt(raw, "cov", where, _as_cov, "auto")),
        cov_lifetime_s=opt(raw, "cov_lifetime_s", where, as_int, 300),
        cov_confirmed=opt(raw, "cov_confirmed", where, as_bool, True),
        urgent=opt(raw, "urgent", where, as_bool, False),
        report=opt(raw, "report", where, parse_report, None),
    )


def _parse_point(raw: object, index: int, device_where: str) -> BacnetPoint:
    name = raw.get("name") if isinstance(raw, Mapping) else None
    where = f"{device_where} {label('point', name, index)}"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a table, not {kind_of(raw)}")
    reject_unknown(raw, _POINT_KEYS, where)
    writable = opt(raw, "writable", where, as_bool, False)
    if not writable:
        given = [k for k in ("priority", "min", "max") if k in raw]
        if given:
            raise ConfigError(f"{where}: {', '.join(given)} only for a writable point (writable = true)")
    obj_text = req(raw, "object", where, as_str)
    obj = parse_object(obj_text)
    if obj is None:
        raise ConfigError(
            f'{where}: object {show(obj_text)} is not "<standard object type>,<instance 0..'
            f'{MAX_INSTANCE}>", e.g. "analog-input,1"'
        )
    return BacnetPoint(
        name=req(raw, "name", where, as_str),
        object=obj,
        property=opt(raw, "property", where, as_str, "present-value"),
        unit=opt(raw, "unit", where, as_str, None),
        writable=writable,
        priority=opt(raw, "priority", where, as_int, 8),
        min=opt(raw, "min", where, as_float, None),
        max=opt(raw, "max", where, as_float, None),
        urgent=opt(raw, "urgent", where, as_bool, None),
        report=opt(raw, "report", where, parse_report, None),
    )


# -- checking (also for networks built in code) -------------------------------------------


def check_network(network: BacnetNetwork) -> None:
    """Check the rules of the module docstring on a network built in code or parsed.

    Raises:
        ConfigError: the first rule broken, naming the network, the device, the point
            and the field.
    """
    n = network
    check_name(n.name, "bacnet")
    where = f'bacnet "{n.name}"'
    if not IFNAME_RE.fullmatch(n.interface):
        raise ConfigError(f"{where}: interface {show(n.interface)} is not a network interface name")
    check_range(where, "port", n.port, 1, 65535)
    check_range(where, "device_instance", n.device_instance, 0, MAX_INSTANCE)
    check_range(where, "apdu_timeout_s", n.apdu_timeout_s, 0.1, 60)
    check_range(where, "apdu_retries", n.apdu_retries, 0, 5)
    if not n.devices:
        raise ConfigError(f"{where}: has no devices")
    names: dict[str, str] = {}
    instances: dict[int, str] = {}
    addresses: dict[tuple[str, int], str] = {}
    for d in n.devices:
        _check_device(network, where, d)
        dwhere = f'{where} device "{d.name}"'
        if d.name in names:
            raise ConfigError(f"{dwhere}: name is used twice")
        names[d.name] = d.name
        if d.device_instance == n.device_instance:
            raise ConfigError(f"{dwhere}: device_instance {d.device_instance} is the Box's own")
        if d.device_instance in instances:
            other = instances[d.device_instance]
            raise ConfigError(f'{dwhere}: device_instance {d.device_instance} is device "{other}"\'s too')
        instances[d.device_instance] = d.name
        if d.address is not None:
            host, port = split_address(d.address)
            key = (host, port or n.port)
            if key in addresses:
                raise ConfigError(f'{dwhere}: address {d.address} is device "{addresses[key]}"\'s too')
            addresses[key] = d.name


def _check_device(network: BacnetNetwork, network_where: str, d: BacnetDevice) -> None:
    check_name(d.name, f"{network_where}: device")
    where = f'{network_where} device "{d.name}"'
    check_range(where, "device_instance", d.device_instance, 0, MAX_INSTANCE)
    if d.address is not None:
        _check_address(where, d.address)
    check_range(where, "poll_interval_s", d.poll_interval_s, 0.5, 86400)
    if d.cov not in ("auto", "off"):
        raise ConfigError(f"{where}: cov must be one of auto | off, not {show(d.cov)}")
    check_range(where, "cov_lifetime_s", d.cov_lifetime_s, 2, 86400)
    if d.cov == "auto" and d.cov_lifetime_s < 2 * network.request_time_s:
        raise ConfigError(
            f"{where}: cov_lifetime_s {d.cov_lifetime_s} is too short: a renewal may take "
            f"{network.request_time_s:g} s (apdu_timeout_s x (apdu_retries + 1)), so the "
            f"lifetime must be at least {math.ceil(2 * network.request_time_s)} s"
        )
    if not d.points:
        raise ConfigError(f"{where}: has no points")
    if len(d.points) > MAX_POINTS:
        raise ConfigError(f"{where}: {len(d.points)} points, more than {MAX_POINTS}")
    seen: dict[str, str] = {}
    refs: dict[tuple[ObjectRef, str], str] = {}
    for p in d.points:
        _check_point(where, p)
        if p.name in seen:
            raise ConfigError(f'{where} point "{p.name}": name is used twice')
        seen[p.name] = p.name
        key = (p.object, p.property)
        if key in refs:
            raise ConfigError(
                f'{where} point "{p.name}": {p.object} {p.property} is point "{refs[key]}" already'
            )
        refs[key] = p.name


def _check_address(where: str, address: str) -> None:
    try:
        host, _ = split_address(address)
    except ValueError:
        raise ConfigError(
            f'{where}: address {show(address)} is not an IPv4 address with an optional ":port"'
        ) from None
    ip = ipaddress.IPv4Address(host)
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback or host == "255.255.255.255":
        raise ConfigError(f"{where}: address {address} is not a device's unicast address")


def _check_point(device_where: str, p: BacnetPoint) -> None:
    check_name(p.name, f"{device_where}: point")
    where = f'{device_where} point "{p.name}"'
    if object_type_number(p.object.type) is None:
        raise ConfigError(f"{where}: object type {show(p.object.type)} is not a standard BACnet object type")
    check_range(where, "object instance", p.object.instance, 0, MAX_INSTANCE)
    if property_number(p.property) is None:
        raise ConfigError(f"{where}: property {show(p.property)} is not a standard BACnet property")
    kind = value_kind(p.object.type, p.property)
    if kind is None:
        raise ConfigError(
            f"{where}: property {p.property} of {p.object.type} is not a single value "
            "(the object type has no such property, or it is a list, array or record)"
        )
    if p.unit is not None and (len(p.unit) > 32 or not p.unit.isprintable()):
        raise ConfigError(f"{where}: unit {show(p.unit)} must be at most 32 printable characters")
    check_range(where, "priority", p.priority, 1, 16)
    if p.priority == RESERVED_PRIORITY:
        raise ConfigError(f"{where}: priority 6 is reserved for minimum on/off; use 1..5 or 7..16")
    if (p.min is not None or p.max is not None) and kind not in NUMERIC_KINDS:
        raise ConfigError(f"{where}: min and max are for numbers, not {kind} ({p.object.type} {p.property})")
    if p.min is not None and p.max is not None and p.min > p.max:
        raise ConfigError(f"{where}: min {p.min!r} is greater than max {p.max!r}")
    if not p.writable and (p.min is not None or p.max is not None):
        raise ConfigError(f"{where}: min and max are write bounds, only for a writable point")


