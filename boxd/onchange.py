"""Report on change (pure): which readings the Box sends, and which it sends as "polled, unchanged".

`OnChange` holds, per index of the running point table, the last value (and quality) the Box
queued and the time of its reading. `filter` takes the groups of one emission (`boxd.grouping`)
and splits each into runs: readings to send (a group of values, as before) and readings that are
unchanged since the last one queued (a *span*: `(ts, first, count, {})`, an integer where the
values would be; `proto.wire` says how it travels). A reading is sent when (`boxconfig.report.Rule`):

- its point is in mode "poll" (every value, every poll), or nothing was queued for it yet;
- its quality differs from the last one queued (good -> fault, fault -> good, one fault -> another);
- it is a number (not a boolean) and ``|v - last| > max(deadband, deadband_pct / 100 * |last|)``
  (both 0: any change), or a NaN where the last was not (or the reverse);
- it is anything else (a boolean, an enumerated state, text) and differs from the last (or its
  type does);
- `max_age_ms` or more has passed since the last one queued (so a constant point is still sent
  now and then), or its time is before the last one's (the clock was stepped back).

Otherwise a reading is unchanged: the value in force is the last one queued, and the cloud's copy
is within the deadband of what the bus served. (Format 1 of the wire sent short unchanged runs
between values too, as a span there cost more than its values; in a poll series, `proto.series`,
an unchanged reading costs nothing, so none is sent that did not change.)

The state is only ever what reached the queue: the caller `reset`s it when the queue lost
readings (evicted, or a write failed) and a new table makes a new `OnChange`. It is kept in
memory only: after a restart the first poll sends everything. No I/O, no clock of its own (times are the readings').
"""

from __future__ import annotations

from collections.abc import Sequence

from boxconfig.report import Rule
from boxd._queuesql import Group
from drivers import Value


class OnChange:
    """The filter of one point table (`rules[i]` is the rule of table index `i`)."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.active = not all(r.poll for r in rules)  # all "poll": nothing to filter
        # per index, flat (the loop runs for every reading): mode poll, deadbands, maximum age
        self._poll = [r.poll for r in rules]
        self._band = [r.deadband for r in rules]
        fractions: dict[float, float] = {}  # one float object per distinct percentage, not one per point
        self._pct = [fractions.setdefault(r.deadband_pct, r.deadband_pct / 100) for r in rules]
        self._age = [r.max_age_ms for r in rules]
        self._value: list[Value] = [None] * len(rules)
        self._quality: list[int] = [0] * len(rules)
        self._ts: list[int | None] = [None] * len(rules)  # None: nothing queued since the start or a reset

    def reset(self) -> None:
        """Forget every reference: the next reading of each point is sent."""
        self._ts = [None] * len(self._ts)

    def filter(self, groups: Sequence[Group]) -> list[Group]:
        """The groups to queue: values to send, and spans of readings unchanged (see the module)."""
        if not self.active:
            return list(groups)
        out: list[Group] = []
        for ts, first, values, faults in groups:
            if isinstance(values, int):  # a span already
                out.append((ts, first, values, faults))
                continue
            quality = [faults.get(k, 0) for k in range(len(values))] if faults else [0] * len(values)
            send = [self._changed(first + k, ts, v, q) for k, (v, q) in enumerate(zip(values, quality, strict=True))]
            k, n = 0, len(values)
            while k < n:  # runs: sent values (their references updated), or a span
                end = k + 1
                while end < n and send[end] == send[k]:
                    end += 1
                if send[k]:
                    run = values[k:end]
                    bad = {j - k: quality[j] for j in range(k, end) if quality[j]} if faults else {}
                    out.append((ts, first + k, list(run), bad))
                    for j in range(k, end):
                        i = first + j
                        self._value[i], self._quality[i], self._ts[i] = values[j], quality[j], ts
                else:
                    out.append((ts, first + k, end - k, {}))
                k = end
        return out

    def _changed(self, i: int, ts: int, v: Value, q: int) -> bool:
        last_ts = self._ts[i]
        if last_ts is None or self._poll[i] or q != self._quality[i] or not 0 <= ts - last_ts < self._age[i]:
            return True
        last = self._value[i]
        kind = type(v)
        if kind is not type(last):  # True is not 1 here: a boolean is a state
            return True
        if kind is float or kind is int:
            assert isinstance(v, int | float) and isinstance(last, int | float)
            d = abs(v - last)
            if d != d:  # noqa: PLR0124 - NaN: a NaN is a value like another (inf - inf too: unchanged)
                return (v != v) != (last != last)  # noqa: PLR0124 (the NaN test)
            pct = self._pct[i]
            return d > (self._band[i] if not pct else max(self._band[i], pct * abs(last)))
        return v != last
