"""Modbus device, line and point configuration as typed values, and their rules (pure).

Does: define the frozen values a Box's configuration becomes (`ModbusPoint`,
`ModbusTcpDevice`, `ModbusRtuDevice`, `ModbusRtuLine`) and check every rule on them,
whether they were parsed (`_parse`, which documents the TOML format) or built in code;
a broken rule is a `ConfigError` naming the device, the point and the field. Does not:
parse raw tables (`_parse`), plan reads (`_plan`), decode values (`_codec`) or talk to
devices.

Points may overlap only when they cover the same registers and have the same type,
or are bits of a 16-bit register read as int16/uint16 too (a status word and its
flags); any other overlap is a configuration error. So distinct register ranges of a
table never overlap, which the planner's optimality relies on.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from drivers._fields import check_name, check_range
from drivers._report import Report
from drivers.errors import ConfigError, show
from drivers.modbus._codec import ORDERS, TYPES, DataType, Order, PointCodec, register_count
from proto import names

Table = Literal["holding", "input", "coil", "discrete"]
Parity = Literal["N", "E", "O"]
TABLES: Final[tuple[Table, ...]] = ("holding", "input", "coil", "discrete")
PARITIES: Final[tuple[Parity, ...]] = ("N", "E", "O")
BAUDRATES: Final = (300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
BIT_TABLES: Final = frozenset({"coil", "discrete"})
WRITABLE_TABLES: Final = frozenset({"holding", "coil"})
MAX_POINTS: Final = 10000
MAX_REGISTERS_PER_READ: Final = 125
PORT_RE: Final = re.compile(r"/dev/[A-Za-z0-9._:+/-]{1,200}")
_BIT_AND_WORD: Final = frozenset({"int16", "uint16"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ModbusPoint:
    """One point of a device: where it lives, how its registers make a value, how it is
    polled and whether (and within which bounds) it may be written."""

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
    poll_interval_s: float | None = None  # None: the device's
    writable: bool = False
    min: float | None = None  # bounds of a write, in engineering units
    max: float | None = None
    urgent: bool | None = None  # None: the device's (an urgent reading leaves at once, not after the batch delay)
    report: Report | None = None  # report on change: this point's own (drivers._report)

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
    write_multiple: bool = False  # always FC 15/16, for devices without FC 5/6
    max_registers: int = MAX_REGISTERS_PER_READ  # largest read to try; lowered when refused
    urgent: bool = False  # its points' readings leave at once, unless a point says otherwise
    report: Report | None = None  # report on change: the device's (drivers._report)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModbusRtuDevice:
    """One slave device on a serial line: its unit id and points."""

    name: str
    unit_id: int
    poll_interval_s: float
    points: tuple[ModbusPoint, ...]
    timeout_s: float | None = None  # None: the line's
    retries: int | None = None  # None: the line's
    max_gap: int = 8
    byte_order: Order = "big"
    word_order: Order = "big"
    write_multiple: bool = False
    max_registers: int = MAX_REGISTERS_PER_READ
    urgent: bool = False
    report: Report | None = None  # report on change: the device's (drivers._report)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModbusRtuLine:
    """One serial line (RS-485) with its settings and slave devices: one bus."""

    name: str
    port: str
    devices: tuple[ModbusRtuDevice, ...]
    baudrate: int = 9600
    parity: Parity = "N"
    stopbits: int = 1
    bytesize: int = 8
    timeout_s: float = 0.5
    retries: int = 1

    @property
    def settings(self) -> str:
        """The line settings as installers write them, e.g. "9600 8N1"."""
        return f"{self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"


ModbusDevice = ModbusTcpDevice | ModbusRtuDevice


def is_urgent(device: ModbusDevice, point: ModbusPoint) -> bool:
    """Whether `point`'s readings are urgent: its own say, else its device's."""
    return device.urgent if point.urgent is None else point.urgent


def codec_for(device: ModbusDevice, point: ModbusPoint) -> PointCodec:
    """The codec of a point, with the device's byte and word order where it has none."""
    return _shared_codec(
        point.type,
        byte_order=point.byte_order or device.byte_order,
        word_order=point.word_order or device.word_order,
        bit=point.bit,
        length=point.length,
        scale=point.scale,
        offset=point.offset,
    )


# Codecs hold no state after construction: points alike share one (10,000 points, a few codecs).
_shared_codec = functools.lru_cache(maxsize=1024)(PointCodec)


# -- checking (also for values built in code) ---------------------------------------------


def check_device(device: ModbusTcpDevice) -> None:
    """Check the rules on a Modbus TCP device built in code or parsed.

    Raises:
        ConfigError: the first rule broken, naming the device, the point and the field.
    """
    where = f'device "{device.name}"'
    check_name(device.name, "device")
    if not names.is_host(device.host):
        raise ConfigError(f"{where}: host {show(device.host)} is not an IP address or a DNS name")
    check_range(where, "port", device.port, 1, 65535)
    check_range(where, "unit_id", device.unit_id, 0, 247)
    check_range(where, "timeout_s", device.timeout_s, 0.05, 60)
    check_range(where, "retries", device.retries, 0, 10)
    _check_common(where, device)


