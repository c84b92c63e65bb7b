"""The read planner: which Modbus requests cover a device's points (pure).

Does: group points by table, merge neighbours whose gap (unused registers or bits
between them) is at most ``max_gap`` into one request, never past a request's limit
(the protocol's 125 registers / 2000 bits, or a lower limit the device taught us);
group points by poll interval (`interval_groups`) and plan any set of them
(`ReadPlanner`, which caches a plan per set and forgets them when a limit changes);
slice a response back into the values of the points it covers. Does not: send
anything, decide when to poll (`_device`, `_sched`), or check the configuration
(`_config`: the planner trusts it, e.g. that no point is larger than the limit).

Every point belongs to exactly one request, at a fixed offset into its response;
`ReadRequest.members` lists ``(point index, offset)`` pairs, the index being the
point's position in the device's point list.

Optimality. Within one table, the points' distinct register ranges are disjoint (the
configuration allows overlaps only of identical ranges). Sort them by address: a
request is a run of consecutive ranges whose holes are all at most ``max_gap`` and
whose span is at most the limit. Both conditions hold for every sub-run of a valid
run, so taking each run as long as possible (greedy) gives the fewest requests: by
induction, the greedy k-th request ends at or after the k-th request of any valid
plan. `tests/unit/drivers/test_modbus_plan.py` checks this against a brute force.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableSequence, Sequence
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

    @property
    def slots(self) -> int:
        """How many distinct ranges (points, counting identical overlaps once) it covers."""
        return len({offset for _, offset in self.members})


def limit_of(table: str, max_registers: int = MAX_REGISTERS, max_bits: int = MAX_BITS) -> int:
    """The largest count one read of `table` may ask for."""
    return max_bits if table in BIT_TABLES else max_registers


def plan_reads(
    points: Sequence[ModbusPoint],
    *,
    max_gap: int,
    max_registers: int = MAX_REGISTERS,
    max_bits: int = MAX_BITS,
    only: Iterable[int] | None = None,
) -> tuple[ReadRequest, ...]:
    """Plan the fewest reads that cover the points, in table then address order.

    Args:
        points: the device's points (already validated).
        max_gap: the most unused registers (bits) one request may read through.
        max_registers: the largest register read (1..125).
        max_bits: the largest coil or discrete input read (1..2000).
        only: the indexes of the points to cover (default: all of them).

    Raises:
        ConfigError: a point is larger than one request can read (a validated
            configuration never has one).
    """
    chosen = range(len(points)) if only is None else only
    order = sorted(
        chosen, key=lambda i: (_TABLE_ORDER[points[i].table], points[i].address, points[i].size)
    )
    requests: list[ReadRequest] = []
    table: Table | None = None
    start = end = 0  # current request: registers start..end inclusive
    members: list[tuple[int, int]] = []
    for i in order:
        p = points[i]
        size = p.size
        limit = limit_of(p.table, max_registers, max_bits)
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


def interval_groups(
    points: Sequence[ModbusPoint], default_interval_s: float
) -> dict[int, tuple[int, ...]]:
    """Point indexes by poll interval in whole milliseconds (a point's own, or the default)."""
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(points):
        interval = p.poll_interval_s if p.poll_interval_s is not None else default_interval_s
        groups.setdefault(round(interval * 1000), []).append(i)
    return {ms: tuple(indexes) for ms, indexes in sorted(groups.items())}


class ReadPlanner:
    """The plans of one device: per set of interval groups due together, under the limits
    the device allows (which only ever go down, see `lower`)."""

    def __init__(
        self,
        points: Sequence[ModbusPoint],
        *,
        max_gap: int,
        max_registers: int = MAX_REGISTERS,
        max_bits: int = MAX_BITS,
    ) -> None:
        self.points = points
        self.max_gap = max_gap
        self.max_registers = max_registers
        self.max_bits = max_bits
        # keyed by the sorted indexes: a tuple is a fifth of a frozenset's size (a device of 200 points
        # keeps one or two plans: docs/performance.md, "The whole service's memory")
        self._cache: dict[tuple[int, ...], tuple[ReadRequest, ...]] = {}
        self._largest = {
            bits: max((p.size for p in points if (p.table in BIT_TABLES) == bits), default=1)
            for bits in (False, True)
        }

    def plan(self, indexes: Iterable[int]) -> tuple[ReadRequest, ...]:
        """The requests that read these points (cached until a limit changes)."""
        key = tuple(sorted(set(indexes)))
        plan = self._cache.get(key)
        if plan is None:
            plan = plan_reads(
                self.points, max_gap=self.max_gap, max_registers=self.max_registers,
                max_bits=self.max_bits, only=frozenset(key),
            )
            self._cache[key] = plan
        return plan

    def limit(self, bits: bool) -> int:
        """The current limit of register (False) or bit (True) reads."""
        return self.max_bits if bits else self.max_registers

    def floor(self, bits: bool) -> int:
        """The lowest the limit can go: the largest point must still fit one read."""
        return self._largest[bits]

    def lower(self, bits: bool, limit: int) -> bool:
        """Lower a limit (never below `floor`); True if it changed. Forgets cached plans."""
        limit = max(limit, self.floor(bits))
        if limit >= self.limit(bits):
            return False
        if bits:
            self.max_bits = limit
        else:
            self.max_registers = limit
        self._cache.clear()
        return True


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
