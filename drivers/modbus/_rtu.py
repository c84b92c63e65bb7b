"""`ModbusRtuSource`: one serial line (RS-485) and its slave devices as a `PointSource`.

Does: build a runtime spec per device (the line's timeout and retries unless the device
has its own) and one `RtuLink` for the line, and run them as one `ModbusBus`: one
request in flight on the line, devices staggered across their intervals, a failing
device backed off without holding up the others, t3.5 of silence between frames (the
link keeps it). Does not: parse configuration (`_parse`), plan, schedule or decode
(the pure modules), or talk pymodbus (`_link`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from drivers._types import PointSource
from drivers.modbus._bus import ModbusBus
from drivers.modbus._config import ModbusRtuDevice, ModbusRtuLine, check_rtu_line, codec_for
from drivers.modbus._device import DeviceSpec
from drivers.modbus._link import RtuLink


def rtu_spec(line: ModbusRtuLine, device: ModbusRtuDevice) -> DeviceSpec:
    """The runtime view of a device on a line."""
    return DeviceSpec(
        name=device.name, unit_id=device.unit_id, poll_interval_s=device.poll_interval_s,
        points=device.points, codecs=tuple(codec_for(device, p) for p in device.points),
        max_gap=device.max_gap, max_registers=device.max_registers,
        timeout_s=device.timeout_s if device.timeout_s is not None else line.timeout_s,
        retries=device.retries if device.retries is not None else line.retries,
        write_multiple=device.write_multiple,
        where=f"modbus device {device.name} ({line.port} unit {device.unit_id})",
    )


class ModbusRtuSource(ModbusBus):
    """One serial line as a bus; the constructor does no I/O (the port opens in `run()`)."""

    def __init__(self, line: ModbusRtuLine) -> None:
        """Compile the devices' plans and codecs.

        Raises:
            ConfigError: the line or a device breaks a configuration rule.
        """
        check_rtu_line(line)
        self.line = line
        link = RtuLink(line.port, baudrate=line.baudrate, parity=line.parity,
                       stopbits=line.stopbits, bytesize=line.bytesize, name=f"modbus {line.name}")
        self.silence_s = link.silence_s
        super().__init__(line.name, [rtu_spec(line, d) for d in line.devices], link)


if TYPE_CHECKING:  # mypy checks that the adapter implements the interface

    def _is_a_point_source(source: ModbusRtuSource) -> PointSource:
        return source
