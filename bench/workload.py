"""The benchmark workload: D Modbus TCP controllers with P points each, laid out as real ones are.

Pure code (no sockets): `layout` makes the devices, `boxd_toml` the Box configuration
that polls them. The farm that serves them is `bench.farm`; how their values move is the
workload (`WORKLOADS`): every value at every read, or a building's trace (`bench.building`).

A controller's points, in the proportions of the AHU and room controllers met on site:
40 % uint16 and 20 % int16 measurements in input registers, 20 % float32 (two
registers, big-endian words) in holding registers, 20 % coils. Points come in runs of
`RUN` consecutive addresses separated by gaps of `GAP` unused registers (or coils), as
vendors leave room between blocks. The first point of every device, input register 0,
is the latency probe: a counter that moves on every read, whose serving times the farm
logs.

With `alarm_device`, one more controller ("alarm", 5 points) whose probe is marked urgent
(``urgent = true``) and is polled every `ALARM_INTERVAL_S`: a period that does not divide the
others' 1 s, so its urgent readings fall at every phase of their batch delay, as an alarm would.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from drivers.modbus._codec import DataType
from drivers.modbus._config import ModbusPoint, Table
from drivers.modbus._plan import plan_reads
from drivers.modbus._toml import point_lines, toml_value

RUN: Final = 10  # consecutive points in a run
GAP: Final = 3  # unused addresses between runs: within the planner's default gap of 8
PROBE: Final = "p000"  # input register 0 of every device
ALARM: Final = "alarm"  # the device whose probe is urgent (`alarm_device`)
ALARM_INTERVAL_S: Final = 0.7
# how the farm moves the values: every value at every read ("counter"), or as a building's points
# ("building", `bench.building`)
WORKLOADS: Final = ("counter", "building")


@dataclass(frozen=True, slots=True)
class Device:
    """One simulated controller: its name, the TCP port it listens on and its points."""

    name: str
    port: int
    points: tuple[ModbusPoint, ...]


def _block(table: Table, kind: DataType, count: int, first_index: int) -> list[ModbusPoint]:
    size = 2 if kind == "float32" else 1
    out, address = [], 0
    for n in range(count):
        if n and n % RUN == 0:
            address += GAP
        out.append(ModbusPoint(name=f"p{first_index + n:03d}", table=table, address=address, type=kind))
        address += size
    return out


def device_points(points: int) -> tuple[ModbusPoint, ...]:
    """The point list of one controller with `points` points (at least 5)."""
    if points < 5:
        raise ValueError("a benchmark device needs at least 5 points")
    n_u16, n_i16, n_f32 = points * 2 // 5, points // 5, points // 5
    n_coil = points - n_u16 - n_i16 - n_f32
    inputs = _block("input", "uint16", n_u16 + n_i16, 0)
    inputs = [p if n < n_u16 else ModbusPoint(name=p.name, table="input", address=p.address, type="int16")
              for n, p in enumerate(inputs)]
    floats = _block("holding", "float32", n_f32, n_u16 + n_i16)
    coils = _block("coil", "bool", n_coil, n_u16 + n_i16 + n_f32)
    return tuple(inputs + floats + coils)


def layout(devices: int, points: int, base_port: int) -> list[Device]:
    """`devices` controllers of `points` points each, listening on consecutive ports."""
    shape = device_points(points)
    return [Device(f"d{n:03d}", base_port + n, shape) for n in range(devices)]


def alarm_device(port: int) -> Device:
    """The controller whose probe is urgent, listening on `port`."""
    points = device_points(5)
    return Device(ALARM, port, (dataclasses.replace(points[0], urgent=True), *points[1:]))


def minimum_requests(devices: list[Device], max_gap: int = 8) -> int:
    """Requests per poll cycle that the planner proves minimal for the gap setting."""
    return sum(len(plan_reads(d.points, max_gap=max_gap)) for d in devices)


# an installer's deadbands for the building trace (`bench.building`), by register type: int16 are
# temperatures in tenths of a degree (a change of more than 0.1 °C: the last digit's flicker is noise),
# float32 power, humidity and pressure (more than 1 % of the value); counts, setpoints, modes and
# states are sent on any change
DEADBANDS: Final = {"int16": "{ deadband = 1 }", "float32": "{ deadband_pct = 1 }"}
# a metered SIM's (docs/performance.md, "A metered SIM"): analog values beyond their noise (the trace's
# power readings have 1 % of noise: a 1 % deadband sends half of them, 3 % the moves that matter)
# and energy meters (0.1 kWh a count) sent every 1 kWh, as a metered trend log would (keyed "meter": the
# trace's meter registers, `METER_INDEX`; setpoints, modes, states and alarms still on any change)
METERED: Final = {"int16": "{ deadband = 1 }", "float32": "{ deadband_pct = 3 }", "meter": "{ deadband = 9 }"}


def is_meter(p: ModbusPoint, n: int) -> bool:
    """Whether the `n`th point of a device is an energy meter in the building trace (`bench.building`)."""
    return p.type == "uint16" and not (p.table == "input" and p.address == 0) and n % 4 in (0, 1)


def boxd_toml(devices: list[Device], host: str, interval_s: float, deadbands: Mapping[str, str] | None = None) -> str:
    """The ``[[modbus_tcp]]`` tables polling every device every `interval_s` (the alarm device
    every `ALARM_INTERVAL_S`, its probe urgent); `deadbands`: a point's ``report`` table by its type (or
    "meter", the building trace's energy meters)."""
    lines: list[str] = []
    for d in devices:
        alarm = d.name == ALARM
        lines += ["[[modbus_tcp]]", f"name = {toml_value(d.name)}", f"host = {toml_value(host)}",
                  f"port = {d.port}", f"poll_interval_s = {ALARM_INTERVAL_S if alarm else interval_s!r}"]
        for n, p in enumerate(d.points):
            lines += ["", *point_lines(p, "modbus_tcp.points")]
            key = "meter" if deadbands and "meter" in deadbands and is_meter(p, n) else p.type
            if deadbands and key in deadbands:
                lines.append(f"report = {deadbands[key]}")
        lines.append("")
    return "\n".join(lines)
