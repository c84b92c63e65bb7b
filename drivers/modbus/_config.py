"""Modbus TCP device and point configuration: typed values and strict validation (pure).

Does: turn one untrusted mapping (a ``[[modbus_tcp]]`` table of the Box's TOML file,
as `tomllib` parses it) into frozen `ModbusTcpDevice` / `ModbusPoint` values, or raise
`ConfigError` naming the device, the point and the field. Does not: read files, plan
reads (`_plan`), decode values (`_codec`) or talk to devices (`_tcp`).

Raw format; unknown keys are errors, integers must be TOML integers, floats may be
either (`poll_interval_s = 1` is fine)::

    [[modbus_tcp]]
    name = "ahu1"              # required, ^[a-z0-9][a-z0-9_-]{0,31}$
    host = "127.0.0.1"         # required, IP address or DNS name
    port = 502                 # 1..65535
    unit_id = 1                # 0..247
    poll_interval_s = 1.0      # required, 0.1..86400
    timeout_s = 1.0            # per try, 0.05..60
    retries = 1                # tries after the first, 0..10
    max_gap = 8                # unused registers (bits) read through to merge reads, 0..125
    byte_order = "big"         # big | little: bytes within each register
    word_order = "big"         # big | little: registers of a multi-register value

    [[modbus_tcp.points]]      # 1..10000 per device
    name = "supply_temp"       # required, same rule as device names, unique in the device
    table = "holding"          # required: holding | input | coil | discrete
    address = 0                # required, 0-based as on the wire; address+size-1 <= 65535
    type = "float32"           # required for registers; coil/discrete are "bool"
                               # bool int16 uint16 int32 uint32 int64 uint64 float32 float64 string
    unit = "degC"              # "", up to 32 printable characters
    scale = 1.0                # numbers read as raw * scale + offset; scale not 0
    offset = 0.0
    byte_order = "big"         # overrides the device's
    word_order = "big"         # overrides the device's
    bit = 3                    # bool in a holding/input register: required, 0..15
    length = 8                 # string: required, size in registers, 1..125

Points may overlap only when they cover the same registers and have the same type,
or are bits of a 16-bit register read as int16/uint16 too (a status word and its
flags); any other overlap is a configuration error.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, TypeVar, cast

from drivers.errors import ConfigError
from drivers.modbus._codec import ORDERS, TYPES, DataType, Order, PointCodec, register_count

Table = Literal["holding", "input", "coil", "discrete"]
TABLES: Final[tuple[Table, ...]] = ("holding", "input", "coil", "discrete")
BIT_TABLES: Final = frozenset({"coil", "discrete"})
MAX_POINTS: Final = 10000
NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_HOST_RE: Final = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
_DEVICE_KEYS: Final = frozenset({
    "name", "host", "port", "unit_id", "poll_interval_s", "timeout_s", "retries", "max_gap",
    "byte_order", "word_order", "points",
})
_POINT_KEYS: Final = frozenset({
    "name", "table", "address", "type", "unit", "scale", "offset", "byte_order", "word_order",
    "bit", "length",
})
_BIT_AND_WORD: Final = frozenset({"int16", "uint16"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ModbusPoint:
    """One point of a device: where it lives and how its registers make a value."""

    name: str
    address: int
    table: Table = "holding"
    type: DataType = "uint16"
    unit: str = ""
    scale: float = 1.0
    offset: float = 0.0
    byte_order: Order | None = None  # None: the device's
    word_order: Order | None = None  # None: the device's
    bit: int | None = None  # bool in a holding/input register: which bit, 0..15
    length: int | None = None  # string: its size in registers

    @property
    def size(self) -> int:
        """Registers (or bits, for coils and discrete inputs) the point occupies."""
        if self.table in BIT_TABLES:
            return 1
        return register_count(self.type, self.length)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModbusTcpDevice:
    """One Modbus TCP device (one unit id at one host and port) and its points."""

    name: str
    host: str
    poll_interval_s: float
    points: tuple[ModbusPoint, ...]
    port: int = 502
    unit_id: int = 1
    timeout_s: float = 1.0
    retries: int = 1
    max_gap: int = 8
    byte_order: Order = "big"
    word_order: Order = "big"


def codec_for(device: ModbusTcpDevice, point: ModbusPoint) -> PointCodec:
    """The codec of a point, with the device's byte and word order where it has none."""
    return PointCodec(
        point.type,
        byte_order=point.byte_order or device.byte_order,
        word_order=point.word_order or device.word_order,
        bit=point.bit,
        length=point.length,
        scale=point.scale,
        offset=point.offset,
    )


# -- parsing ------------------------------------------------------------------------------


