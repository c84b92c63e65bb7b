"""Modbus TCP: device configuration, the value codec and the `PointSource` adapter.

The public face of the package; everything else is private. pymodbus is imported
only by `_tcp` (and by the simulator in `drivers.sim`).

- `parse_modbus_tcp_device(raw)`: one ``[[modbus_tcp]]`` table into a `ModbusTcpDevice`
  (the raw format is documented in `drivers.modbus._config`);
- `ModbusTcpSource(device)`: reads the device's points into `Sample` values;
- `decode` / `encode` / `PointCodec` / `register_count`: registers to and from values,
  with byte and word order (documented in `drivers.modbus._codec`);
- `plan_reads` / `ReadRequest`: how a device's points become read requests.
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
    ModbusPoint,
    ModbusTcpDevice,
    Table,
    check_device,
    codec_for,
    parse_modbus_tcp_device,
)
from drivers.modbus._plan import MAX_BITS, MAX_REGISTERS, ReadRequest, plan_reads
from drivers.modbus._tcp import ModbusTcpSource

__all__ = [
    "MAX_BITS",
    "MAX_POINTS",
    "MAX_REGISTERS",
    "TYPES",
    "DataType",
    "ModbusPoint",
    "ModbusTcpDevice",
    "ModbusTcpSource",
    "Order",
    "PointCodec",
    "ReadRequest",
    "RegisterWindow",
    "Table",
    "check_device",
    "codec_for",
    "decode",
    "encode",
    "parse_modbus_tcp_device",
    "plan_reads",
    "register_count",
]
