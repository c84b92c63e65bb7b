"""Readings as queue groups (pure): what a bus emits becomes the fewest groups the table allows.

Readings of one instant for points consecutive in the point table make one group, so a device
read in full costs one group however many points it has; a hole (a point missing) or another
instant starts a new group. A group holds the values in table order and the faults (quality
other than GOOD) by their position in it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from boxd._queuesql import Group  # (ts_ms, first table index, values, {position: quality})
from drivers import Quality, Sample, Value


@dataclass(slots=True)
class Grouped:
    """The groups of one emission, and what it says about the bus's health."""

    groups: list[Group] = field(default_factory=list)
    good: int = 0  # readings of quality GOOD
    faults: dict[int, int] = field(default_factory=dict)  # quality -> count of readings


def group(samples: Sequence[Sample], index: Mapping[str, int]) -> Grouped:
    """Group `samples` by instant and by runs of consecutive table indices (`index`: point -> index).

    Raises:
        KeyError: a sample's point is not in `index` (a bus emitting a point it did not declare).
    """
    by_ts: dict[int, list[tuple[int, Sample]]] = {}
    for s in samples:
        by_ts.setdefault(s.ts_ms, []).append((index[s.point], s))
    out = Grouped()
    for ts, items in by_ts.items():
        items.sort(key=lambda item: item[0])
        run_first = items[0][0]
        values: list[Value] = []
        faults: dict[int, int] = {}
        for idx, s in items:
            if idx != run_first + len(values):  # a hole: close the run
                out.groups.append((ts, run_first, values, faults))
                run_first, values, faults = idx, [], {}
            if s.quality != Quality.GOOD:
                faults[len(values)] = int(s.quality)
                out.faults[s.quality] = out.faults.get(s.quality, 0) + 1
            else:
                out.good += 1
            values.append(s.value)
        out.groups.append((ts, run_first, values, faults))
    return out
