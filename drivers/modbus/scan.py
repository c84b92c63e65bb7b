"""Scanning primitives for installers: which units answer, which registers they have.

Does: `probe_units` tries a cheap read (one holding register at address 0) on each unit
id and keeps those that answer, an exception answer included ("present, but no such
register"); `scan_registers` reads a table of one unit in blocks (the protocol's
limit) and narrows a refused or unanswered block down by halves, so that it ends
with every address that answers and its raw value; `suggest_points` makes a naive
uint16 (or bool) point per address found, named the Modicon way (``hr_40001``,
``ir_30001``, ``co_00001``, ``di_10001``); `points_to_toml` exports points for the
Box's configuration. Errors are `ScanError` in the installer's words: a serial port
that is missing or busy, a connection refused, no unit answering at all while the
line carries bytes (wrong baud rate or parity suspected). Does not: keep anything
open between calls, run concurrently with a bus on the same port (stop boxd first:
the serial port is opened exclusively), or guess types beyond uint16.

Each call opens its own link, one request in flight, and closes it. ``on_progress``
is called after each step with (done, total): unit ids probed, or addresses settled.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from drivers._types import Quality
from drivers.errors import ScanError
from drivers.modbus._codec import DataType
from drivers.modbus._config import BIT_TABLES, ModbusPoint, Parity, Table
from drivers.modbus._device import Outcome
from drivers.modbus._link import Link, RtuLink, TcpLink
from drivers.modbus._plan import MAX_BITS, MAX_REGISTERS
from drivers.modbus._toml import point_lines

Progress = Callable[[int, int], None]
_ABSENT_CODES: Final = frozenset({10, 11})  # a gateway's "no path" / "target did not answer"
_PREFIX: Final[dict[str, tuple[str, int, int]]] = {  # name prefix, 5-digit base, 6-digit base
    "holding": ("hr", 40001, 400001), "input": ("ir", 30001, 300001),
    "coil": ("co", 1, 1), "discrete": ("di", 10001, 100001),
}


@dataclass(frozen=True, slots=True)
class TcpTarget:
    """A Modbus TCP server (a device or a gateway) to scan."""

    host: str
    port: int = 502
    timeout_s: float = 1.0


@dataclass(frozen=True, slots=True)
class RtuTarget:
    """A serial line to scan, with the settings to try."""

    port: str
    baudrate: int = 9600
    parity: Parity = "N"
    stopbits: int = 1
    bytesize: int = 8
    timeout_s: float = 0.5


Target = TcpTarget | RtuTarget


def _link_for(target: Target) -> Link:
    if isinstance(target, TcpTarget):
        return TcpLink(target.host, target.port, "scan")
    return RtuLink(target.port, baudrate=target.baudrate, parity=target.parity,
                   stopbits=target.stopbits, bytesize=target.bytesize, name="scan")


async def _open(link: Link, target: Target) -> None:
    if not await link.open(target.timeout_s):
        raise ScanError(link.last_error)


def _units(ids: Sequence[int]) -> str:
    if len(ids) == 1:
        return f"unit {ids[0]}"
    if list(ids) == list(range(ids[0], ids[0] + len(ids))):
        return f"units {ids[0]}..{ids[-1]}"
    return f"any of {len(ids)} units"


def _silent(link: Link, target: Target, ids: Sequence[int], garbled: bool) -> ScanError:
    where = f"no answer from {_units(ids)} on {link.describe}"
    if isinstance(target, RtuTarget) and (garbled or link.saw_bytes):
        return ScanError(f"{where}: wrong baud rate or parity suspected (the line carries bytes "
                         "that are not Modbus frames)")
    if isinstance(target, RtuTarget):
        return ScanError(f"{where}: nothing on the line; check the wiring (A/B swapped?), "
                         "termination, power and the unit ids")
    return ScanError(f"{where}: the connection is open, but nothing answers for that unit id")


def _lost(link: Link, outcome: Outcome) -> ScanError:
    return ScanError(f"lost {link.describe}: {outcome.detail or 'connection closed'}")


async def probe_units(
    target: Target, unit_ids: Iterable[int], *, on_progress: Progress | None = None
) -> list[int]:
    """The unit ids that answer a one-register read, in the order tried.

    Raises:
        ScanError: the link cannot open or is lost; or, on a serial line, no unit answers
            but the line carries bytes (wrong baud rate or parity suspected).
        ValueError: a unit id outside 0..247.
    """
    ids = list(unit_ids)
    if any(not 0 <= u <= 247 for u in ids):
        raise ValueError("unit ids are 0..247")
    link = _link_for(target)
    try:
        await _open(link, target)
        link.saw_bytes = False
        found: list[int] = []
        garbled = False
        for n, unit in enumerate(ids, 1):
            outcome = await link.read(unit, "holding", 0, 1, timeout_s=target.timeout_s, retries=0)
            if outcome.quality is Quality.NOT_CONNECTED:
                raise _lost(link, outcome)
            garbled = garbled or outcome.quality is Quality.BAD_FRAME
            if outcome.quality is Quality.GOOD or (
                outcome.quality is Quality.DEVICE_EXCEPTION
                and outcome.exception_code not in _ABSENT_CODES
            ):
                found.append(unit)
            if on_progress is not None:
                on_progress(n, len(ids))
        if not found and ids and isinstance(target, RtuTarget) and (garbled or link.saw_bytes):
            raise _silent(link, target, ids, garbled)
        return found
    finally:
        link.close()


async def scan_registers(
    target: Target, unit_id: int, table: Table, start: int, end: int, *,
    on_progress: Progress | None = None,
) -> list[tuple[int, int]]:
    """Every address of `start..end` (inclusive) that answers, with its raw value (0/1 for
    coils and discrete inputs), in address order.

    Raises:
        ScanError: the link cannot open or is lost, or the unit does not answer at all.
        ValueError: a range outside 0..65535, or start after end.
    """
    if not 0 <= start <= end <= 65535:
        raise ValueError(f"addresses {start}..{end}: need 0 <= start <= end <= 65535")
    block = MAX_BITS if table in BIT_TABLES else MAX_REGISTERS
    total = end - start + 1
    link = _link_for(target)
    try:
        await _open(link, target)
        link.saw_bytes = False
        first = await link.read(unit_id, table, start, 1, timeout_s=target.timeout_s, retries=0)
        if first.quality is Quality.NOT_CONNECTED:
            raise _lost(link, first)
        if first.quality in (Quality.NO_ANSWER, Quality.BAD_FRAME):
            raise _silent(link, target, [unit_id], first.quality is Quality.BAD_FRAME)
        found: list[tuple[int, int]] = []
        todo = [(a, min(block, end - a + 1)) for a in range(start, end + 1, block)][::-1]
        done = 0
        while todo:
            address, count = todo.pop()
            outcome = await link.read(unit_id, table, address, count, timeout_s=target.timeout_s,
                                      retries=0)
            if outcome.quality is Quality.NOT_CONNECTED:
                raise _lost(link, outcome)
            if outcome.quality is Quality.GOOD:
                found += [(address + i, int(v)) for i, v in enumerate(outcome.data)]
                done += count
            elif count > 1:
                half = count // 2
                todo += [(address + half, count - half), (address, half)]
            else:
                done += 1
            if on_progress is not None and (outcome.quality is Quality.GOOD or count == 1):
                on_progress(done, total)
        return found
    finally:
        link.close()


def suggest_points(found: Sequence[tuple[int, int]], *, table: Table = "holding") -> list[ModbusPoint]:
    """A naive point per address found: uint16 for registers, bool for bits, named
    ``hr_40001`` style (six digits past address 9998, e.g. ``hr_410000``)."""
    prefix, base5, base6 = _PREFIX[table]
    points = []
    for address, _ in sorted(found):
        number = f"{base5 + address:05d}" if address <= 9998 else f"{base6 + address:06d}"
        kind: DataType = "bool" if table in BIT_TABLES else "uint16"
        points.append(ModbusPoint(name=f"{prefix}_{number}", address=address, table=table, type=kind))
    return points


def points_to_toml(
    device_name: str, points: Sequence[ModbusPoint], *, header: str = "modbus_tcp.points"
) -> str:
    """The points as TOML tables to paste under a device (``[[modbus_tcp]]``, or use
    ``header="modbus_rtu.devices.points"`` under a ``[[modbus_rtu.devices]]``)."""
    lines = [f"# points of device {json.dumps(device_name)} ({len(points)})"]
    for point in points:
        lines += ["", *point_lines(point, header)]
    return "\n".join(lines) + "\n"
