"""The simulated building: its devices' point lists, their values over time, their registers.

Pure code (no sockets, no pymodbus): `building_devices` is the layout (the same
`ModbusTcpDevice` values a Box gets from `building_points_toml`), `BuildingState`
holds the register images that the server in `modbus_building` serves and moves the
values on (sine drift plus noise, an energy counter that only grows).

Units: 1 "ahu1" an air-handling unit, 2 "meter1" a three-phase energy meter (word
order little, as many meters have), 3 "room1" a room controller. Writable points
(``ahu1.supply_setpoint``, ``room1.setpoint``) keep what a client writes; every
other point is driven by the model. Bits of a status register are not driven
themselves: they read the register the model writes.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from typing import Final

from drivers._types import Value
from drivers.modbus._codec import DataType, Order, PointCodec
from drivers.modbus._config import BIT_TABLES, ModbusPoint, ModbusTcpDevice, Table, codec_for

UNITS: Final[dict[int, str]] = {1: "ahu1", 2: "meter1", 3: "room1"}
WRITABLE: Final = frozenset({"ahu1.supply_setpoint", "room1.setpoint"})
_FC_TABLE: Final[dict[int, str]] = {
    1: "coil", 5: "coil", 15: "coil", 2: "discrete",
    3: "holding", 6: "holding", 16: "holding", 22: "holding", 23: "holding", 4: "input",
}


def _p(
    name: str,
    table: Table,
    address: int,
    kind: DataType,
    unit: str = "",
    *,
    scale: float = 1.0,
    bit: int | None = None,
    length: int | None = None,
    byte_order: Order | None = None,
    word_order: Order | None = None,
) -> ModbusPoint:
    return ModbusPoint(
        name=name, table=table, address=address, type=kind, unit=unit, scale=scale, bit=bit,
        length=length, byte_order=byte_order, word_order=word_order,
    )


def building_devices(
    host: str, port: int, poll_interval_s: float = 1.0
) -> tuple[ModbusTcpDevice, ...]:
    """The three simulated devices, as a Box configured against `host`:`port` sees them."""
    ahu = (
        _p("supply_temp", "input", 0, "float32", "degC"),
        _p("return_temp", "input", 2, "float32", "degC"),
        _p("outdoor_temp", "input", 4, "float32", "degC"),
        _p("fan_speed", "input", 6, "uint16", "%", scale=0.1),
        _p("status_word", "input", 7, "uint16"),
        _p("status_fan", "input", 7, "bool", bit=0),
        _p("status_filter", "input", 7, "bool", bit=1),
        _p("damper_position", "holding", 0, "uint16", "%"),
        _p("supply_setpoint", "holding", 8, "float32", "degC"),
        _p("model", "holding", 100, "string", length=8),
        _p("fan_running", "coil", 0, "bool"),
        _p("filter_alarm", "discrete", 0, "bool"),
    )
    meter = (
        _p("voltage_l1", "input", 0, "float32", "V"),
        _p("voltage_l2", "input", 2, "float32", "V"),
        _p("voltage_l3", "input", 4, "float32", "V"),
        _p("current", "input", 6, "float32", "A"),
        _p("active_power", "input", 8, "float32", "kW"),
        _p("energy_counter", "input", 10, "uint32", "kWh", word_order="big"),
        _p("energy", "input", 12, "float64", "kWh"),
        _p("power_factor", "input", 16, "int16", scale=0.001),
    )
    room = (
        _p("room_temp", "holding", 0, "int16", "degC", scale=0.1),
        _p("humidity", "holding", 1, "uint16", "%RH", scale=0.1),
        _p("setpoint", "holding", 2, "int16", "degC", scale=0.1),
        _p("co2", "holding", 3, "uint16", "ppm", byte_order="little"),
        _p("occupancy", "discrete", 0, "bool"),
    )
    def device(name: str, unit_id: int, points: tuple[ModbusPoint, ...]) -> ModbusTcpDevice:
        return ModbusTcpDevice(
            name=name, host=host, port=port, unit_id=unit_id, poll_interval_s=poll_interval_s,
            points=points, word_order="little" if name == "meter1" else "big",
        )

    return (device("ahu1", 1, ahu), device("meter1", 2, meter), device("room1", 3, room))


def building_points_toml(host: str, port: int, poll_interval_s: float = 1.0) -> str:
    """The ``[[modbus_tcp]]`` tables of the three devices, for a Box's configuration file."""
    defaults = ModbusPoint(name="x", address=0)
    lines: list[str] = []
    for d in building_devices(host, port, poll_interval_s):
        lines += [
            f"# unit {d.unit_id} of the simulated building",
            "[[modbus_tcp]]",
            f"name = {json.dumps(d.name)}",
            f"host = {json.dumps(d.host)}",
            f"port = {d.port}",
            f"unit_id = {d.unit_id}",
            f"poll_interval_s = {d.poll_interval_s!r}",
        ]
        if d.word_order != "big":
            lines.append(f"word_order = {json.dumps(d.word_order)}")
        if d.byte_order != "big":
            lines.append(f"byte_order = {json.dumps(d.byte_order)}")
        for p in d.points:
            lines += ["", "[[modbus_tcp.points]]", f"name = {json.dumps(p.name)}"]
            lines += [f"table = {json.dumps(p.table)}", f"address = {p.address}"]
            lines.append(f"type = {json.dumps(p.type)}")
            for key in ("unit", "scale", "offset", "byte_order", "word_order", "bit", "length"):
                value = getattr(p, key)
                if value != getattr(defaults, key):
                    shown = json.dumps(value) if isinstance(value, str) else repr(value)
                    lines.append(f"{key} = {shown}")
        lines.append("")
    return "\n".join(lines)


