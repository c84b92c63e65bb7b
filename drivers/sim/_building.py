"""The simulated building: its devices' point lists, their values over time, their registers.

Pure code (no sockets, no pymodbus): `building_devices` / `building_rtu_line` are the
layouts (the same values a Box gets from `building_points_toml` /
`building_rtu_points_toml`), `BuildingState` holds the register images that the
servers in `modbus_building` (TCP) and `modbus_rtu_building` (RTU over a pty) serve,
and moves the values on (sine drift plus noise, energy counters that only grow).

Device kinds: "ahu" an air-handling unit, "meter" a three-phase energy meter (word
order little, as many meters have), "room" a room controller. The TCP building has
units 1 "ahu1", 2 "meter1", 3 "room1"; the RS-485 line has units 7 "meter2", 8
"meter3", 9 "room2". Writable points (``writable = true`` in the layout: the AHU's
supply setpoint (FC 16), fan command coil (FC 5/15), the rooms' setpoint (FC 6), and the
AHU's command word with its boost bit (FC 6), which `command_points` lists apart because
the Box's demo configuration leaves them out) keep what a client writes and go back to
their defaults on `reset` (a device restart); every other point is driven by the model.
Bits of a status register are not driven themselves: they read the register.

Counters (``counters=True``, for loss proofs): every unit gets one more point, "reads", a
uint32 input register right after its other input registers, that counts the reads which
covered it. Each value is served once, so a sample stored twice or never is seen exactly.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Final

from drivers._types import Value
from drivers.modbus._codec import DataType, Order, PointCodec
from drivers.modbus._config import (
    BIT_TABLES,
    ModbusPoint,
    ModbusRtuDevice,
    ModbusRtuLine,
    ModbusTcpDevice,
    Table,
    codec_for,
)
from drivers.modbus._toml import point_lines, toml_value

TCP_UNITS: Final[dict[int, tuple[str, str]]] = {1: ("ahu1", "ahu"), 2: ("meter1", "meter"), 3: ("room1", "room")}
RTU_UNITS: Final[dict[int, tuple[str, str]]] = {7: ("meter2", "meter"), 8: ("meter3", "meter"), 9: ("room2", "room")}
UNITS: Final[dict[int, str]] = {unit: name for unit, (name, _) in TCP_UNITS.items()}
_FC_TABLE: Final[dict[int, Table]] = {
    1: "coil", 5: "coil", 15: "coil", 2: "discrete",
    3: "holding", 6: "holding", 16: "holding", 22: "holding", 23: "holding", 4: "input",
}
_DEFAULTS: Final[dict[str, dict[str, Value]]] = {
    "ahu": {"supply_setpoint": 18.0, "fan_running": True, "command_word": 0, "model": "AHU-3000"},
    "meter": {},
    "room": {"setpoint": 21.0},
}


def _p(
    name: str, table: Table, address: int, kind: DataType, unit: str = "", *,
    scale: float = 1.0, bit: int | None = None, length: int | None = None,
    byte_order: Order | None = None, word_order: Order | None = None,
    writable: bool = False, lo: float | None = None, hi: float | None = None,
    poll_interval_s: float | None = None,
) -> ModbusPoint:
    return ModbusPoint(
        name=name, table=table, address=address, type=kind, unit=unit, scale=scale, bit=bit,
        length=length, byte_order=byte_order, word_order=word_order, writable=writable,
        min=lo, max=hi, poll_interval_s=poll_interval_s,
    )


def command_points(kind: str) -> tuple[ModbusPoint, ...]:
    """Points a device of `kind` has but the Box's configuration leaves out (the demo stays
    small); tests add them: the AHU's command word (holding 10) and its boost bit (bit 3)."""
    if kind != "ahu":
        return ()
    return (
        _p("command_word", "holding", 10, "uint16", writable=True),
        _p("cmd_boost", "holding", 10, "bool", bit=3, writable=True),
    )


