"""Reading a Box's data for the users' API: points' history over a time range, page by page, and
downsampled aggregates for long ranges.

Both read `samples` through its (Box, time) index: a range of one Box's time, then the points asked
for. Pages are keyed (the last row's time and point), never offset: the thousandth page costs what the
first does. Aggregates are computed in the database (one row per point and bucket). No network I/O.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa

from cloud.store._base import StoreBase
from cloud.store._telemetry import samples

Sample = tuple[str, int, object, int]  # point, ts_ms, value, quality
Bucket = tuple[str, int, int, float | None, float | None, float | None]  # point, start ms, n, min, max, mean


class History(StoreBase):
    """Points' history and aggregates (a part of `Store`)."""

    def history(self, box_id: str, points: Sequence[str], since_ms: int, until_ms: int, *,
                after: tuple[int, str] | None, limit: int) -> list[Sample]:
        """Samples of `points` (all when empty) in [since_ms, until_ms), by time then point, those after
        `after` (the last row of the page before), at most `limit`."""
        c = samples.c
        query = sa.select(c.point, c.ts_ms, c.value, c.quality).where(
            c.box_id == box_id, c.ts_ms >= since_ms, c.ts_ms < until_ms)
        if points:
            query = query.where(c.point.in_(list(points)))
        if after is not None:
            query = query.where(sa.or_(c.ts_ms > after[0], sa.and_(c.ts_ms == after[0], c.point > after[1])))
        with self._read() as db:
            rows = db.execute(query.order_by(c.ts_ms, c.point).limit(limit))
            return [(p, int(t), json.loads(v) if v is not None else None, int(q)) for p, t, v, q in rows]

    def aggregates(self, box_id: str, points: Sequence[str], since_ms: int, until_ms: int, bucket_ms: int, *,
                   after: tuple[int, str] | None, limit: int) -> list[Bucket]:
        """(point, bucket start, count, min, max, mean) of the numeric samples of `points` in buckets
        of `bucket_ms` over [since_ms, until_ms), by bucket then point, after `after`, at most `limit`."""
        c = samples.c
        start = (c.ts_ms - (c.ts_ms % bucket_ms)).label("start")
        number = sa.cast(c.value, sa.Float)
        query = (sa.select(c.point, start, sa.func.count(), sa.func.min(number), sa.func.max(number),
                           sa.func.avg(number))
                 .where(c.box_id == box_id, c.ts_ms >= since_ms, c.ts_ms < until_ms)
                 .group_by(c.point, start))
        if points:
            query = query.where(c.point.in_(list(points)))
        if after is not None:
            query = query.having(sa.or_(start > after[0], sa.and_(start == after[0], c.point > after[1])))
        with self._read() as db:
            rows = db.execute(query.order_by(start, c.point).limit(limit))
            return [(str(p), int(s), int(n), _num(lo), _num(hi), _num(mean)) for p, s, n, lo, hi, mean in rows]


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) else None