def _pack_bits(bits: Sequence[int]) -> list[int]:
    """Bits to 16-bit registers, lowest address in bit 0 (pymodbus's simulator layout)."""
    out = [0] * ((len(bits) + 15) // 16)
    for i, bit in enumerate(bits):
        if bit:
            out[i // 16] |= 1 << (i % 16)
    return out


class BuildingState:
    """The register images of the three units and the model that moves them."""

    def __init__(self, seed: int = 0) -> None:
        self.devices = {d.unit_id: d for d in building_devices("127.0.0.1", 502)}
        self._rng = random.Random(seed)  # noqa: S311 - simulated noise, not secrets
        self._points: dict[str, tuple[int, ModbusPoint, PointCodec]] = {}
        self._images: dict[tuple[int, str], list[int]] = {}  # bits as 0 / 1
        for unit, d in self.devices.items():
            for table in ("coil", "discrete", "holding", "input"):
                size = max((p.address + p.size for p in d.points if p.table == table), default=1)
                self._images[unit, table] = [0] * size
            for p in d.points:
                self._points[f"{d.name}.{p.name}"] = (unit, p, codec_for(d, p))
        self._energy = 12345.6
        self._last_t = 0.0
        self._put("ahu1.supply_setpoint", 18.0)
        self._put("room1.setpoint", 21.0)
        self._put("ahu1.model", "AHU-3000")
        self.update(0.0)

    # -- what clients see -------------------------------------------------------------

    def names(self) -> list[str]:
        """Every point, as "<device>.<point>"."""
        return list(self._points)

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

    def write(
        self, unit: int, function_code: int, address: int, values: Sequence[int] | Sequence[bool]
    ) -> bool:
        """Apply a client's write if it only touches writable points; False if refused."""
        table = _FC_TABLE.get(function_code)
        device = self.devices.get(unit)
        if table is None or device is None:
            return False
        allowed: set[int] = set()
        for p in device.points:
            if p.table == table and f"{device.name}.{p.name}" in WRITABLE:
                allowed.update(range(p.address, p.address + p.size))
        if not all(a in allowed for a in range(address, address + len(values))):
            return False
        image = self._images[unit, table]
        for i, v in enumerate(values):
            image[address + i] = int(v)
        return True

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
        def wave(period_s: float, phase: float = 0.0) -> float:
            return math.sin(2 * math.pi * t / period_s + phase)

        setpoint = self.value("ahu1.supply_setpoint")
        assert isinstance(setpoint, float)
        filter_alarm = (t // 300) % 4 == 3
        values: dict[str, Value] = {
            "ahu1.supply_temp": setpoint + 0.4 * wave(120) + self._noise(0.05),
            "ahu1.return_temp": 22.5 + 0.8 * wave(600, 1.0) + self._noise(0.05),
            "ahu1.outdoor_temp": 8.0 + 5.0 * wave(900) + self._noise(0.05),
            "ahu1.fan_speed": 60.0 + 15.0 * wave(300),
            "ahu1.status_word": 1 | (2 if filter_alarm else 0),
            "ahu1.damper_position": 30.0 + 20.0 * wave(450),
            "ahu1.fan_running": True,
            "ahu1.filter_alarm": filter_alarm,
        }
        volts = [230.0 + 2.0 * wave(60, k) + self._noise(0.1) for k in (0.0, 2.1, 4.2)]
        amps = 12.0 + 4.0 * wave(200) + self._noise(0.05)
        pf = 0.95 + 0.02 * wave(500)
        kw = sum(volts) * amps * pf / 1000.0
        self._energy += kw * max(0.0, t - self._last_t) / 3600.0
        self._last_t = t
        values.update({
            "meter1.voltage_l1": volts[0], "meter1.voltage_l2": volts[1],
            "meter1.voltage_l3": volts[2], "meter1.current": amps,
            "meter1.active_power": kw, "meter1.energy_counter": int(self._energy),
            "meter1.energy": self._energy, "meter1.power_factor": pf,
        })
        room_setpoint = self.value("room1.setpoint")
        assert isinstance(room_setpoint, float)
        values.update({
            "room1.room_temp": room_setpoint + 0.5 + 0.8 * wave(400) + self._noise(0.05),
            "room1.humidity": 45.0 + 5.0 * wave(700),
            "room1.co2": 450.0 + 150.0 * (1 + wave(800)),
            "room1.occupancy": (t // 60) % 2 == 0,
        })
        for name, value in values.items():
            self._put(name, value)