def kind_points(kind: str) -> tuple[ModbusPoint, ...]:
    """The point layout of a device kind ("ahu", "meter" or "room") as the Box configures it."""
    if kind == "ahu":
        return (
            _p("supply_temp", "input", 0, "float32", "degC"),
            _p("return_temp", "input", 2, "float32", "degC"),
            _p("outdoor_temp", "input", 4, "float32", "degC"),
            _p("fan_speed", "input", 6, "uint16", "%", scale=0.1),
            _p("status_word", "input", 7, "uint16"),
            _p("status_fan", "input", 7, "bool", bit=0),
            _p("status_filter", "input", 7, "bool", bit=1),
            _p("damper_position", "holding", 0, "uint16", "%"),
            _p("supply_setpoint", "holding", 8, "float32", "degC", writable=True, lo=12.0, hi=28.0),
            _p("model", "holding", 100, "string", length=8, poll_interval_s=60.0),
            _p("fan_running", "coil", 0, "bool", writable=True),
            _p("filter_alarm", "discrete", 0, "bool"),
        )
    if kind == "meter":
        return (
            _p("voltage_l1", "input", 0, "float32", "V"),
            _p("voltage_l2", "input", 2, "float32", "V"),
            _p("voltage_l3", "input", 4, "float32", "V"),
            _p("current", "input", 6, "float32", "A"),
            _p("active_power", "input", 8, "float32", "kW"),
            _p("energy_counter", "input", 10, "uint32", "kWh", word_order="big"),
            _p("energy", "input", 12, "float64", "kWh"),
            _p("power_factor", "input", 16, "int16", scale=0.001),
        )
    return (
        _p("room_temp", "holding", 0, "int16", "degC", scale=0.1),
        _p("humidity", "holding", 1, "uint16", "%RH", scale=0.1),
        _p("setpoint", "holding", 2, "int16", "degC", scale=0.1, writable=True, lo=15.0, hi=28.0),
        _p("co2", "holding", 3, "uint16", "ppm", byte_order="little"),
        _p("occupancy", "discrete", 0, "bool"),
    )


def counter_point(kind: str) -> ModbusPoint:
    """The "reads" counter of a device kind (see the module docstring): after its input registers."""
    after = max((p.address + p.size for p in kind_points(kind) if p.table == "input"), default=0)
    return _p("reads", "input", after, "uint32")


def box_points(kind: str, counters: bool = False) -> tuple[ModbusPoint, ...]:
    """The points of a device kind in the Box's configuration, with the counter if asked."""
    return kind_points(kind) + ((counter_point(kind),) if counters else ())


def _word_order(kind: str) -> Order:
    return "little" if kind == "meter" else "big"


WRITABLE: Final = frozenset(
    f"{name}.{p.name}" for name, kind in TCP_UNITS.values()
    for p in kind_points(kind) + command_points(kind) if p.writable
)


def building_devices(host: str, port: int, poll_interval_s: float = 1.0, *, counters: bool = False,
                     timeout_s: float = 1.0, retries: int = 1) -> tuple[ModbusTcpDevice, ...]:
    """The three TCP devices, as a Box configured against `host`:`port` sees them (with the
    "reads" counters when `counters`; `timeout_s` and `retries` as the Box should use them)."""
    return tuple(
        ModbusTcpDevice(name=name, host=host, port=port, unit_id=unit, poll_interval_s=poll_interval_s,
                        points=box_points(kind, counters), word_order=_word_order(kind),
                        timeout_s=timeout_s, retries=retries)
        for unit, (name, kind) in TCP_UNITS.items()
    )


def building_rtu_line(port_path: str, poll_interval_s: float = 1.0, *, baudrate: int = 9600,
                      timeout_s: float = 0.5) -> ModbusRtuLine:
    """The RS-485 line (units 7, 8, 9), as a Box configured against `port_path` sees it."""
    devices = tuple(
        ModbusRtuDevice(name=name, unit_id=unit, poll_interval_s=poll_interval_s,
                        points=kind_points(kind), word_order=_word_order(kind))
        for unit, (name, kind) in RTU_UNITS.items()
    )
    return ModbusRtuLine(name="rs485-1", port=port_path, devices=devices, baudrate=baudrate,
                         timeout_s=timeout_s)


def building_points_toml(host: str, port: int, poll_interval_s: float = 1.0, *, counters: bool = False,
                         timeout_s: float = 1.0, retries: int = 1) -> str:
    """The ``[[modbus_tcp]]`` tables of the three devices, for a Box's configuration file."""
    lines: list[str] = []
    for d in building_devices(host, port, poll_interval_s, counters=counters, timeout_s=timeout_s, retries=retries):
        lines += [
            f"# unit {d.unit_id} of the simulated building", "[[modbus_tcp]]",
            f"name = {toml_value(d.name)}", f"host = {toml_value(d.host)}", f"port = {d.port}",
            f"unit_id = {d.unit_id}", f"poll_interval_s = {d.poll_interval_s!r}",
        ]
        if (d.timeout_s, d.retries) != (1.0, 1):
            lines += [f"timeout_s = {d.timeout_s!r}", f"retries = {d.retries}"]
        if d.word_order != "big":
            lines.append(f"word_order = {toml_value(d.word_order)}")
        for p in d.points:
            lines += ["", *point_lines(p, "modbus_tcp.points")]
        lines.append("")
    return "\n".join(lines)


