"""The simulated BACnet building controller: its objects and their values over time (pure).

No sockets, no bacpypes3: `OBJECTS` is the point list of one AHU / room controller
(the server in `drivers.sim.bacnet_building` turns it into BACnet objects), and
`BuildingModel.values(t)` gives the driven values at `t` seconds after the start
(sine drift plus noise), following the setpoints a client commanded.

Objects: analog inputs with units (temperatures, humidity, CO2, fan speed, and
`zones` zone temperatures that make the object list long enough to need segmented
answers), commandable analog values (setpoints) with a priority array and a
relinquish default, binary inputs, a commandable binary value, a commandable
multi-state value (operating mode) and a multi-state input.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Final

Key = tuple[str, int]  # (object type, instance)


@dataclass(frozen=True, slots=True)
class ObjectSpec:
    """One object of the simulated device."""

    type: str
    instance: int
    name: str
    description: str
    initial: float | int | bool
    units: str | None = None  # BACnet engineering-units name, e.g. "degrees-celsius"
    commandable: bool = False  # has a priority array; present-value writable by clients
    cov_increment: float | None = None
    states: tuple[str, ...] = ()  # multi-state: state texts

    @property
    def key(self) -> Key:
        """(type, instance)."""
        return (self.type, self.instance)

    @property
    def ref(self) -> str:
        """ "analog-input,1"."""
        return f"{self.type},{self.instance}"


MODES: Final = ("off", "comfort", "economy")

OBJECTS: Final[tuple[ObjectSpec, ...]] = (
    ObjectSpec("analog-input", 1, "supply-temp", "Supply air temperature", 18.0, "degrees-celsius", cov_increment=0.1),
    ObjectSpec("analog-input", 2, "return-temp", "Return air temperature", 22.5, "degrees-celsius", cov_increment=0.1),
    ObjectSpec("analog-input", 3, "outdoor-temp", "Outdoor air temperature", 8.0, "degrees-celsius", cov_increment=0.2),
    ObjectSpec("analog-input", 4, "room-temp", "Room temperature", 21.5, "degrees-celsius", cov_increment=0.1),
    ObjectSpec("analog-input", 5, "room-humidity", "Room relative humidity", 45.0, "percent-relative-humidity",
               cov_increment=1.0),
    ObjectSpec("analog-input", 6, "room-co2", "Room CO2 concentration", 600.0, "parts-per-million",
               cov_increment=25.0),
    ObjectSpec("analog-input", 7, "fan-speed", "Supply fan speed", 60.0, "percent", cov_increment=1.0),
    ObjectSpec("analog-value", 1, "supply-setpoint", "Supply air setpoint", 18.0, "degrees-celsius",
               commandable=True, cov_increment=0.1),
    ObjectSpec("analog-value", 2, "room-setpoint", "Room temperature setpoint", 21.0, "degrees-celsius",
               commandable=True, cov_increment=0.1),
    ObjectSpec("binary-input", 1, "fan-status", "Supply fan running", True),
    ObjectSpec("binary-input", 2, "filter-alarm", "Filter differential pressure alarm", False),
    ObjectSpec("binary-value", 1, "fan-enable", "Supply fan enable command", True, commandable=True),
    ObjectSpec("multi-state-value", 1, "operating-mode", "Operating mode", 2, commandable=True, states=MODES),
    ObjectSpec("multi-state-input", 1, "occupancy", "Occupancy sensor state", 1,
               states=("unoccupied", "occupied", "standby")),
)


def zone_objects(zones: int) -> tuple[ObjectSpec, ...]:
    """`zones` zone temperature inputs, analog-input 101.. (a long object list)."""
    return tuple(
        ObjectSpec("analog-input", 100 + z, f"zone-{z:02d}-temp", f"Zone {z} temperature", 21.0,
                   "degrees-celsius", cov_increment=0.1)
        for z in range(1, zones + 1)
    )


def all_objects(zones: int) -> tuple[ObjectSpec, ...]:
    """The device's objects (without the device object)."""
    return OBJECTS + zone_objects(zones)


class BuildingModel:
    """Moves the driven values; commandable objects are what clients make them."""

    def __init__(self, zones: int = 0, seed: int = 0) -> None:
        self.zones = zones
        self._rng = random.Random(seed)  # noqa: S311 - simulated noise, not secrets

    def _noise(self, sigma: float) -> float:
        return self._rng.gauss(0.0, sigma)

    def values(self, t: float, commanded: dict[Key, float | int | bool]) -> dict[Key, float | int | bool]:
        """The driven objects' present values at `t`, given the commanded ones."""
        def wave(period_s: float, phase: float = 0.0) -> float:
            return math.sin(2 * math.pi * t / period_s + phase)

        supply_sp = float(commanded.get(("analog-value", 1), 18.0))
        room_sp = float(commanded.get(("analog-value", 2), 21.0))
        fan_on = bool(commanded.get(("binary-value", 1), True))
        mode = int(commanded.get(("multi-state-value", 1), 2))
        running = fan_on and mode != 1
        room = room_sp + 0.5 + 0.8 * wave(400) + self._noise(0.05)
        out: dict[Key, float | int | bool] = {
            ("analog-input", 1): supply_sp + 0.4 * wave(120) + self._noise(0.05),
            ("analog-input", 2): 22.5 + 0.8 * wave(600, 1.0) + self._noise(0.05),
            ("analog-input", 3): 8.0 + 5.0 * wave(900) + self._noise(0.05),
            ("analog-input", 4): room,
            ("analog-input", 5): 45.0 + 5.0 * wave(700),
            ("analog-input", 6): 450.0 + 150.0 * (1 + wave(800)),
            ("analog-input", 7): (60.0 + 15.0 * wave(300)) if running else 0.0,
            ("binary-input", 1): running,
            ("binary-input", 2): (t // 300) % 4 == 3,
            ("multi-state-input", 1): 2 if (t // 60) % 2 == 0 else 1,
        }
        for z in range(1, self.zones + 1):
            out["analog-input", 100 + z] = room - 1.0 + 0.1 * z + 0.3 * wave(500, z) + self._noise(0.02)
        return out
