"""Poll series: a device's polls of one batch as one group (wire format 2; pure code, no I/O).

A *poll series* says "these `count` points from `first` were polled `n` times, at these instants,
and were unchanged (report on change) except for the values listed"::

    [dt_ms, first, count, period_ms, jitter, changes(, faults)]
    jitter  = [j1, ..., j(n-1)]   poll 0 at base_ts_ms + dt_ms; poll k at poll k-1 + period_ms + jk
    changes = [dpoll, doff, value, dpoll, doff, value, ...]
    faults  = {change number: quality code}          # that change's value is null

A change's poll is the previous change's poll plus `dpoll` (the first's: 0 plus it); its offset
from `first` is `doff` when `dpoll` > 0 or it is the first change, else the previous change's
offset plus `doff` (at least 1: a poll's changes are in ascending order). Every point of every poll
that has no change is *unchanged*: exactly a span of `proto.wire` format 1 (the value in force is
the last one the Box sent). So a poll costs its time's jitter (one byte, usually) and its changes,
not a group a run of points; each poll's instant is kept to the millisecond, or within the Box's
time slack when it has one (`encode`'s `slack_ms`: a poll late by less than it costs nothing).

A change's value is coded against the same point's previous change in this series, when there is
one: an integer after an integer is the difference (a counter or a meter costs one byte a step);
a number with a short decimal form travels as ``[mantissa, exponent]`` (``21.3`` as
``[213, -1]``, 5 bytes where a double takes 9), or as ``[mantissa difference]`` after a decimal of
the same exponent. Anything else (booleans, text, null, NaN, infinities) travels as itself.

`encode` chooses, for each device's polls in a batch, a series when some point was unchanged and
the plain groups of format 1 when every value changed (poll mode: a change costs more than a
value there); `expand` turns a series back into format 1's groups, so that everything behind the
decoder (the cloud's store, its spans) is the same for both formats. Does not: deflate, frame or
check the batch's header (`proto.wire`).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Collection, Sequence

from proto.errors import WireError
from proto.points import Quality, Value

MAX_POINTS = 100_000
_T = 2**40  # times and periods, ms, stay within +-this
_E = 400  # a decimal's exponent stays within +-this
Raw = tuple[int, int, Sequence[Value] | int, dict[int, int]]  # (dt_ms, first, values or span count, faults)
Expanded = tuple[int, int, list[Value], dict[int, int], int]  # (dt_ms, first, values, faults, unchanged)


def _decimal(v: float) -> tuple[int, int] | None:
    """(mantissa, exponent) of `v`'s shortest decimal form, if it reads back exactly."""
    if not math.isfinite(v) or (v == 0 and math.copysign(1, v) < 0):
        return None
    text = repr(v)
    mant, _, exp = text.partition("e")
    whole, _, frac = mant.partition(".")
    frac = frac.rstrip("0")
    m, e = int(whole + frac), int(exp or 0) - len(frac)
    if not -_E <= e <= _E or abs(m) >= 2**53 or float(f"{m}e{e}") != v:
        return None
    return m, e


