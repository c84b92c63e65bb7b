"""Reading a Box's data for the users' API: points' history over a time range, page by page, and
downsampled aggregates for long ranges.

Both read `samples` through its (Box, time) index: a range of one Box's time, then the points asked
for. On PostgreSQL the query's constant time bounds prune the day partitions to the range's
(`samples_query`), planned with its values each time (`_read(by_time=True)`). Pages are keyed
(the last row's time and point), never offset: the thousandth page costs what the first does.
Aggregates are computed in the database (one row per point and bucket).

Report on change: a Box sends a point's value when it changed, and says of the other polls that
they found it unchanged (a span, `proto.wire`). History gives a row for every poll: the values
sent, and for each poll in a span the value in force then, resolved here when read (a span may
arrive before the value it refers to): the point's last value at or before the span's instant,
within `wire.MAX_AGE_S`. A span is resolved only when nothing its Box sent before it could be
missing: when a batch of its epoch below it was not received (lost, evicted, or not arrived yet),
only values newer than the batch after that gap resolve it (`_barriers`). Unresolved, the poll stays
missing, as a poll neither sent nor spanned does. When a range holds spans, aggregates are computed
here from that history. No network I/O.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Callable, Sequence

import sqlalchemy as sa

from cloud.store._base import StoreBase
from cloud.store._points import PointTable
from cloud.store._telemetry import batches, point_tables, samples, spans
from proto import wire

Sample = tuple[str, int, object, int]  # point, ts_ms, value, quality
Bucket = tuple[str, int, int, float | None, float | None, float | None]  # point, start ms, n, min, max, mean
MAX_AGE_MS = wire.MAX_AGE_S * 1000
_LOOK_BACK_MS = (60_000, 3_600_000, MAX_AGE_MS)  # how far back a span's value is looked for, in turn
_SPAN_CHUNK = 500


class History(StoreBase):
    """Points' history and aggregates (a part of `Store`)."""

    def history(self, box_id: str, points: Sequence[str], since_ms: int, until_ms: int, *,
                after: tuple[int, str] | None, limit: int) -> list[Sample]:
        """Samples of `points` (all when empty) in [since_ms, until_ms), by time then point, those after
        `after` (the last row of the page before), at most `limit`."""
        with self._read(by_time=True) as db:
            rows = db.execute(samples_query(box_id, points, since_ms, until_ms, after=after, limit=limit))
            sent = [(p, int(t), json.loads(v) if v is not None else None, int(q)) for p, t, v, q in rows]
            if not self._has_spans(db, box_id, after[0] if after else since_ms, until_ms):
                return sent
        if len(sent) == limit:  # no span past the page's last value is needed
            until_ms = min(until_ms, sent[-1][1] + 1)
        polled = self._unchanged(box_id, points, since_ms, until_ms, after=after, limit=limit)
        return sorted(sent + polled, key=lambda r: (r[1], r[0]))[:limit]

    def _has_spans(self, db: sa.Connection, box_id: str, since_ms: int, until_ms: int) -> bool:
        s = spans.c
        return bool(db.execute(sa.select(sa.exists().where(s.box_id == box_id, s.ts_ms >= since_ms,
                                                           s.ts_ms < until_ms))).scalar())

    def _unchanged(self, box_id: str, points: Sequence[str], since_ms: int, until_ms: int, *,
                   after: tuple[int, str] | None, limit: int) -> list[Sample]:
        """The polls of `points` in spans, in [since_ms, until_ms) and after `after`, the first `limit` by
        time then point (and those at the last one's instant), each with the value in force then."""
        wanted = set(points)
        s = spans.c
        key = (after[0] if after else since_ms, -1, -1)
        table_of: Callable[[str, int], PointTable | None] = getattr(self, "table")  # noqa: B009 (Telemetry's, in Store)
        barriers: dict[int, list[tuple[int, int]]] = {}
        covering = self._covering(box_id, wanted)
        out: list[Sample] = []
        while True:  # a chunk of spans at a time, resolved, until `limit` polls resolved (and their last instant)
            with self._read(by_time=True) as db:
                chunk = db.execute(
                    sa.select(s.ts_ms, s.table_id, s.first, s.n, s.epoch, s.seq)
                    .where(s.box_id == box_id, s.ts_ms < until_ms, *covering,
                           sa.tuple_(s.ts_ms, s.table_id, s.first) > sa.tuple_(*key))
                    .order_by(s.ts_ms, s.table_id, s.first).limit(_SPAN_CHUNK)).all()
            polls: list[tuple[int, str, int, int]] = []  # ts, point, epoch, seq: not resolved yet
            done = len(chunk) < _SPAN_CHUNK
            for ts, tid, first, n, epoch, seq in chunk:
                if polls and len(out) + len(polls) >= limit and ts > polls[-1][0]:  # enough, if all resolve
                    out += self._resolve(box_id, polls, barriers)
                    polls = []
                if out and len(out) >= limit and ts > out[-1][1]:
                    done = True
                    break
                table = table_of(box_id, int(tid))  # outside a read: it may read the table
                names = table.names[first:first + n] if table is not None else ()
                polls += [(int(ts), p, int(epoch), int(seq)) for p in names
                          if (not wanted or p in wanted) and (after is None or (ts, p) > after)]
            out += self._resolve(box_id, polls, barriers)
            if done:
                return out
            key = (chunk[-1][0], chunk[-1][1], chunk[-1][2])

    def _covering(self, box_id: str, wanted: set[str]) -> list[sa.ColumnElement[bool]]:
        """A condition that keeps the spans that may hold one of `wanted` (none: every span)."""
        if not wanted:
            return []
        s = spans.c
        table_of: Callable[[str, int], PointTable | None] = getattr(self, "table")  # noqa: B009
        with self._read(by_time=True) as db:
            tids = [int(t) for t in db.execute(sa.select(point_tables.c.table_id)
                                               .where(point_tables.c.box_id == box_id)).scalars()]
        ranges = []
        for tid in tids:
            table = table_of(box_id, tid)
            at = [i for i, name in enumerate(table.names) if name in wanted] if table is not None else []
            if at:
                ranges.append(sa.and_(s.table_id == tid, s.first <= max(at), s.first + s.n > min(at)))
        return [sa.or_(*ranges) if ranges else sa.false()]

    def _resolve(self, box_id: str, polls: Sequence[tuple[int, str, int, int]],
                 barriers: dict[int, list[tuple[int, int]]]) -> list[Sample]:
        """Each poll in a span with the value in force then; those that cannot be resolved left out."""
        with self._read(by_time=True) as db:
            values = self._values_before(db, box_id, polls)
            for e in {p[2] for p in polls} - set(barriers):
                barriers[e] = _barriers(db, box_id, e)
        out: list[Sample] = []
        for ts, p, epoch, seq in polls:
            rows = values.get(p, [])
            at = bisect.bisect_right(rows, (ts, 1 << 62)) - 1
            if at < 0:
                continue  # its value is not here (lost, or not arrived yet): missing
            t_v, v, q = rows[at]
            if ts - t_v > MAX_AGE_MS or t_v < _barrier(barriers[epoch], seq):
                continue
            out.append((p, ts, v, q))
        return out

    def _values_before(self, db: sa.Connection, box_id: str,
                       polls: Sequence[tuple[int, str, int, int]]) -> dict[str, list[tuple[int, object, int]]]:
        """Each point's values (ts, value, quality), oldest first, from before its first poll to its last."""
        if not polls:
            return {}
        lo, hi = min(p[0] for p in polls), max(p[0] for p in polls)
        first: dict[str, int] = {}
        for ts, p, _, _ in polls:
            first[p] = min(first.get(p, ts), ts)
        c = samples.c
        found: dict[str, list[tuple[int, object, int]]] = {}
        for back in _LOOK_BACK_MS:  # widened only for the points whose value is further back
            need = [p for p in first if not (found.get(p) and found[p][0][0] <= first[p])]
            if not need:
                break
            rows = db.execute(sa.select(c.point, c.ts_ms, c.value, c.quality)
                              .where(c.box_id == box_id, c.ts_ms >= lo - back, c.ts_ms <= hi, c.point.in_(need))
                              .order_by(c.ts_ms))
            for p in need:
                found[p] = []
            for p, t, v, q in rows:
                found[p].append((int(t), json.loads(v) if v is not None else None, int(q)))
        return found

    def aggregates(self, box_id: str, points: Sequence[str], since_ms: int, until_ms: int, bucket_ms: int, *,
                   after: tuple[int, str] | None, limit: int) -> list[Bucket]:
        """(point, bucket start, count, min, max, mean) of the samples of `points` in buckets of
        `bucket_ms` over [since_ms, until_ms), by bucket then point, after `after`, at most `limit`: the
        count is of every sample, min, max and mean of its finite numbers (None without any: a
        boolean, text or state point), the same on SQLite and PostgreSQL."""
        with self._read(by_time=True) as db:
            resolved = self._has_spans(db, box_id, since_ms, until_ms)
        if resolved:
            return self._aggregates_of_history(box_id, points, since_ms, until_ms, bucket_ms, after=after, limit=limit)
        c = samples.c
        start = (c.ts_ms - (c.ts_ms % bucket_ms)).label("start")
        number = sa.case((_finite_number(c.value), sa.cast(c.value, sa.Float)))  # else NULL: no min, max or mean
        query = (sa.select(c.point, start, sa.func.count(), sa.func.min(number), sa.func.max(number),
                           sa.func.avg(number))
                 .where(c.box_id == box_id, c.ts_ms >= since_ms, c.ts_ms < until_ms)
                 .group_by(c.point, start))
        if points:
            query = query.where(c.point.in_(list(points)))
        if after is not None:
            query = query.having(sa.or_(start > after[0], sa.and_(start == after[0], c.point > after[1])))
        with self._read(by_time=True) as db:
            rows = db.execute(query.order_by(start, c.point).limit(limit))
            return [(str(p), int(s), int(n), _num(lo), _num(hi), _num(mean)) for p, s, n, lo, hi, mean in rows]


    def _aggregates_of_history(self, box_id: str, points: Sequence[str], since_ms: int, until_ms: int,
                               bucket_ms: int, *, after: tuple[int, str] | None, limit: int) -> list[Bucket]:
        """`aggregates` over the history with its spans resolved (a value in force counts at every poll)."""
        acc: dict[tuple[int, str], list[float]] = {}  # (bucket start, point) -> [n, numbers, min, max, sum]
        key: tuple[int, str] | None = None
        while True:
            page = self.history(box_id, points, since_ms, until_ms, after=key, limit=10_000)
            for p, ts, v, _ in page:
                a = acc.setdefault((ts - ts % bucket_ms, p), [0, 0, float("inf"), float("-inf"), 0.0])
                a[0] += 1
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                    a[1] += 1
                    a[2], a[3], a[4] = min(a[2], v), max(a[3], v), a[4] + v
            if len(page) < 10_000:
                break
            key = (page[-1][1], page[-1][0])
        out = [(p, start, int(a[0]), a[2] if a[1] else None, a[3] if a[1] else None, a[4] / a[1] if a[1] else None)
               for (start, p), a in sorted(acc.items()) if after is None or (start, p) > after]
        return out[:limit]


