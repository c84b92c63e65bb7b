"""Modbus configuration tables of the Box's TOML file into typed values (pure).

Does: turn one untrusted mapping (a ``[[modbus_tcp]]`` or ``[[modbus_rtu]]`` table as
`tomllib` parses it) into a frozen `ModbusTcpDevice` or `ModbusRtuLine`, or raise
`ConfigError` naming the line, the device, the point and the field. Unknown keys are
errors, integers must be TOML integers, floats may be either (``poll_interval_s = 1``
is fine), booleans must be TOML booleans. Does not: read files, or check the rules that
also apply to values built in code (`_config` does, and is called here).

A Modbus TCP device (one bus of its own)::

    [[modbus_tcp]]
    name = "ahu1"              # required, ^[a-z0-9][a-z0-9_-]{0,31}$
    host = "127.0.0.1"         # required, IP address or DNS name
    port = 502                 # 1..65535
    unit_id = 1                # 0..247
    poll_interval_s = 1.0      # required, 0.1..86400
    timeout_s = 1.0            # per try, 0.05..60
    retries = 1                # tries after the first, 0..10
    max_gap = 8                # unused registers (bits) read through to merge reads, 0..125
    max_registers = 125        # largest register read to try, 1..125 (lowered if refused)
    byte_order = "big"         # big | little: bytes within each register
    word_order = "big"         # big | little: registers of a multi-register value
    write_multiple = false     # true: write with FC 15/16 only (devices without FC 5/6)
    urgent = false             # true: every point's readings leave at once, not after the
                               # [uplink] batch_delay_ms (alarms, states that matter)
    report = { mode = "change", deadband = 0.2 }   # report on change, see drivers._report

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
    poll_interval_s = 10.0     # overrides the device's, 0.1..86400
    writable = false           # true: the cloud may write it (holding and coil only)
    min = 12.0                 # bounds of a write in engineering units (writable numbers)
    max = 28.0
    urgent = true              # overrides the device's urgent
    report = { deadband_pct = 1 }   # overrides the device's, field by field

A serial line (one bus) and its slave devices::

    [[modbus_rtu]]
    name = "rs485-1"           # required, same rule as device names
    port = "/dev/ttyUSB0"      # required, a path under /dev
    baudrate = 9600            # 300 600 1200 2400 4800 9600 19200 38400 57600 115200
    parity = "N"               # N | E | O
    stopbits = 1               # 1 | 2
    bytesize = 8               # must be 8: Modbus RTU frames need 8 data bits
    timeout_s = 0.5            # per try, 0.05..60
    retries = 1                # tries after the first, 0..10

    [[modbus_rtu.devices]]     # 1..247 per line, unique names and unit ids
    name = "meter2"            # required
    unit_id = 7                # required, 1..247
    poll_interval_s = 5.0      # required
    timeout_s = 0.5            # overrides the line's
    retries = 1                # overrides the line's
    max_gap = 8                # and max_registers, byte_order, word_order, write_multiple,
                               # urgent: as for a TCP device

    [[modbus_rtu.devices.points]]   # exactly the keys of a TCP device's points
    name = "energy"
    table = "holding"
    address = 0
    type = "uint32"
    unit = "kWh"
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Final, TypeVar, cast

from drivers._fields import (
    as_bool,
    as_float,
    as_int,
    as_str,
    choice,
    kind_of,
    label,
    opt,
    reject_unknown,
    req,
)
from drivers._report import parse_report
from drivers.errors import ConfigError
from drivers.modbus._codec import ORDERS, TYPES, DataType, Order
from drivers.modbus._config import (
    BIT_TABLES,
    MAX_POINTS,
    MAX_REGISTERS_PER_READ,
    PARITIES,
    TABLES,
    ModbusPoint,
    ModbusRtuDevice,
    ModbusRtuLine,
    ModbusTcpDevice,
    Parity,
    Table,
    check_device,
    check_rtu_line,
)

MAX_DEVICES_PER_LINE: Final = 247
_COMMON_DEVICE_KEYS: Final = frozenset({
    "name", "unit_id", "poll_interval_s", "timeout_s", "retries", "max_gap", "max_registers",
    "byte_order", "word_order", "write_multiple", "points", "urgent", "report",
})
_TCP_DEVICE_KEYS: Final = _COMMON_DEVICE_KEYS | {"host", "port"}
_LINE_KEYS: Final = frozenset({
    "name", "port", "baudrate", "parity", "stopbits", "bytesize", "timeout_s", "retries",
    "devices",
})
_POINT_KEYS: Final = frozenset({
    "name", "table", "address", "type", "unit", "scale", "offset", "byte_order", "word_order",
    "bit", "length", "poll_interval_s", "writable", "min", "max", "urgent", "report",
})

T = TypeVar("T")
D = TypeVar("D")


def parse_modbus_tcp_device(raw: Mapping[str, object]) -> ModbusTcpDevice:
    """Validate one raw ``[[modbus_tcp]]`` table into a `ModbusTcpDevice`.

    Raises:
        ConfigError: the first problem found, e.g. ``device "ahu1" point "supply_temp":
            address 70000 is out of range 0..65535``.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"device: must be a table, not {kind_of(raw)}")
    where = label("device", raw.get("name"))
    reject_unknown(raw, _TCP_DEVICE_KEYS, where)
    device = ModbusTcpDevice(
        name=req(raw, "name", where, as_str),
        host=req(raw, "host", where, as_str),
        poll_interval_s=req(raw, "poll_interval_s", where, as_float),
        points=_points(raw, where),
        port=opt(raw, "port", where, as_int, 502),
        unit_id=opt(raw, "unit_id", where, as_int, 1),
        timeout_s=opt(raw, "timeout_s", where, as_float, 1.0),
        retries=opt(raw, "retries", where, as_int, 1),
        max_gap=opt(raw, "max_gap", where, as_int, 8),
        byte_order=opt(raw, "byte_order", where, _order, "big"),
        word_order=opt(raw, "word_order", where, _order, "big"),
        write_multiple=opt(raw, "write_multiple", where, as_bool, False),
        max_registers=opt(raw, "max_registers", where, as_int, MAX_REGISTERS_PER_READ),
        urgent=opt(raw, "urgent", where, as_bool, False),
        report=opt(raw, "report", where, parse_report, None),
    )
    check_device(device)
    return device


