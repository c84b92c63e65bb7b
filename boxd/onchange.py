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

Otherwise it is unchanged: the value in force is the last one queued, and the cloud's copy is
within the deadband of what the bus served. The state is only ever what reached the queue: the
caller `reset`s it when the queue lost readings (evicted, or a write failed) and a new table
makes a new `OnChange`. It is kept in memory only: after a restart the first poll sends
everything. No I/O, no clock of its own (times are the readings').
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from boxconfig.report import Rule
from boxd._queuesql import Group
from drivers import Value


class OnChange:
    """The filter of one point table (`rules[i]` is the rule of table index `i`)."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self._rules = tuple(rules)
        self.active = not all(r.poll for r in self._rules)  # all "poll": nothing to filter
        n = len(self._rules)
        self._value: list[Value] = [None] * n
        self._quality: list[int] = [0] * n
        self._ts: list[int | None] = [None] * n  # None: nothing queued since the start or a reset

    def reset(self) -> None:
        """Forget every reference: the next reading of each point is sent."""
        self._ts = [None] * len(self._rules)

    def filter(self, groups: Sequence[Group]) -> list[Group]:
        """The groups to queue: values to send, and spans of readings unchanged (see the module)."""
        if not self.active:
            return list(groups)
        out: list[Group] = []
        for ts, first, values, faults in groups:
            if isinstance(values, int):  # a span already
                out.append((ts, first, values, faults))
                continue
            run_start, run_send = first, True
            kept: list[Value] = []
            kept_faults: dict[int, int] = {}
            for k, v in enumerate(values):
                i = first + k
                q = faults.get(k, 0) if faults else 0
                send = self._changed(i, ts, v, q)
                if send != run_send and i > run_start:
                    out.append((ts, run_start, kept, kept_faults) if run_send else (ts, run_start, i - run_start, {}))
                    run_start, kept, kept_faults = i, [], {}
                run_send = send
                if send:
                    if q:
                        kept_faults[len(kept)] = q
                    kept.append(v)
                    self._value[i], self._quality[i], self._ts[i] = v, q, ts
            end = first + len(values)
            if end > run_start:
                out.append((ts, run_start, kept, kept_faults) if run_send else (ts, run_start, end - run_start, {}))
        return out

    def _changed(self, i: int, ts: int, v: Value, q: int) -> bool:
        rule = self._rules[i]
        last_ts = self._ts[i]
        if rule.poll or last_ts is None or q != self._quality[i] or ts < last_ts or ts - last_ts >= rule.max_age_ms:
            return True
        last = self._value[i]
        if type(v) is not type(last):
            return True
        if isinstance(v, int | float) and not isinstance(v, bool):
            assert isinstance(last, int | float)
            if math.isnan(v) or math.isnan(last):
                return math.isnan(v) != math.isnan(last)
            return abs(v - last) > max(rule.deadband, rule.deadband_pct / 100 * abs(last))
        return v != last