def samples_query(box_id: str, points: Sequence[str], since_ms: int, until_ms: int, *,
                  after: tuple[int, str] | None, limit: int) -> sa.Select[str, int, str, int]:
    """The samples `History.history` reads (its arguments): bounded by constants on ``ts_ms``, which
    is what lets PostgreSQL read only the partitions of the range."""
    c = samples.c
    query = sa.select(c.point, c.ts_ms, c.value, c.quality).where(
        c.box_id == box_id, c.ts_ms >= since_ms, c.ts_ms < until_ms)
    if points:
        query = query.where(c.point.in_(list(points)))
    if after is not None:
        query = query.where(sa.or_(c.ts_ms > after[0], sa.and_(c.ts_ms == after[0], c.point > after[1])))
    return query.order_by(c.ts_ms, c.point).limit(limit)


def _barriers(db: sa.Connection, box_id: str, epoch: int) -> list[tuple[int, int]]:
    """(seq, newest reading) of each stored batch of `epoch` that follows a gap (numbers not stored
    below it: lost, evicted, or not arrived yet), by seq."""
    b = batches.c
    prev = sa.func.lag(b.seq).over(order_by=b.seq).label("prev")
    inner = sa.select(b.seq, b.ts_max, prev).where(b.box_id == box_id, b.epoch == epoch).subquery()
    rows = db.execute(sa.select(inner.c.seq, inner.c.ts_max)
                      .where(sa.or_(sa.and_(inner.c.prev.is_(None), inner.c.seq > 1), inner.c.prev != inner.c.seq - 1))
                      .order_by(inner.c.seq))
    return [(int(seq), int(t) if t is not None else 0) for seq, t in rows]


def _barrier(after_gaps: list[tuple[int, int]], seq: int) -> int:
    """The time a value must be at or after to resolve a span of batch `seq`: the newest reading of
    the latest batch after a gap at or below `seq` (0: no gap)."""
    at = bisect.bisect_right(after_gaps, (seq, 1 << 62)) - 1
    return max((t for _, t in after_gaps[:at + 1]), default=0)


def _finite_number(value: sa.ColumnElement[str]) -> sa.ColumnElement[bool]:
    """Whether a stored value (JSON text, `cloud.store._points`) is a finite number: JSON numbers start
    with a digit or '-', and Python's JSON writes the non-finite ones NaN, Infinity and -Infinity.
    SQLite's CAST reads "true" or '"on"' as 0.0 and PostgreSQL's refuses them (the whole query fails):
    booleans, text and null are counted, and have no min, max or mean, on both as in Python."""
    return sa.and_(sa.func.substr(value, 1, 1).in_(list("-0123456789")), value != "-Infinity")


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) else None
