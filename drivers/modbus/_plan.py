"""The read planner: which Modbus requests cover a device's points (pure).

Does: group points by table, merge neighbours whose gap (unused registers or bits
between them) is at most ``max_gap`` into one request, never past the protocol's
limits (125 registers, 2000 bits per read); and slice a response back into the
values of the points it covers. Does not: send anything (`_tcp`), check the
configuration (`_config`: the planner trusts it, e.g. that no point is larger than
one request).

Every point belongs to exactly one request, at a fixed offset into its response;
`ReadRequest.members` lists ``(point index, offset)`` pairs, the index being the
point's position in the sequence given to `plan_reads`.
"""

from __future__ import annotations

from collections.abc import MutableSequence, Sequence
from dataclasses import dataclass
from typing import Final

from drivers._types import Quality, Value
from drivers.errors import ConfigError, DecodeError
from drivers.modbus._codec import PointCodec, RegisterWindow
from drivers.modbus._config import BIT_TABLES, ModbusPoint, Table

MAX_REGISTERS: Final = 125  # holding / input registers per read (function codes 3, 4)
MAX_BITS: Final = 2000  # coils / discrete inputs per read (function codes 1, 2)
_TABLE_ORDER: Final[dict[str, int]] = {"coil": 0, "discrete": 1, "holding": 2, "input": 3}


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read: `count` registers (or bits) of `table` from `start`, and whom it serves."""

    table: Table
    start: int
    count: int
    members: tuple[tuple[int, int], ...]  # (point index, offset in the response)

    @property
    def bits(self) -> bool:
        """True for coils and discrete inputs (the response is bits, not registers)."""
        return self.table in BIT_TABLES


def limit_of(table: str) -> int:
    """The largest count one read of `table` may ask for."""
    return MAX_BITS if table in BIT_TABLES else MAX_REGISTERS


def plan_reads(points: Sequence[ModbusPoint], *, max_gap: int) -> tuple[ReadRequest, ...]:
    """Plan the reads that cover every point, in table then address order.

    Args:
        points: the device's points (already validated).
        max_gap: the most unused registers (bits) one request may read through.

    Raises:
        ConfigError: a point is larger than one request can read (a validated
            configuration never has one).
    """
    order = sorted(
        range(len(points)),
        key=lambda i: (_TABLE_ORDER[points[i].table], points[i].address, points[i].size),
    )
    requests: list[ReadRequest] = []
    table: Table | None = None
    start = end = 0  # current request: registers start..end inclusive
    members: list[tuple[int, int]] = []
    for i in order:
        p = points[i]
        size = p.size
        limit = limit_of(p.table)
        if size > limit:
            raise ConfigError(f'point "{p.name}": {size} registers do not fit one read of {limit}')
        last = p.address + size - 1
        fits = (
            p.table == table
            and p.address - end - 1 <= max_gap
            and max(end, last) - start + 1 <= limit
        )
        if fits:
            end = max(end, last)
        else:
            if table is not None:
                requests.append(ReadRequest(table, start, end - start + 1, tuple(members)))
            table, start, end, members = p.table, p.address, last, []
        members.append((i, p.address - start))
    if table is not None:
        requests.append(ReadRequest(table, start, end - start + 1, tuple(members)))
    return tuple(requests)


def unpack_response(
    request: ReadRequest,
    response: Sequence[int] | Sequence[bool],
    codecs: Sequence[PointCodec],
    values: MutableSequence[Value],
    qualities: MutableSequence[Quality],
) -> None:
    """Decode a response into the values of the request's points, in place.

    For each member, ``values[index]`` gets the decoded value and ``qualities[index]``
    GOOD, or None and DECODE_ERROR when that point's registers do not decode. The
    caller checks the response's length first (a short answer is a BAD_FRAME).

    Args:
        request: the request that was answered.
        response: its registers, or its bits for coils and discrete inputs.
        codecs: the codec of every point, by point index.
        values: output, by point index.
        qualities: output, by point index.
    """
    if request.bits:
        for index, offset in request.members:
            values[index] = bool(response[offset])
            qualities[index] = Quality.GOOD
        return
    window = RegisterWindow(response)
    for index, offset in request.members:
        try:
            values[index] = codecs[index].decode_window(window, offset)
            qualities[index] = Quality.GOOD
        except DecodeError:
            values[index] = None
            qualities[index] = Quality.DECODE_ERROR


def fail_request(
    request: ReadRequest,
    quality: Quality,
    values: MutableSequence[Value],
    qualities: MutableSequence[Quality],
) -> None:
    """Mark every point of a failed request: no value, and why."""
    for index, _ in request.members:
        values[index] = None
        qualities[index] = quality