def building_rtu_points_toml(port_path: str, poll_interval_s: float = 1.0, *, baudrate: int = 9600,
                             timeout_s: float = 0.5) -> str:
    """The ``[[modbus_rtu]]`` table of the simulated line at `port_path` (e.g. /dev/pts/3)."""
    line = building_rtu_line(port_path, poll_interval_s, baudrate=baudrate, timeout_s=timeout_s)
    lines = [
        "# the simulated RS-485 line (units 7, 8, 9)", "[[modbus_rtu]]",
        f"name = {toml_value(line.name)}", f"port = {toml_value(line.port)}",
        f"baudrate = {line.baudrate}", f"parity = {toml_value(line.parity)}",
        f"stopbits = {line.stopbits}", f"bytesize = {line.bytesize}",
        f"timeout_s = {line.timeout_s!r}", f"retries = {line.retries}",
    ]
    for d in line.devices:
        lines += ["", "[[modbus_rtu.devices]]", f"name = {toml_value(d.name)}",
                  f"unit_id = {d.unit_id}", f"poll_interval_s = {d.poll_interval_s!r}"]
        if d.word_order != "big":
            lines.append(f"word_order = {toml_value(d.word_order)}")
        for p in d.points:
            lines += ["", *point_lines(p, "modbus_rtu.devices.points")]
    return "\n".join(lines) + "\n"