class _Coder:
    """The previous change of each point of a series: what the next one is coded against."""

    def __init__(self) -> None:
        self.last: dict[int, Value] = {}
        self.dec: dict[int, tuple[int, int]] = {}

    def encode(self, off: int, v: Value) -> object | None:
        """`v` coded against the point's previous change; None when it cannot be (the series ends)."""
        last = self.last.get(off)
        self.last[off] = v
        if isinstance(v, int) and not isinstance(v, bool):
            self.dec.pop(off, None)
            if isinstance(last, int) and not isinstance(last, bool):
                d = v - last
                return d if -(2**63) <= d < 2**63 else None
            return v
        if isinstance(v, float):
            dec = _decimal(v)
            prev, self.dec[off] = self.dec.get(off), dec  # type: ignore[assignment]
            if dec is None:
                self.dec.pop(off, None)
                return v
            if prev is not None and prev[1] == dec[1]:
                return [dec[0] - prev[0]]
            return [dec[0], dec[1]]
        self.dec.pop(off, None)
        return v

    def decode(self, n: int, off: int, raw: object) -> Value:
        last = self.last.get(off)
        if isinstance(raw, list):
            if len(raw) == 2 and _is_int(raw[0]) and _is_int(raw[1]) and -_E <= raw[1] <= _E and abs(raw[0]) < 2**53:
                m, e = raw
            elif len(raw) == 1 and _is_int(raw[0]) and off in self.dec and abs(raw[0]) < 2**54:
                m, e = self.dec[off][0] + raw[0], self.dec[off][1]
                if abs(m) >= 2**53:
                    raise WireError(f"group {n}: a decimal's mantissa is out of range")
            else:
                raise WireError(f"group {n}: a change's value is a bad decimal (or a difference with none before)")
            number = float(f"{m}e{e}")
            if not math.isfinite(number):
                raise WireError(f"group {n}: a decimal is out of range")
            v: Value = number
            self.dec[off] = (m, e)
        else:
            self.dec.pop(off, None)
            if _is_int(raw) and _is_int(last):
                assert isinstance(raw, int) and isinstance(last, int)
                v = last + raw
            elif raw is None or isinstance(raw, bool | int | float | str):
                v = raw
            else:
                raise WireError(f"group {n} holds a value of type {type(raw).__name__}")
        if isinstance(v, str) and len(v) > 256:
            raise WireError(f"group {n} holds a text over 256 characters")
        if _is_int(v) and not -(2**63) <= v < 2**64:  # type: ignore[operator]
            raise WireError(f"group {n} holds an integer out of 64-bit range")
        self.last[off] = v
        return v


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# -- encoding (the Box) ------------------------------------------------------------------------------

_Poll = tuple[int, int, int, list[tuple[int, Value, int]]]  # (dt, first, count, [(offset, value, fault)])


def _plain(g: Raw) -> list[object]:
    dt, first, values, faults = g
    return [dt, first, list(values), faults] if faults else [dt, first, list(values)]  # type: ignore[arg-type]


def encode(groups: Sequence[Raw], slack_ms: int = 0) -> list[object]:
    """The CBOR-ready groups of a format 2 batch for `groups` (times relative to the batch's base).

    `slack_ms`: how much earlier than its reading a poll's time in a series may be sent (0: exact). A
    poll late by at most that on the series' schedule (the previous poll's time as sent plus the
    period) is sent on the schedule, so that a Box whose polls run late by tens of ms, as a busy
    one's do, pays nothing for it; any other poll is sent exactly (the schedule follows it from
    there). Never later than the reading, so a point's polls stay in order."""
    if not any(isinstance(g[2], int) for g in groups):  # poll mode: no span, format 1's groups as they are
        return [_plain(g) for g in groups]
    by_dt: dict[int, list[Raw]] = {}
    for g in groups:
        by_dt.setdefault(g[0], []).append(g)
    out: list[object] = []
    series: dict[tuple[int, int], list[_Poll]] = {}  # (first, count) -> that block's polls, in time order
    exact: list[tuple[int, int, int]] = []  # (dt, first, end) of each plain group: its time as read
    polled: list[tuple[int, list[list[Raw]]]] = []  # each instant's runs of groups of consecutive points
    cuts: set[int] = set()  # where any of them starts or ends
    for dt, gs in by_dt.items():
        gs.sort(key=lambda g: g[1])
        blocks: list[list[Raw]] = []
        for g in gs:
            if blocks and g[1] == blocks[-1][-1][1] + _size(blocks[-1][-1]):
                blocks[-1].append(g)
            else:
                blocks.append([g])
        polled.append((dt, blocks))
        cuts.update(x for b in blocks for x in (b[0][1], b[-1][1] + _size(b[-1])))
    for dt, blocks in polled:
        for block in (piece for b in blocks for piece in _split(b, cuts)):
            if not any(isinstance(g[2], int) for g in block):  # every value changed: plain groups are smaller
                out += [_plain(g) for g in block]
                exact += [(g[0], g[1], g[1] + _size(g)) for g in block]
                continue
            first = block[0][1]
            changes = [(f - first + k, v, q.get(k, 0)) for _, f, vals, q in block if not isinstance(vals, int)
                       for k, v in enumerate(vals)]
            count = block[-1][1] + _size(block[-1]) - first
            series.setdefault((first, count), []).append((dt, first, count, changes))
    for (first, count), polls in series.items():
        fixed = sorted(t for t, lo, hi in exact if lo < first + count and first < hi) if slack_ms else []
        out += _series(first, count, polls, slack_ms, fixed)
    return out


