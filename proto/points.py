"""What a point is on the wire: its row in the point table, its value, and why it may lack one.

`Quality` codes travel in batches (a group's faults) and in command replies; `PointInfo` is a
row of the point table a Box publishes; `Value` is what a sample holds. The drivers produce
them (`drivers` re-exports them) and the cloud stores them: one definition for both sides.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

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

    name: str  # unique within the Box, "<device>.<point>" (`proto.names.POINT`), e.g. "ahu1.supply_temp"
    unit: str  # e.g. "degC", "kWh", "" when dimensionless
    kind: str  # the point's configured data type, e.g. "float32", "bool"