def _pack_bits(bits: Sequence[int]) -> list[int]:
    """Bits to 16-bit registers, lowest address in bit 0 (pymodbus's simulator layout)."""
    out = [0] * ((len(bits) + 15) // 16)
    for i, bit in enumerate(bits):
        if bit:
            out[i // 16] |= 1 << (i % 16)
    return out


class BuildingState:
    """The register images of a set of units and the model that moves them."""

    def __init__(self, seed: int = 0, units: Mapping[int, tuple[str, str]] = TCP_UNITS, *,
                 counters: bool = False) -> None:
        self.units = dict(units)
        self.counters = counters
        self.devices = {
            unit: ModbusTcpDevice(name=name, host="127.0.0.1", unit_id=unit, poll_interval_s=1.0,
                                  points=box_points(kind, counters) + command_points(kind),
                                  word_order=_word_order(kind))
            for unit, (name, kind) in self.units.items()
        }
        self._rng = random.Random(seed)  # noqa: S311 - simulated noise, not secrets
        self._points: dict[str, tuple[int, ModbusPoint, PointCodec]] = {}
        self._images: dict[tuple[int, str], list[int]] = {}  # bits as 0 / 1
        self._writable: dict[tuple[int, str], set[int]] = {}
        for unit, d in self.devices.items():
            for table in ("coil", "discrete", "holding", "input"):
                size = max((p.address + p.size for p in d.points if p.table == table), default=1)
                self._images[unit, table] = [0] * size
                self._writable[unit, table] = {
                    a for p in d.points if p.table == table and p.writable
                    for a in range(p.address, p.address + p.size)
                }
            for p in d.points:
                self._points[f"{d.name}.{p.name}"] = (unit, p, codec_for(d, p))
        self._energy = {unit: 12345.6 + 1000 * k for k, unit in enumerate(self.units)}
        self._reads = dict.fromkeys(self.units, 0)
        self._last_t = 0.0
        self.reset()
        self.update(0.0)

    # -- what clients see -------------------------------------------------------------

    def names(self) -> list[str]:
        """Every point, as "<device>.<point>"."""
        return list(self._points)

    def box_names(self) -> list[str]:
        """The points of the Box's configuration (without `command_points`)."""
        return [f"{name}.{p.name}" for name, kind in self.units.values() for p in box_points(kind, self.counters)]

    def box_points(self, unit: int) -> list[tuple[str, ModbusPoint]]:
        """("<device>.<point>", point) of a unit's points in the Box's configuration (KeyError: no such unit)."""
        name, kind = self.units[unit]
        return [(f"{name}.{p.name}", p) for p in box_points(kind, self.counters)]

    def count_read(self, unit: int, function_code: int, address: int, count: int) -> None:
        """A read of `count` registers from `address` is being answered: move the unit's
        "reads" counter on if the read covers it (nothing without `counters`)."""
        if not self.counters or _FC_TABLE.get(function_code) != "input" or unit not in self.units:
            return
        name, kind = self.units[unit]
        at = counter_point(kind).address
        if address <= at and at + 2 <= address + count:
            self._reads[unit] += 1
            self._put(f"{name}.reads", self._reads[unit])

    def value(self, name: str) -> Value:
        """The value a client reads now, decoded from the registers it would get.

        Raises:
            KeyError: no such point.
        """
        unit, p, codec = self._points[name]
        image = self._images[unit, p.table]
        if p.table in BIT_TABLES:
            return bool(image[p.address])
        return codec.decode_registers(image[p.address : p.address + p.size])

    def registers(self, unit: int, function_code: int) -> list[int]:
        """A table's image as pymodbus's simulator stores it (bits packed 16 to a register).

        Raises:
            KeyError: unknown unit or function code.
        """
        table = _FC_TABLE[function_code]
        image = self._images[unit, table]
        if table in BIT_TABLES:
            return _pack_bits(image)
        return list(image)

    def read(self, unit: int, table: Table, address: int, count: int) -> list[int] | None:
        """`count` registers (or 0/1 bits) from `address`; None if any is outside the image."""
        image = self._images.get((unit, table))
        if image is None or count < 1 or address + count > len(image):
            return None
        return image[address : address + count]

    def write(
        self, unit: int, function_code: int, address: int, values: Sequence[int] | Sequence[bool]
    ) -> bool:
        """Apply a client's write if it only touches writable points; False if refused."""
        table = _FC_TABLE.get(function_code)
        if table is None or unit not in self.devices:
            return False
        allowed = self._writable[unit, table]
        if not all(a in allowed for a in range(address, address + len(values))):
            return False
        image = self._images[unit, table]
        for i, v in enumerate(values):
            image[address + i] = int(v)
        return True

    def reset(self, unit: int | None = None) -> None:
        """Writable points back to their defaults (all units, or one): a device restart."""
        for u, (name, kind) in self.units.items():
            if unit is None or u == unit:
                for point, value in _DEFAULTS[kind].items():
                    self._put(f"{name}.{point}", value)

    # -- the model --------------------------------------------------------------------

    def _put(self, name: str, value: Value) -> None:
        unit, p, codec = self._points[name]
        image = self._images[unit, p.table]
        if p.table in BIT_TABLES:
            image[p.address] = int(bool(value))
            return
        image[p.address : p.address + p.size] = codec.encode(value)

    def _noise(self, sigma: float) -> float:
        return self._rng.gauss(0.0, sigma)

    def update(self, t: float) -> None:
        """Move every driven point to its value at `t` seconds after the start."""
        dt = max(0.0, t - self._last_t)
        self._last_t = t
        for unit, (name, kind) in self.units.items():
            phase = 0.7 * unit
            if kind == "ahu":
                values = self._ahu(name, t)
            elif kind == "meter":
                values = self._meter(unit, t, dt, phase)
            else:
                values = self._room(name, t, phase)
            for point, value in values.items():
                self._put(f"{name}.{point}", value)

    def _ahu(self, name: str, t: float) -> dict[str, Value]:
        def wave(period_s: float, phase: float = 0.0) -> float:
            return math.sin(2 * math.pi * t / period_s + phase)

        setpoint = self.value(f"{name}.supply_setpoint")
        assert isinstance(setpoint, float)
        running = bool(self.value(f"{name}.fan_running"))
        filter_alarm = (t // 300) % 4 == 3
        return {
            "supply_temp": setpoint + 0.4 * wave(120) + self._noise(0.05),
            "return_temp": 22.5 + 0.8 * wave(600, 1.0) + self._noise(0.05),
            "outdoor_temp": 8.0 + 5.0 * wave(900) + self._noise(0.05),
            "fan_speed": 60.0 + 15.0 * wave(300) if running else 0.0,
            "status_word": int(running) | (2 if filter_alarm else 0),
            "damper_position": 30.0 + 20.0 * wave(450),
            "filter_alarm": filter_alarm,
        }

    def _meter(self, unit: int, t: float, dt: float, phase: float) -> dict[str, Value]:
        def wave(period_s: float, shift: float = 0.0) -> float:
            return math.sin(2 * math.pi * t / period_s + shift + phase)

        volts = [230.0 + 2.0 * wave(60, k) + self._noise(0.1) for k in (0.0, 2.1, 4.2)]
        amps = 12.0 + 4.0 * wave(200) + self._noise(0.05)
        pf = 0.95 + 0.02 * wave(500)
        kw = sum(volts) * amps * pf / 1000.0
        self._energy[unit] += kw * dt / 3600.0
        energy = self._energy[unit]
        return {
            "voltage_l1": volts[0], "voltage_l2": volts[1], "voltage_l3": volts[2],
            "current": amps, "active_power": kw, "energy_counter": int(energy),
            "energy": energy, "power_factor": pf,
        }

    def _room(self, name: str, t: float, phase: float) -> dict[str, Value]:
        def wave(period_s: float) -> float:
            return math.sin(2 * math.pi * t / period_s + phase)

        setpoint = self.value(f"{name}.setpoint")
        assert isinstance(setpoint, float)
        return {
            "room_temp": setpoint + 0.5 + 0.8 * wave(400) + self._noise(0.05),
            "humidity": 45.0 + 5.0 * wave(700),
            "co2": 450.0 + 150.0 * (1 + wave(800)),
            "occupancy": (t // 60) % 2 == 0,
        }