def parse_modbus_tcp_device(raw: Mapping[str, object]) -> ModbusTcpDevice:
    """Validate one raw device table into a `ModbusTcpDevice`.

    Raises:
        ConfigError: the first problem found, e.g. ``device "ahu1" point "supply_temp":
            address 70000 is out of range 0..65535``.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"device: must be a table, not {_kind(raw)}")
    name = raw.get("name")
    where = f'device "{name}"' if isinstance(name, str) and NAME_RE.match(name) else "device"
    _reject_unknown(raw, _DEVICE_KEYS, where)
    name = _req(raw, "name", where, _str)
    points_raw = raw.get("points")
    if not isinstance(points_raw, list):
        raise ConfigError(f"{where}: points must be a list of tables, not {_kind(points_raw)}")
    if len(points_raw) > MAX_POINTS:
        raise ConfigError(f"{where}: {len(points_raw)} points, more than {MAX_POINTS}")
    device = ModbusTcpDevice(
        name=name,
        host=_req(raw, "host", where, _str),
        poll_interval_s=_req(raw, "poll_interval_s", where, _float),
        points=tuple(_parse_point(p, i, where) for i, p in enumerate(points_raw, 1)),
        port=_opt(raw, "port", where, _int, 502),
        unit_id=_opt(raw, "unit_id", where, _int, 1),
        timeout_s=_opt(raw, "timeout_s", where, _float, 1.0),
        retries=_opt(raw, "retries", where, _int, 1),
        max_gap=_opt(raw, "max_gap", where, _int, 8),
        byte_order=_opt(raw, "byte_order", where, _order, "big"),
        word_order=_opt(raw, "word_order", where, _order, "big"),
    )
    check_device(device)
    return device


def _parse_point(raw: object, index: int, device_where: str) -> ModbusPoint:
    name = raw.get("name") if isinstance(raw, Mapping) else None
    shown = f'"{name}"' if isinstance(name, str) and NAME_RE.match(name) else f"#{index}"
    where = f"{device_where} point {shown}"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a table, not {_kind(raw)}")
    _reject_unknown(raw, _POINT_KEYS, where)
    table = _req(raw, "table", where, _table)
    default_type: DataType | None = "bool" if table in BIT_TABLES else None
    kind = _opt(raw, "type", where, _type, default_type)
    if kind is None:
        raise ConfigError(f'{where}: missing key "type"')
    return ModbusPoint(
        name=_req(raw, "name", where, _str),
        address=_req(raw, "address", where, _int),
        table=table,
        type=kind,
        unit=_opt(raw, "unit", where, _str, ""),
        scale=_opt(raw, "scale", where, _float, 1.0),
        offset=_opt(raw, "offset", where, _float, 0.0),
        byte_order=_opt(raw, "byte_order", where, _order, None),
        word_order=_opt(raw, "word_order", where, _order, None),
        bit=_opt(raw, "bit", where, _int, None),
        length=_opt(raw, "length", where, _int, None),
    )


T = TypeVar("T")
D = TypeVar("D")


def _req(raw: Mapping[str, object], key: str, where: str, conv: Callable[[object, str], T]) -> T:
    if key not in raw:
        raise ConfigError(f'{where}: missing key "{key}"')
    return conv(raw[key], f"{where}: {key}")


def _opt(
    raw: Mapping[str, object], key: str, where: str, conv: Callable[[object, str], T], default: D
) -> T | D:
    if key not in raw:
        return default
    return conv(raw[key], f"{where}: {key}")


def _reject_unknown(raw: Mapping[str, object], known: frozenset[str], where: str) -> None:
    unknown = [k for k in raw if k not in known]
    if unknown:
        shown = ", ".join(_show(k) for k in unknown[:5])
        raise ConfigError(f"{where}: unknown key(s) {shown} (known: {', '.join(sorted(known))})")


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string, not {_kind(value)}")
    return value


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{what} must be an integer, not {_kind(value)}")
    return value


def _float(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{what} must be a number, not {_kind(value)}")
    if not math.isfinite(value):
        raise ConfigError(f"{what} must be finite, not {value!r}")
    return float(value)


def _choice(value: object, what: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{what} must be one of {' | '.join(choices)}, not {_show(value)}")
    return value


def _order(value: object, what: str) -> Order:
    return cast(Order, _choice(value, what, ORDERS))


def _table(value: object, what: str) -> Table:
    return cast(Table, _choice(value, what, TABLES))


def _type(value: object, what: str) -> DataType:
    return cast(DataType, _choice(value, what, TYPES))


def _show(value: object) -> str:
    """A short, printable rendering of an untrusted value for an error message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind(value: object) -> str:
    return f"{_show(value)} ({type(value).__name__})"


# -- checking (also for devices built in code) --------------------------------------------


