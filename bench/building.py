"""A building's points over time, for the benchmarks: the "building" trace beside the counter workload.

Pure code (no sockets): `BuildingTrace(points, seed)` gives each point of a `bench.workload`
device a behaviour, and `value(point, t)` its reading at wall-clock time `t` (seconds). The farm
(`bench.farm --workload building`) serves these readings over Modbus TCP; the layout and the Box's
configuration are the counter workload's, so only the values differ.

No public dataset of building point trends can be had here (only package registries: the PyPI
names of building datasets, e.g. BuildingsBench, download their data at run time), so this is a
documented model. Its behaviours, per point of a 100-point controller (docs/performance.md has
the table and the sources of the figures):

- uint16 (40 %): the probe (input register 0, a counter of reads: the benchmark's latency probe
  and poll clock, 1 point in 100); energy meter registers (20 %) that step by one count (0.1 kWh)
  at random (Poisson) moments, a load of 3-36 kW, i.e. every 10-120 s; setpoints in tenths of a
  degree (10 %) that move 4 times a day; operating modes (10 %, 0-3) that change 3 times a day;
- int16 (20 %): temperatures in tenths of a degree: room sensors (21.5 °C, a daily swing of
  +-1 °C) and supply or outdoor sensors (12 °C, +-4 °C), with sensor noise (sd 0.01 °C room,
  0.02 °C supply, a filtered thermistor's) before the 0.1 °C resolution, so the last digit
  flickers while the true value is near a step;
- float32 (20 %): electric power in kW (5 %: a base load of 5-50 kW with 1 % noise, to 0.01 kW:
  it changes at nearly every read, as a meter's power reading does); relative humidity in %RH
  (10 %: 45 % +-5 % a day, sd 0.02, to 0.1 %RH); duct pressure in Pa (5 %: 250 Pa +-20, sd 0.2,
  to 1 Pa);
- coils (20 %): on/off states of fans and pumps (15 %) that switch 6 times a day; alarms (5 %) that
  rise once in 3 days on average and clear after 10 minutes.

Poisson events are drawn from a seeded generator as time passes (each point its own), noise at
each read; the daily swing follows the wall clock (`t` mod 86,400). A read never changes a value
by itself (unlike the counter workload), except the probe's count.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Final

from drivers.modbus._config import ModbusPoint

DAY: Final = 86_400.0
Reading = int | float | bool


@dataclass(slots=True)
class _Point:
    kind: str
    value: float  # a level (setpoint, mode, meter count, state) or the mean of a measurement
    swing: float = 0.0  # daily amplitude of a measurement
    noise: float = 0.0  # sensor noise, standard deviation
    step: float = 1.0  # the resolution a measurement is read at
    phase: float = 0.0  # of the daily swing, radians
    rate: float = 0.0  # Poisson events per second
    next_event: float = math.inf
    until: float = math.inf  # an alarm's end


# (kind, events a day) of the uint16 points but the probe, by index mod 4; of the coils by index mod 4
_UINT16: Final = ("meter", "meter", "setpoint", "mode")
_COILS: Final = ("alarm", "state", "state", "state")
_FLOATS: Final = ("power", "humidity", "humidity", "pressure")
_PER_DAY: Final = {"setpoint": 4.0, "mode": 3.0, "state": 6.0, "alarm": 1 / 3}
ALARM_S: Final = 600.0


class BuildingTrace:
    """Every point's behaviour; `value` moves a point to time `t` and reads it (t never goes back)."""

    def __init__(self, points: tuple[ModbusPoint, ...], seed: int, now: float) -> None:
        self._rng = rng = random.Random(seed)
        self._points: dict[tuple[str, int], _Point] = {}
        for n, p in enumerate(points):
            self._points[(p.table, p.address)] = self._make(p, n, rng, now)

    @staticmethod
    def _make(p: ModbusPoint, n: int, rng: random.Random, now: float) -> _Point:
        phase = rng.uniform(0, 2 * math.pi)
        if p.table == "input" and p.address == 0:
            return _Point("probe", 0)
        if p.type == "uint16":
            kind = _UINT16[n % 4]
            if kind == "meter":  # 0.1 kWh a count at 3-36 kW: a count every 10-120 s
                pt = _Point(kind, rng.randrange(0, 60000), rate=rng.uniform(3, 36) / 360)
            elif kind == "setpoint":
                pt = _Point(kind, rng.choice((190, 200, 210, 215, 220, 230)))
            else:
                pt = _Point(kind, rng.randrange(4))
        elif p.type == "int16":
            room = n % 3 != 0
            pt = _Point("temperature", 21.5 if room else 12.0, swing=1.0 if room else 4.0,
                        noise=0.01 if room else 0.02, step=0.1, phase=phase)
        elif p.type == "float32":
            kind = _FLOATS[n % 4]
            if kind == "power":
                base = rng.uniform(5, 50)
                pt = _Point(kind, base, swing=0.2 * base, noise=0.01 * base, step=0.01, phase=phase)
            elif kind == "humidity":
                pt = _Point(kind, 45.0, swing=5.0, noise=0.02, step=0.1, phase=phase)
            else:
                pt = _Point(kind, 250.0, swing=20.0, noise=0.2, step=1.0, phase=phase)
        else:
            kind = _COILS[n % 4]
            pt = _Point(kind, 0.0 if kind == "alarm" else float(rng.randrange(2)))
        if pt.kind in _PER_DAY:
            pt.rate = _PER_DAY[pt.kind] / DAY
        if pt.rate:
            pt.next_event = now + rng.expovariate(pt.rate)
        return pt

    def value(self, table: str, address: int, t: float) -> Reading:
        """The reading of the point at (table, address) at time `t`."""
        pt = self._points[(table, address)]
        rng = self._rng
        if pt.kind == "probe":
            pt.value += 1
            return int(pt.value)
        while t >= pt.next_event:
            self._event(pt, pt.next_event)
            pt.next_event += rng.expovariate(pt.rate)
        if pt.kind == "alarm" and t >= pt.until:
            pt.value, pt.until = 0.0, math.inf
        if pt.step == 1.0 and not pt.noise:  # a level
            return bool(pt.value) if table == "coil" else int(pt.value)
        mean = pt.value + pt.swing * math.sin(2 * math.pi * (t % DAY) / DAY + pt.phase)
        reading = round((mean + rng.gauss(0, pt.noise)) / pt.step) * pt.step
        return round(reading * 10) if table == "input" else reading

    def _event(self, pt: _Point, at: float) -> None:
        rng = self._rng
        if pt.kind == "meter":
            pt.value = (pt.value + 1) % 65536
        elif pt.kind == "setpoint":
            pt.value = rng.choice([v for v in (190, 200, 210, 215, 220, 230) if v != pt.value])
        elif pt.kind == "mode":
            pt.value = rng.choice([v for v in range(4) if v != pt.value])
        elif pt.kind == "state":
            pt.value = 1.0 - pt.value
        elif pt.kind == "alarm":
            pt.value, pt.until = 1.0, at + ALARM_S
