"""Values that cross the boundary between the field-bus drivers and the daemon.

Drivers turn bus traffic into `Sample` values; the daemon never sees a pymodbus,
bacpypes3 or pyserial object. This module holds data only, no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

Value = bool | int | float | str | None


class Quality(enum.IntEnum):
    """Why a sample has (or lacks) a value; 0 is good, the rest say whose fault."""

    GOOD = 0
    NO_ANSWER = 1  # the device did not answer in time
    DEVICE_EXCEPTION = 2  # the device answered with a Modbus/BACnet error
    BAD_FRAME = 3  # the answer was garbled (CRC, length, framing)
    DECODE_ERROR = 4  # the answer was well formed but could not be decoded to the point's type
    NOT_CONNECTED = 5  # no link to the device (TCP refused, serial port missing)


@dataclass(frozen=True, slots=True)
class PointInfo:
    """What the cloud needs to know about a point: its name, unit and type."""

    name: str  # unique within the Box, "<device>.<point>", e.g. "ahu1.supply_temp"
    unit: str  # e.g. "degC", "kWh", "" when dimensionless
    kind: str  # the point's configured data type, e.g. "float32", "bool"


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of one point."""

    point: str
    ts_ms: int  # wall-clock time of the reading, milliseconds since the epoch
    value: Value
    quality: Quality = Quality.GOOD


class PointSource(Protocol):
    """A device (or a bus) whose points the daemon polls.

    Constructors do no I/O; `start()` opens the link, `stop()` closes it. `read()`
    never raises for a device fault: it returns samples whose quality says what went
    wrong, so one failing device cannot stall the others.
    """

    name: str
    poll_interval_s: float

    def points(self) -> Sequence[PointInfo]: ...

    async def start(self) -> None: ...

    async def read(self) -> list[Sample]: ...

    async def stop(self) -> None: ...