def check_rtu_line(line: ModbusRtuLine) -> None:
    """Check the rules on a serial line and its devices, built in code or parsed.

    Raises:
        ConfigError: the first rule broken, naming the line, the device, the point and the
            field.
    """
    where = f'line "{line.name}"'
    check_name(line.name, "line")
    if not isinstance(line.port, str) or not PORT_RE.fullmatch(line.port) or ".." in line.port.split("/"):
        raise ConfigError(f"{where}: port {show(line.port)} must be a device path like /dev/ttyUSB0")
    if line.baudrate not in BAUDRATES:
        raise ConfigError(f"{where}: baudrate {show(line.baudrate)} is not one of {BAUDRATES}")
    if line.parity not in PARITIES:
        raise ConfigError(f"{where}: parity {show(line.parity)} must be N, E or O")
    if line.stopbits not in (1, 2):
        raise ConfigError(f"{where}: stopbits {show(line.stopbits)} must be 1 or 2")
    if line.bytesize != 8:
        raise ConfigError(f"{where}: bytesize {show(line.bytesize)}: Modbus RTU frames need 8 data bits "
                          "(7 is Modbus ASCII, which the Box does not speak)")
    check_range(where, "timeout_s", line.timeout_s, 0.05, 60)
    check_range(where, "retries", line.retries, 0, 10)
    if not line.devices:
        raise ConfigError(f"{where}: has no devices")
    names: set[str] = set()
    units: dict[int, str] = {}
    for device in line.devices:
        dwhere = f'{where} device "{device.name}"'
        check_name(device.name, f"{where} device")
        if device.name in names:
            raise ConfigError(f"{dwhere}: name is used twice on the line")
        names.add(device.name)
        check_range(dwhere, "unit_id", device.unit_id, 1, 247)
        if device.unit_id in units:
            raise ConfigError(
                f'{dwhere}: unit_id {device.unit_id} is already device "{units[device.unit_id]}"'
            )
        units[device.unit_id] = device.name
        if device.timeout_s is not None:
            check_range(dwhere, "timeout_s", device.timeout_s, 0.05, 60)
        if device.retries is not None:
            check_range(dwhere, "retries", device.retries, 0, 10)
        _check_common(dwhere, device)



def _check_common(where: str, device: ModbusDevice) -> None:
    check_range(where, "poll_interval_s", device.poll_interval_s, 0.1, 86400)
    check_range(where, "max_gap", device.max_gap, 0, 125)
    check_range(where, "max_registers", device.max_registers, 1, MAX_REGISTERS_PER_READ)
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
        if point.table not in BIT_TABLES and point.size > device.max_registers:
            raise ConfigError(
                f'{where} point "{point.name}": {point.size} registers do not fit one read of '
                f"max_registers {device.max_registers}"
            )
    _check_overlaps(where, device.points)


def _check_point(device_where: str, p: ModbusPoint) -> None:
    check_name(p.name, f"{device_where}: point")
    where = f'{device_where} point "{p.name}"'
    if p.table not in TABLES:
        raise ConfigError(f"{where}: table {show(p.table)} is not one of {' | '.join(TABLES)}")
    if p.type not in TYPES:
        raise ConfigError(f"{where}: type {show(p.type)} is not one of {' | '.join(TYPES)}")
    check_range(where, "address", p.address, 0, 65535)
    _check_shape(where, p)
    if p.type in ("bool", "string") and (p.scale != 1 or p.offset != 0):
        raise ConfigError(f"{where}: scale and offset are only for numbers, not {p.type}")
    if not (math.isfinite(p.scale) and math.isfinite(p.offset)) or p.scale == 0:
        raise ConfigError(f"{where}: scale must be finite and not 0, offset finite")
    if (p.byte_order or "big") not in ORDERS or (p.word_order or "big") not in ORDERS:
        raise ConfigError(f"{where}: byte_order and word_order must be big or little")
    if len(p.unit) > 32 or not p.unit.isprintable():
        raise ConfigError(f"{where}: unit {show(p.unit)} must be at most 32 printable characters")
    end = p.address + p.size - 1
    if end > 65535:
        raise ConfigError(
            f"{where}: {p.type} at address {p.address} takes {p.size} registers and ends at "
            f"{end}, past 65535"
        )
    if p.poll_interval_s is not None:
        check_range(where, "poll_interval_s", p.poll_interval_s, 0.1, 86400)
    _check_write_rules(where, p)


def _check_write_rules(where: str, p: ModbusPoint) -> None:
    if p.writable and p.table not in WRITABLE_TABLES:
        raise ConfigError(f"{where}: a {p.table} point cannot be writable (only holding and coil)")
    bounds = [b for b in (p.min, p.max) if b is not None]
    if not bounds:
        return
    if not p.writable:
        raise ConfigError(f"{where}: min and max bound writes: set writable = true, or drop them")
    if p.type in ("bool", "string"):
        raise ConfigError(f"{where}: min and max are only for numbers, not {p.type}")
    if not all(math.isfinite(b) for b in bounds):
        raise ConfigError(f"{where}: min and max must be finite")
    if p.min is not None and p.max is not None and p.min > p.max:
        raise ConfigError(f"{where}: min {p.min!r} is above max {p.max!r}")


def _check_shape(where: str, p: ModbusPoint) -> None:
    """Table and type agree; bit and length are where they belong."""
    bit_table = p.table in BIT_TABLES
    if bit_table and p.type != "bool":
        raise ConfigError(f'{where}: a {p.table} point has type "bool", not "{p.type}"')
    if p.type == "bool" and not bit_table:
        if p.bit is None:
            raise ConfigError(f"{where}: a bool in a {p.table} register needs bit (0..15)")
        check_range(where, "bit", p.bit, 0, 15)
    elif p.bit is not None:
        raise ConfigError(f"{where}: bit is only for a bool in a holding or input register")
    if p.type == "string":
        if p.length is None:
            raise ConfigError(f"{where}: a string needs length (registers, 1..125)")
        check_range(where, "length", p.length, 1, 125)
    elif p.length is not None:
        raise ConfigError(f"{where}: length is only for a string")




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
