"""`ModbusTcpSource`: one Modbus TCP device as a `PointSource` (one bus, one connection).

Does: build the device's runtime spec and a `TcpLink`, and run them as a `ModbusBus`:
its own schedule (per-point intervals), learned read limits, writes and on-demand
reads queued ahead of polls, one request in flight on the connection. After a poll in
which the device answered nothing it closes the connection, so that a half-open
connection is replaced at the next poll. Does not: parse configuration (`_parse`),
plan, schedule or decode (the pure modules), or talk pymodbus (`_link`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from drivers._types import PointSource
from drivers.modbus._bus import ModbusBus
from drivers.modbus._config import ModbusTcpDevice, check_device, codec_for
from drivers.modbus._device import DeviceRuntime, DeviceSpec
from drivers.modbus._link import TcpLink


def tcp_spec(device: ModbusTcpDevice) -> DeviceSpec:
    """The runtime view of a TCP device."""
    return DeviceSpec(
        name=device.name, unit_id=device.unit_id, poll_interval_s=device.poll_interval_s,
        points=device.points, codecs=tuple(codec_for(device, p) for p in device.points),
        max_gap=device.max_gap, max_registers=device.max_registers, timeout_s=device.timeout_s,
        retries=device.retries, write_multiple=device.write_multiple,
        where=f"modbus device {device.name} ({device.host}:{device.port} unit {device.unit_id})",
    )


class ModbusTcpSource(ModbusBus):
    """One Modbus TCP device as a bus; the constructor does no I/O."""

    def __init__(self, device: ModbusTcpDevice, phase: float = 0.0) -> None:
        """Compile the device's plans and codecs; polls start `phase` (0..1) of an interval in,
        so that the daemon spreads its TCP devices over the interval instead of bunching them.

        Raises:
            ConfigError: the device breaks a configuration rule.
        """
        check_device(device)
        self.device = device
        self.phase = phase  # the share of the interval its polls start at
        self.poll_interval_s = device.poll_interval_s
        link = TcpLink(device.host, device.port, f"modbus {device.name}")
        super().__init__(device.name, [tcp_spec(device)], link, phase)

    def _poll_done(self, device: DeviceRuntime) -> None:
        if device.failures:
            self._link.close()


if TYPE_CHECKING:  # mypy checks that the adapter implements the interface

    def _is_a_point_source(source: ModbusTcpSource) -> PointSource:
        return source