def _size(g: Raw) -> int:
    return g[2] if isinstance(g[2], int) else len(g[2])


def _split(block: list[Raw], cuts: Collection[int]) -> list[list[Raw]]:
    """`block` cut at the points of `cuts` inside it (a group across one cut in two): devices polled
    in the same millisecond as their neighbours still make a series each, the same every poll (a
    series is one run of points: one that changed with every poll would be a poll each)."""
    first, end = block[0][1], block[-1][1] + _size(block[-1])
    at = sorted(c for c in cuts if first < c < end)
    if not at:
        return [block]
    out: list[list[Raw]] = [[]]
    k = 0
    for whole in block:
        g = whole
        if k < len(at) and at[k] == g[1]:
            out.append([])
            k += 1
        while k < len(at) and at[k] < g[1] + _size(g):
            left, g = _cut(g, at[k] - g[1])
            out[-1].append(left)
            out.append([])
            k += 1
        out[-1].append(g)
    return out


def _cut(g: Raw, n: int) -> tuple[Raw, Raw]:
    """Group `g` as its first `n` points and the rest."""
    dt, first, values, faults = g
    if isinstance(values, int):
        return (dt, first, n, {}), (dt, first + n, values - n, {})
    return ((dt, first, values[:n], {k: q for k, q in faults.items() if k < n}),
            (dt, first + n, values[n:], {k - n: q for k, q in faults.items() if k >= n}))


