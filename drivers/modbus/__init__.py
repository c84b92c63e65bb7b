"""Modbus TCP and RTU: configuration, the value codec, the read planner and the bus sources.

The public face of the package; everything else is private. pymodbus is imported only
by `_link` (and by the simulators in `drivers.sim`); `drivers.modbus.scan` is the
public module of the installer's scanning primitives.

- `parse_modbus_tcp_device(raw)` / `parse_modbus_rtu_line(raw)`: one ``[[modbus_tcp]]``
  or ``[[modbus_rtu]]`` table into typed values (the format is documented in
  `drivers.modbus._parse`); `check_device` / `check_rtu_line` for values built in code;
- `ModbusTcpSource(device)` / `ModbusRtuSource(line)`: one bus each, as a
  `drivers.PointSource` (``run(emit)``, ``read_now``, ``write``, ``stats``, ``points``);
- `decode` / `encode` / `PointCodec` / `register_count`: registers to and from values,
  with byte and word order (documented in `drivers.modbus._codec`);
- `plan_reads` / `ReadRequest` / `ReadPlanner`: how a device's points become the fewest
  read requests (documented in `drivers.modbus._plan`);
- `silent_interval_s` / `crc16`: RTU line timing and checksum.
"""

from drivers.modbus._codec import (
    TYPES,
    DataType,
    Order,
    PointCodec,
    RegisterWindow,
    decode,
    encode,
    register_count,
)
from drivers.modbus._config import (
    MAX_POINTS,
    ModbusDevice,
    ModbusPoint,
    ModbusRtuDevice,
    ModbusRtuLine,
    ModbusTcpDevice,
    Parity,
    Table,
    check_device,
    check_rtu_line,
    codec_for,
    is_urgent,
)
from drivers.modbus._parse import parse_modbus_rtu_line, parse_modbus_tcp_device
from drivers.modbus._plan import MAX_BITS, MAX_REGISTERS, ReadPlanner, ReadRequest, plan_reads
from drivers.modbus._rtu import ModbusRtuSource
from drivers.modbus._rtu_frame import crc16, silent_interval_s
from drivers.modbus._tcp import ModbusTcpSource

__all__ = [
    "MAX_BITS",
    "MAX_POINTS",
    "MAX_REGISTERS",
    "TYPES",
    "DataType",
    "ModbusDevice",
    "ModbusPoint",
    "ModbusRtuDevice",
    "ModbusRtuLine",
    "ModbusRtuSource",
    "ModbusTcpDevice",
    "ModbusTcpSource",
    "Order",
    "Parity",
    "PointCodec",
    "ReadPlanner",
    "ReadRequest",
    "RegisterWindow",
    "Table",
    "check_device",
    "check_rtu_line",
    "codec_for",
    "crc16",
    "decode",
    "encode",
    "is_urgent",
    "parse_modbus_rtu_line",
    "parse_modbus_tcp_device",
    "plan_reads",
    "register_count",
    "silent_interval_s",
]