def parse_modbus_rtu_line(raw: Mapping[str, object]) -> ModbusRtuLine:
    """Validate one raw ``[[modbus_rtu]]`` table (a serial line and its devices).

    Raises:
        ConfigError: the first problem found, e.g. ``line "rs485-1" device "meter2":
            unit_id 248 is out of range 1..247``.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"line: must be a table, not {kind_of(raw)}")
    where = label("line", raw.get("name"))
    reject_unknown(raw, _LINE_KEYS, where)
    devices_raw = raw.get("devices")
    if not isinstance(devices_raw, list):
        raise ConfigError(f"{where}: devices must be a list of tables, not {kind_of(devices_raw)}")
    if len(devices_raw) > MAX_DEVICES_PER_LINE:
        raise ConfigError(f"{where}: {len(devices_raw)} devices, more than {MAX_DEVICES_PER_LINE}")
    line = ModbusRtuLine(
        name=req(raw, "name", where, as_str),
        port=req(raw, "port", where, as_str),
        devices=tuple(_rtu_device(d, i, where) for i, d in enumerate(devices_raw, 1)),
        baudrate=opt(raw, "baudrate", where, as_int, 9600),
        parity=opt(raw, "parity", where, _parity, "N"),
        stopbits=opt(raw, "stopbits", where, as_int, 1),
        bytesize=opt(raw, "bytesize", where, as_int, 8),
        timeout_s=opt(raw, "timeout_s", where, as_float, 0.5),
        retries=opt(raw, "retries", where, as_int, 1),
    )
    check_rtu_line(line)
    return line


def _rtu_device(raw: object, index: int, line_where: str) -> ModbusRtuDevice:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{line_where} device #{index}: must be a table, not {kind_of(raw)}")
    where = label(f"{line_where} device", raw.get("name"), index)
    reject_unknown(raw, _COMMON_DEVICE_KEYS, where)
    return ModbusRtuDevice(
        name=req(raw, "name", where, as_str),
        unit_id=req(raw, "unit_id", where, as_int),
        poll_interval_s=req(raw, "poll_interval_s", where, as_float),
        points=_points(raw, where),
        timeout_s=opt(raw, "timeout_s", where, as_float, None),
        retries=opt(raw, "retries", where, as_int, None),
        max_gap=opt(raw, "max_gap", where, as_int, 8),
        byte_order=opt(raw, "byte_order", where, _order, "big"),
        word_order=opt(raw, "word_order", where, _order, "big"),
        write_multiple=opt(raw, "write_multiple", where, as_bool, False),
        max_registers=opt(raw, "max_registers", where, as_int, MAX_REGISTERS_PER_READ),
        urgent=opt(raw, "urgent", where, as_bool, False),
        report=opt(raw, "report", where, parse_report, None),
    )


def _points(raw: Mapping[str, object], where: str) -> tuple[ModbusPoint, ...]:
    points_raw = raw.get("points")
    if not isinstance(points_raw, list):
        raise ConfigError(f"{where}: points must be a list of tables, not {kind_of(points_raw)}")
    if len(points_raw) > MAX_POINTS:
        raise ConfigError(f"{where}: {len(points_raw)} points, more than {MAX_POINTS}")
    return tuple(_parse_point(p, i, where) for i, p in enumerate(points_raw, 1))


def _parse_point(raw: object, index: int, device_where: str) -> ModbusPoint:
    name = raw.get("name") if isinstance(raw, Mapping) else None
    where = f"{device_where} {label('point', name, index)}"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a table, not {kind_of(raw)}")
    reject_unknown(raw, _POINT_KEYS, where)
    table = req(raw, "table", where, _table)
    default_type: DataType | None = "bool" if table in BIT_TABLES else None
    kind = opt(raw, "type", where, _type, default_type)
    if kind is None:
        raise ConfigError(f'{where}: missing key "type"')
    return ModbusPoint(
        name=sys.intern(req(raw, "name", where, as_str)),  # devices alike repeat their point names
        address=req(raw, "address", where, as_int),
        # one string object for each table, type and unit, however many points repeat them (memory
        # at 10,000 points: docs/performance.md, "The whole service's memory")
        table=cast(Table, sys.intern(table)),
        type=cast(DataType, sys.intern(kind)),
        unit=sys.intern(opt(raw, "unit", where, as_str, "")),
        scale=opt(raw, "scale", where, as_float, 1.0),
        offset=opt(raw, "offset", where, as_float, 0.0),
        byte_order=opt(raw, "byte_order", where, _order, None),
        word_order=opt(raw, "word_order", where, _order, None),
        bit=opt(raw, "bit", where, as_int, None),
        length=opt(raw, "length", where, as_int, None),
        poll_interval_s=opt(raw, "poll_interval_s", where, as_float, None),
        writable=opt(raw, "writable", where, as_bool, False),
        min=opt(raw, "min", where, as_float, None),
        max=opt(raw, "max", where, as_float, None),
        urgent=opt(raw, "urgent", where, as_bool, None),
        report=opt(raw, "report", where, parse_report, None),
    )


def _order(value: object, what: str) -> Order:
    return cast(Order, choice(value, what, ORDERS))


def _table(value: object, what: str) -> Table:
    return cast(Table, choice(value, what, TABLES))


def _type(value: object, what: str) -> DataType:
    return cast(DataType, choice(value, what, TYPES))


def _parity(value: object, what: str) -> Parity:
    return cast(Parity, choice(value, what, PARITIES))