def _period(polls: list[_Poll]) -> int:
    """The series' period (0 for one poll). Polls run late by a varying latency, never early, and
    one may be missed: a first guess is the mean of the steps near the median step; then each poll's
    slot on that grid, and the slope through the earliest poll (on its slot) of each half."""
    steps = sorted(b[0] - a[0] for a, b in itertools.pairwise(polls))
    if not steps:
        return 0
    median = steps[len(steps) // 2]
    near = [s for s in steps if abs(s - median) <= median // 2]
    guess = sum(near) / len(near)
    if guess <= 0:
        return round(guess)
    t0 = polls[0][0]
    slots = [round((p[0] - t0) / guess) for p in polls]
    half = len(polls) // 2
    a, b = (min(part, key=lambda i: polls[i][0] - slots[i] * guess)
            for part in (range(half), range(half, len(polls))))
    return round((polls[b][0] - polls[a][0]) / (slots[b] - slots[a])) if slots[b] > slots[a] else round(guess)


def _series(first: int, count: int, polls: list[_Poll], slack_ms: int, fixed: Sequence[int] = ()) -> list[object]:
    """One device's polls (in time order) as series: one, unless a value cannot be coded in it.
    `fixed`: the times of the same points' polls sent as plain groups (exactly): no poll of the
    series is sent at or before one of them that it follows."""
    out: list[object] = []
    start = 0
    while start < len(polls):
        coder = _Coder()
        period = _period(polls[start:])
        jitter: list[int] = []
        changes: list[object] = []
        faults: dict[int, int] = {}
        prev_poll, prev_off, k = 0, 0, start
        sent = polls[start][0]  # the previous poll's time as sent
        while k < len(polls):
            dt, _, _, vals = polls[k]
            coded = [coder.encode(off, v) for off, v, _ in vals]
            if k > start and any(c is None for c in coded):
                break  # an integer's difference too large: a new series codes it whole
            if k > start:
                late = dt - sent - period  # on the schedule: never later than the reading, so in order
                crosses = bisect.bisect_left(fixed, dt - late) < bisect.bisect_right(fixed, dt)
                jitter.append(0 if period and 0 <= late <= slack_ms and not crosses else late)
                sent += period + jitter[-1]
            for (off, _, q), c in zip(vals, coded, strict=True):
                p = k - start
                same = p == prev_poll and bool(changes)
                changes += [p - prev_poll, off - prev_off if same else off, c]
                if q:
                    faults[len(changes) // 3 - 1] = q
                prev_poll, prev_off = p, off
            k += 1
        head = [polls[start][0], first, count, period, jitter, changes]
        out.append([*head, faults] if faults else head)
        start = k
    return out


# -- decoding (the platform) -------------------------------------------------------------------------


def expand(n: int, g: list[object], budget: int = MAX_POINTS) -> list[Expanded]:  # noqa: PLR0912 (one check a field)
    """Series `g` (group number `n`) as format 1's groups: value runs and spans, poll by poll; at most
    `budget` samples (a value or a span counts as one), checked before and while they are built.

    Raises:
        WireError: what is wrong with the series.
    """
    dt, first, count, period, jitter, changes = g[:6]
    if not (isinstance(dt, int) and _is_int(dt) and -_T < dt < _T):
        raise WireError(f"group {n} dt_ms must be an integer")
    if not (isinstance(first, int) and _is_int(first) and 0 <= first < MAX_POINTS):
        raise WireError(f"group {n} first_index must be an integer 0..{MAX_POINTS - 1}")
    if not (isinstance(count, int) and _is_int(count) and 1 <= count <= MAX_POINTS - first):
        raise WireError(f"group {n} series of points from index {first} is outside 1..{MAX_POINTS} points")
    if not (isinstance(period, int) and _is_int(period) and 0 <= period < _T):
        raise WireError(f"group {n} period_ms must be an integer 0..2**40")
    if not isinstance(jitter, list) or not all(_is_int(j) for j in jitter):
        raise WireError(f"group {n} jitter must be a list of integers")
    if not isinstance(changes, list) or len(changes) % 3:
        raise WireError(f"group {n} changes must be a list of [poll step, offset step, value] triples")
    polls = len(jitter) + 1
    if max(polls, len(changes) // 3) > budget:  # every poll is a sample at least, every change one
        raise WireError(f"batch holds more than {MAX_POINTS} samples")
    decoded = _changes(n, changes, _faults(n, g[6], len(changes) // 3) if len(g) == 7 else {}, polls, count)
    out: list[Expanded] = []
    ts, ci = dt, 0
    for k in range(polls):
        if k:
            ts += period + jitter[k - 1]
            if not -_T < ts < _T:
                raise WireError(f"group {n}: a poll's time is out of range")
        at = 0  # the next offset not yet in a group
        while ci < len(decoded) and decoded[ci][0] == k:
            _, off, v, q = decoded[ci]
            ci += 1
            if off > at:
                out.append((ts, first + at, [], {}, off - at))
            if off == at and at > 0 and not out[-1][4]:  # the run of values goes on
                out[-1][2].append(v)
                if q:
                    out[-1][3][len(out[-1][2]) - 1] = q
            else:
                out.append((ts, first + off, [v], {0: q} if q else {}, 0))
            at = off + 1
            if len(out) > budget:
                raise WireError(f"batch holds more than {MAX_POINTS} samples")
        if at < count:
            out.append((ts, first + at, [], {}, count - at))
        if len(out) > budget:
            raise WireError(f"batch holds more than {MAX_POINTS} samples")
    return out


def _changes(n: int, changes: list[object], faults: dict[int, int], polls: int, count: int,
             ) -> list[tuple[int, int, Value, int]]:
    """A series' changes as (poll, offset, value, quality), in poll order, each checked."""
    decoded: list[tuple[int, int, Value, int]] = []
    coder, poll, off = _Coder(), 0, -1
    for c in range(0, len(changes), 3):
        dpoll, doff, raw = changes[c], changes[c + 1], changes[c + 2]
        if not (isinstance(dpoll, int) and isinstance(doff, int) and _is_int(dpoll) and _is_int(doff)) \
                or dpoll < 0 or doff < 0:
            raise WireError(f"group {n} change {c // 3}: its steps must be integers >= 0")
        if c and not dpoll and not doff:
            raise WireError(f"group {n} change {c // 3} repeats its poll's previous offset")
        poll, off = poll + dpoll, off + doff if c and not dpoll else doff
        if poll >= polls or off >= count:
            raise WireError(f"group {n} change {c // 3} is outside the series' {polls} polls of {count} points")
        decoded.append((poll, off, coder.decode(n, off, raw), faults.get(c // 3, 0)))
    return decoded


def _faults(n: int, raw: object, changes: int) -> dict[int, int]:
    if not isinstance(raw, dict):
        raise WireError(f"group {n} faults must be a map")
    faults: dict[int, int] = {}
    for k, code in raw.items():
        if not (_is_int(k) and 0 <= k < changes):
            raise WireError(f"group {n} fault {k!r} names no change")
        if code not in Quality._value2member_map_:
            raise WireError(f"group {n} fault code {code!r} is unknown")
        faults[k] = code
    return faults
