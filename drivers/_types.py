"""Values that cross the boundary between the field-bus drivers and the daemon.

Drivers turn bus traffic into `Sample` values; the daemon never sees a pymodbus,
bacpypes3 or pyserial object. A point's row in the table, its value and its `Quality` are the
wire's (`proto.points`), re-exported here. This module holds data only, no I/O.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from proto.points import PointInfo, Quality, Value

__all__ = ["Emit", "PointInfo", "PointSource", "Quality", "Sample", "Value"]

@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of one point."""

    point: str
    ts_ms: int  # wall-clock time of the reading, milliseconds since the epoch
    value: Value
    quality: Quality = Quality.GOOD


Emit = Callable[[Sequence[Sample]], Awaitable[None]]
"""Where a bus hands its readings. Awaited: it returns once the readings are safe (the daemon's
queue has them on disk), and only then may the bus send its next request or acknowledge a
notification: a reading acknowledged to a bus is never lost. It does not hold up the other buses."""


class PointSource(Protocol):
    """A bus whose points the daemon receives: one Modbus TCP device, one serial line with
    its devices, one BACnet/IP network.

    The constructor does no I/O. `run()` owns the bus: it opens it, polls on its own
    schedule (per-point intervals, staggered devices), takes COV notifications where
    the bus has them, hands every reading to `emit` as soon as it has it, and closes
    the bus when cancelled. It never raises for a device fault: the samples' quality
    says what went wrong, for the affected points only, so one failing device cannot
    stall the others. `emit` is awaited from the source's own tasks, before the next request
    to the device it read (and before a confirmed notification is acknowledged).
    """

    name: str

    def points(self) -> Sequence[PointInfo]:
        """Every point of the bus, in a stable order (it defines their indexes on the wire)."""
        ...

    async def run(self, emit: Emit) -> None:
        """Poll (and listen) until cancelled."""
        ...

    async def read_now(self, points: Sequence[str]) -> list[Sample]:
        """Read these points at once, ahead of the schedule (while `run()` goes on).

        Raises:
            UnknownPointError: a name is not a point of this bus.
        """
        ...

    def check_write(self, point: str, value: Value, priority: int | None = None) -> None:
        """Whether `write` would take this value: the one check of a write, by the bus that
        knows its points (writable, kind, bounds, priorities). Nothing is sent.

        Raises:
            UnknownPointError: not a point of this bus.
            WriteRefusedError: the write is refused; the message says why.
        """
        ...

    async def write(self, point: str, value: Value, priority: int | None = None) -> None:
        """Write a value to a writable point (queued ahead of polls). `value=None` with a
        `priority` relinquishes that priority (BACnet). Checks first, as `check_write` does.

        Raises:
            UnknownPointError: not a point of this bus.
            WriteRefusedError: as `check_write` (nothing was sent).
            WriteError: the device refused or did not answer; the message says which.
        """
        ...

    def stats(self) -> Mapping[str, int]:
        """Counters for health reports and benchmarks: at least "requests" (bus requests
        sent), "errors" (requests that failed) and "cycles" (poll cycles completed)."""
        ...
