"""Point tables and the rows of a batch: pure code, run for every sample the cloud receives.

`PointTable` is a Box's table with what storing a batch needs computed once per table;
`sample_rows` turns a decoded batch into the rows of `samples` and `latest`, a group at a
time (C-level `zip`, one JSON encoding per group); `span_rows` its spans into rows of `spans`
(one a span). No I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from itertools import repeat
from operator import itemgetter
from typing import overload

from proto.errors import WireError
from proto.points import PointInfo, Value
from proto.wire import Batch

SampleRow = tuple[str, str, int, str, int]  # box_id, point, ts_ms, value as JSON, quality
LatestRow = tuple[str, str, int, str, int, str]  # ... and the unit
SpanRow = tuple[str, int, int, int, int, int, int]  # box_id, epoch, seq, table_id, ts_ms, first, n
MAX_INT = (1 << 63) - 1  # the largest integer SQLite and PostgreSQL (BIGINT) store


class PointTable(Sequence[PointInfo]):
    """A Box's point table, with what storing a batch needs computed once per table, not per batch.

    A sequence of `PointInfo`; also the names, the units, and each point's device (the part of
    its name before the first dot) with the end of the run of points of that device it is in.
    """

    __slots__ = ("devices", "names", "points", "run_end", "units")

    def __init__(self, points: Iterable[PointInfo]) -> None:
        self.points = tuple(points)
        self.names = tuple(p.name for p in self.points)
        self.units = tuple(p.unit for p in self.points)
        self.devices = tuple(n.split(".", 1)[0] for n in self.names)
        run_end = [len(self.points)] * len(self.points)
        for i in range(len(self.points) - 2, -1, -1):
            if self.devices[i] == self.devices[i + 1]:
                run_end[i] = run_end[i + 1]
            else:
                run_end[i] = i + 1
        self.run_end = tuple(run_end)

    def __len__(self) -> int:
        return len(self.points)

    def __iter__(self) -> Iterator[PointInfo]:
        return iter(self.points)

    @overload
    def __getitem__(self, i: int) -> PointInfo: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[PointInfo]: ...
    def __getitem__(self, i: int | slice) -> PointInfo | Sequence[PointInfo]:
        return self.points[i]


def sample_rows(box_id: str, batch: Batch, table: PointTable) -> tuple[list[SampleRow], list[LatestRow]]:
    """The `samples` rows of a batch, in its order, and the `latest` rows: each point's newest sample.

    Raises:
        WireError: a group points outside the table, or a number does not fit the database's 64-bit
            signed integers (the wire allows epochs, sequence numbers and times up to 2**64 - 1).
    """
    names, units = table.names, table.units
    groups = []  # (dt_ms, first index, count, ts_ms, values as JSON, qualities)
    for name, val in (("epoch", batch.epoch), ("seq", batch.seq)):
        if val > MAX_INT:
            raise WireError(f"batch {name} {val} is too large to store (at most 2**63 - 1)")
    for g in batch.groups:
        n, first = len(g.values), g.first
        if first + n > len(names):
            raise WireError(f"group at index {first} runs past the {len(names)}-point table")
        if batch.base_ts_ms + g.dt_ms > MAX_INT:
            raise WireError(f"a sample's time {batch.base_ts_ms + g.dt_ms} is too large to store (at most 2**63 - 1)")
        quality = [g.faults.get(i, 0) for i in range(n)] if g.faults else [0] * n
        groups.append((g.dt_ms, first, n, batch.base_ts_ms + g.dt_ms, _json_values(g.values), quality))
    rows: list[SampleRow] = []
    for _, first, n, ts, values, quality in groups:
        rows += zip(repeat(box_id, n), names[first:first + n], repeat(ts, n), values, quality, strict=True)
    # oldest group first (a stable sort), so that the last row written for a point is its newest
    newest: dict[str, LatestRow] = {}
    for _, first, n, ts, values, quality in sorted(groups, key=itemgetter(0)):
        points = names[first:first + n]
        newest.update(zip(points, zip(repeat(box_id, n), points, repeat(ts, n), values, quality,
                                      units[first:first + n], strict=True), strict=True))
    return rows, list(newest.values())


def span_rows(box_id: str, batch: Batch, table: PointTable) -> list[SpanRow]:
    """The `spans` rows of a batch: one a span, never one a point.

    Raises:
        WireError: a span runs past the table, or its time does not fit the database.
    """
    spans: list[SpanRow] = []
    names = table.names
    for ts, first, n in batch.spans():
        if first + n > len(names):
            raise WireError(f"span at index {first} runs past the {len(names)}-point table")
        if ts > MAX_INT:
            raise WireError(f"a span's time {ts} is too large to store (at most 2**63 - 1)")
        spans.append((box_id, batch.epoch, batch.seq, batch.table_id, ts, first, n))
    return spans


def _json_values(values: list[Value]) -> list[str]:
    """Each value as JSON text (`json.dumps(v)` of each), with one encoding for the whole list.

    Numbers, booleans and null never contain a comma, so the list's encoding splits into its
    items; a list holding text is encoded item by item.
    """
    if not values:
        return []
    if str in map(type, values):
        return [json.dumps(v) for v in values]
    return json.dumps(values, separators=(",", ":"))[1:-1].split(",")


__all__ = ["Batch", "LatestRow", "PointTable", "SampleRow", "SpanRow", "WireError", "sample_rows",
           "span_rows"]