def check_device(device: ModbusTcpDevice) -> None:
    """Check the rules of the module docstring on a device built in code or parsed.

    Raises:
        ConfigError: the first rule broken, naming the device, the point and the field.
    """
    where = f'device "{device.name}"'
    if not NAME_RE.match(device.name):
        raise ConfigError(f"device name {_show(device.name)} must match {NAME_RE.pattern}")
    if not _valid_host(device.host):
        raise ConfigError(f"{where}: host {_show(device.host)} is not an IP address or a DNS name")
    _check_range(where, "port", device.port, 1, 65535)
    _check_range(where, "unit_id", device.unit_id, 0, 247)
    _check_range(where, "poll_interval_s", device.poll_interval_s, 0.1, 86400)
    _check_range(where, "timeout_s", device.timeout_s, 0.05, 60)
    _check_range(where, "retries", device.retries, 0, 10)
    _check_range(where, "max_gap", device.max_gap, 0, 125)
    if device.byte_order not in ORDERS or device.word_order not in ORDERS:
        raise ConfigError(f"{where}: byte_order and word_order must be big or little")
    if not device.points:
        raise ConfigError(f"{where}: has no points")
    if len(device.points) > MAX_POINTS:
        raise ConfigError(f"{where}: {len(device.points)} points, more than {MAX_POINTS}")
    seen: set[str] = set()
    for point in device.points:
        _check_point(where, point)
        if point.name in seen:
            raise ConfigError(f'{where} point "{point.name}": name is used twice')
        seen.add(point.name)
    _check_overlaps(where, device.points)


def _check_point(device_where: str, p: ModbusPoint) -> None:
    if not NAME_RE.match(p.name):
        name = _show(p.name)
        raise ConfigError(f"{device_where}: point name {name} must match {NAME_RE.pattern}")
    where = f'{device_where} point "{p.name}"'
    if p.table not in TABLES:
        raise ConfigError(f"{where}: table {_show(p.table)} is not one of {' | '.join(TABLES)}")
    if p.type not in TYPES:
        raise ConfigError(f"{where}: type {_show(p.type)} is not one of {' | '.join(TYPES)}")
    _check_range(where, "address", p.address, 0, 65535)
    _check_shape(where, p)
    if p.type in ("bool", "string") and (p.scale != 1 or p.offset != 0):
        raise ConfigError(f"{where}: scale and offset are only for numbers, not {p.type}")
    if not (math.isfinite(p.scale) and math.isfinite(p.offset)) or p.scale == 0:
        raise ConfigError(f"{where}: scale must be finite and not 0, offset finite")
    if (p.byte_order or "big") not in ORDERS or (p.word_order or "big") not in ORDERS:
        raise ConfigError(f"{where}: byte_order and word_order must be big or little")
    if len(p.unit) > 32 or not p.unit.isprintable():
        raise ConfigError(f"{where}: unit {_show(p.unit)} must be at most 32 printable characters")
    end = p.address + p.size - 1
    if end > 65535:
        raise ConfigError(
            f"{where}: {p.type} at address {p.address} takes {p.size} registers and ends at "
            f"{end}, past 65535"
        )


def _check_shape(where: str, p: ModbusPoint) -> None:
    """Table and type agree; bit and length are where they belong."""
    bit_table = p.table in BIT_TABLES
    if bit_table and p.type != "bool":
        raise ConfigError(f'{where}: a {p.table} point has type "bool", not "{p.type}"')
    if p.type == "bool" and not bit_table:
        if p.bit is None:
            raise ConfigError(f"{where}: a bool in a {p.table} register needs bit (0..15)")
        _check_range(where, "bit", p.bit, 0, 15)
    elif p.bit is not None:
        raise ConfigError(f"{where}: bit is only for a bool in a holding or input register")
    if p.type == "string":
        if p.length is None:
            raise ConfigError(f"{where}: a string needs length (registers, 1..125)")
        _check_range(where, "length", p.length, 1, 125)
    elif p.length is not None:
        raise ConfigError(f"{where}: length is only for a string")


def _check_range(where: str, key: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise ConfigError(f"{where}: {key} {value!r} is out of range {lo}..{hi}")


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(_HOST_RE.match(host))
    return True


def _check_overlaps(where: str, points: Sequence[ModbusPoint]) -> None:
    """Sweep each table in address order; overlapping points must share one range."""
    order = sorted(points, key=lambda p: (p.table, p.address, p.size))
    first: ModbusPoint | None = None  # the first point of the current group (one range)
    by_type: dict[str, ModbusPoint] = {}  # one point of each type in the group
    for p in order:
        if first is None or first.table != p.table or p.address > first.address + first.size - 1:
            first, by_type = p, {p.type: p}
            continue
        if p.address != first.address or p.size != first.size:
            raise ConfigError(
                f'{where} point "{p.name}": {_span(p)} overlaps point "{first.name}" '
                f"({_span(first)}); overlapping points must cover the same registers"
            )
        by_type.setdefault(p.type, p)
        types = set(by_type)
        if len(types) > 1 and not (len(types) == 2 and "bool" in types and types & _BIT_AND_WORD):
            other = next(q for kind, q in by_type.items() if kind != p.type)
            raise ConfigError(
                f'{where} point "{p.name}": {_span(p)} overlaps point "{other.name}" '
                f"({_span(other)}) with a different type"
            )


def _span(p: ModbusPoint) -> str:
    last = p.address + p.size - 1
    where = f"{p.address}" if last == p.address else f"{p.address}..{last}"
    return f"{p.type} at {p.table} {where}"
