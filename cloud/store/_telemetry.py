"""Telemetry: point tables, batches stored exactly once, samples, each point's latest value, and the
messages put aside (batches waiting for their table, messages over a Box's decoding budget).

Each (Box, epoch, seq) batch is stored once: the batch row and its samples are written in one
transaction, and a batch seen again is skipped (or, with other content, recorded as a conflict).
That path runs for every batch: its statements are compiled once and its rows go to the driver,
many a statement (`cloud.store._dialect.BulkInsert`).

`samples` is indexed by (Box, time), not by (Box, point, time): batches arrive in time order, so
each one appends to the index, where a per-point index took a write in a different page for
nearly every sample (docs/performance.md). A point's history is read through the time index.
A batch's spans (points polled and unchanged, `proto.wire`) are stored as they came, one row a
span in `spans`, and resolved when read (`cloud.store._history`). Tables `point_tables`,
`batches`, `conflicts`, `samples`, `latest`, `spans`, `evicted`, `parked_batches`, `deferred`. No network I/O.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping, Sequence
from operator import itemgetter
from pathlib import Path

import sqlalchemy as sa

from cloud.pacing import Lru
from cloud.store._acks import DUE
from cloud.store._base import BIGINT, ROW_ID, SECONDS, StoreBase, metadata
from cloud.store._connectors import feed
from cloud.store._dialect import BulkInsert, Prepared, Upsert, no_limit_params
from cloud.store._fleet import boxes
from cloud.store._points import Batch, PointTable, sample_rows, span_rows
from proto.points import PointInfo

MAX_CACHED_POINTS = 500_000  # parsed point tables kept in memory, in points (about 100 MB at most)
MAX_TABLES_PER_BOX = 2  # a Box has one table, two while it is reconfigured

point_tables = sa.Table(
    "point_tables", metadata,
    sa.Column("box_id", sa.Text, primary_key=True),
    sa.Column("table_id", BIGINT, primary_key=True),  # unsigned 32 bits
    sa.Column("points", sa.Text, nullable=False),  # JSON: [[name, unit, kind], ...]
)
batches = sa.Table(
    "batches", metadata,
    sa.Column("box_id", sa.Text, primary_key=True),
    sa.Column("epoch", BIGINT, primary_key=True),
    sa.Column("seq", BIGINT, primary_key=True),
    sa.Column("received", SECONDS, nullable=False),
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("digest", sa.LargeBinary),
    sa.Column("ts_max", BIGINT),  # its newest reading (spans are resolved only past a batch lost before)
)
conflicts = sa.Table(
    "conflicts", metadata,
    sa.Column("box_id", sa.Text, nullable=False),
    sa.Column("epoch", BIGINT, nullable=False),
    sa.Column("seq", BIGINT, nullable=False),
    sa.Column("received", SECONDS, nullable=False),
)
samples = sa.Table(
    "samples", metadata,
    sa.Column("box_id", sa.Text, nullable=False),
    sa.Column("point", sa.Text, nullable=False),
    sa.Column("ts_ms", BIGINT, nullable=False),
    sa.Column("value", sa.Text),  # JSON
    sa.Column("quality", sa.Integer, nullable=False),
    sa.Index("samples_by_time", "box_id", "ts_ms"),
    postgresql_partition_by="RANGE (ts_ms)",  # a partition a day (cloud.store._partitions)
)
latest = sa.Table(
    "latest", metadata,
    sa.Column("box_id", sa.Text, primary_key=True),
    sa.Column("point", sa.Text, primary_key=True),
    sa.Column("ts_ms", BIGINT, nullable=False),
    sa.Column("value", sa.Text),
    sa.Column("quality", sa.Integer, nullable=False),
    sa.Column("unit", sa.Text, nullable=False),
)
spans = sa.Table(  # points polled and unchanged (proto.wire), resolved when read (cloud.store._history)
    "spans", metadata,
    sa.Column("box_id", sa.Text, nullable=False),
    sa.Column("epoch", BIGINT, nullable=False),
    sa.Column("seq", BIGINT, nullable=False),
    sa.Column("table_id", BIGINT, nullable=False),
    sa.Column("ts_ms", BIGINT, nullable=False),
    sa.Column("first", sa.Integer, nullable=False),
    sa.Column("n", sa.Integer, nullable=False),
    sa.Index("spans_by_time", "box_id", "ts_ms"),
    postgresql_partition_by="RANGE (ts_ms)",
)
evicted = sa.Table(
    "evicted", metadata,
    sa.Column("box_id", sa.Text, nullable=False),
    sa.Column("epoch", BIGINT, nullable=False),
    sa.Column("seq_from", BIGINT, nullable=False),
    sa.Column("seq_to", BIGINT, nullable=False),
    sa.Column("samples", BIGINT, nullable=False),
    sa.Column("received", SECONDS, nullable=False),
)
parked_batches = sa.Table(
    "parked_batches", metadata,
    sa.Column("box_id", sa.Text, nullable=False),
    sa.Column("table_id", BIGINT, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("received", SECONDS, nullable=False),
)
deferred = sa.Table(
    "deferred", metadata,
    sa.Column("id", ROW_ID, primary_key=True),  # the order messages were put aside in
    sa.Column("box_id", sa.Text, nullable=False),
    sa.Column("leaf", sa.Text, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("received", SECONDS, nullable=False),
    sa.Index("deferred_by_box", "box_id", "id"),
)

# the hot path: compiled once per dialect, rows as tuples straight to the driver
_NEW_BATCH = Prepared(Upsert(batches), [c.name for c in batches.columns])  # skipped when stored already
_SAMPLES = BulkInsert.into(samples)
_LATEST = BulkInsert(Upsert(latest, ["box_id", "point"], lambda new: {  # an older sample changes nothing
    "ts_ms": new.ts_ms, "value": new.value, "quality": new.quality, "unit": new.unit},
    where=lambda new: new.ts_ms >= latest.c.ts_ms), [c.name for c in latest.columns])
_SPANS = BulkInsert.into(spans)

_LATEST_OF = Prepared(lambda _: sa.select(latest.c.point, latest.c.ts_ms, latest.c.value, latest.c.quality,
                                           latest.c.unit).where(latest.c.box_id == sa.bindparam("box"))
                      .order_by(latest.c.point), ["box"])  # every API read of latest values
_NEWEST_SPANS = Prepared(lambda _: no_limit_params(
    sa.select(spans.c.ts_ms, spans.c.table_id, spans.c.first, spans.c.n)
    .where(spans.c.box_id == sa.bindparam("box"), spans.c.ts_ms >= sa.bindparam("since"))
    .order_by(spans.c.ts_ms.desc(), spans.c.table_id.desc(), spans.c.first.desc()), 500), ["box", "since"])
_SEEN = Prepared(lambda _: boxes.update().where(boxes.c.box_id == sa.bindparam("box"))
                 .values(last_seen=sa.bindparam("now")), ["now", "box"])
_FEED = Prepared(lambda _: feed.insert().values(box_id=sa.bindparam("box_id"), table_id=sa.bindparam("table_id"),
                                               base_ts_ms=sa.bindparam("base_ts_ms"), payload=sa.bindparam("payload")),
                 ["box_id", "table_id", "base_ts_ms", "payload"])
_TABLE = Upsert(point_tables)  # a table id names its content: stored already, nothing to do


class Telemetry(StoreBase):
    """Point tables, batches and samples (a part of `Store`)."""

    def __init__(self, where: Path | str, *, migrate: bool = True) -> None:
        super().__init__(where, migrate=migrate)
        # parsed point tables, per Box: a table id names its content, so never stale; at most
        # MAX_TABLES_PER_BOX a Box (its newest) and MAX_CACHED_POINTS in all (a Box sending huge
        # tables evicts its own, then the least recently used, it does not grow the cloud)
        self._tables: Lru[str, dict[int, PointTable]] = Lru(MAX_CACHED_POINTS, lambda d: sum(map(len, d.values())))
        self._tables_lock = threading.Lock()

    def put_table(self, box_id: str, table_id: int, points: Sequence[PointInfo]) -> None:
        """Remember a Box's point table."""
        body = json.dumps([[p.name, p.unit, p.kind] for p in points])
        with self._tx() as db:
            db.execute(_TABLE(db), {"box_id": box_id, "table_id": table_id, "points": body})
        self._cache_table(box_id, table_id, PointTable(points))

    def table(self, box_id: str, table_id: int) -> PointTable | None:
        """A Box's point table, or None when it has not been received."""
        with self._tables_lock:
            cached = (self._tables.get(box_id) or {}).get(table_id)
        if cached is not None:
            return cached
        t = point_tables.c
        with self._read() as db:
            body = db.execute(sa.select(t.points).where(t.box_id == box_id, t.table_id == table_id)).scalar()
        if body is None:
            return None
        table = PointTable(PointInfo(*p) for p in json.loads(body))
        self._cache_table(box_id, table_id, table)
        return table

    def _cache_table(self, box_id: str, table_id: int, table: PointTable) -> None:
        with self._tables_lock:
            tables = dict(self._tables.get(box_id) or {})
            tables.pop(table_id, None)
            tables[table_id] = table  # the newest last
            while len(tables) > MAX_TABLES_PER_BOX:
                del tables[next(iter(tables))]
            self._tables.put(box_id, tables)

    def cached_points(self) -> int:
        """Points held by the point-table cache (at most MAX_CACHED_POINTS)."""
        return self._tables.size

    def store_batch(self, box_id: str, batch: Batch, table: Sequence[PointInfo], digest: bytes = b"",
                    payload: bytes = b"") -> bool:
        """Store a batch's samples once; returns False when (Box, epoch, seq) was already stored.

        A batch number seen again with a different `digest` (its payload's hash) is recorded as a
        conflict: the Box re-used a sequence number for other data (lost state, or tampering).
        With `payload` (the batch as it came) and some connector existing, the batch joins the
        connectors' feed in the same transaction (`cloud.store._connectors`).

        Raises:
            WireError: a group points outside the table, or a number too large to store.
        """
        table = table if isinstance(table, PointTable) else PointTable(table)
        rows, newest = sample_rows(box_id, batch, table)
        span = span_rows(box_id, batch, table) if any(g.unchanged for g in batch.groups) else []
        ts_max = batch.base_ts_ms + max((g.dt_ms for g in batch.groups), default=0)
        newest.sort(key=itemgetter(1))  # by point: two writers of one Box's latest values lock them in one order
        now = time.time()
        to_feed = bool(payload) and self.feeding()
        # keyed: the batch's key first (a writer storing the same batch waits for this one's commit, then
        # skips it), then appends, the latest values by key, the Box's row: no database-wide lock. A batch
        # that feeds connectors takes the lock: the feed's row numbers must be given in commit order, or a
        # connector's pass could move past a number a slower transaction commits later (PostgreSQL)
        with self._tx(keyed=not to_feed) as db:
            if _NEW_BATCH.run(db, (box_id, batch.epoch, batch.seq, now, len(rows), digest, ts_max)) == 0:
                b = batches.c
                old = db.execute(sa.select(b.digest).where(b.box_id == box_id, b.epoch == batch.epoch,
                                                           b.seq == batch.seq)).scalar()
                if digest and old and bytes(old) != digest:
                    db.execute(conflicts.insert().values(box_id=box_id, epoch=batch.epoch, seq=batch.seq,
                                                         received=now))
                return False
            _SAMPLES.run(db, rows)
            _LATEST.run(db, newest)  # one row a point
            _SPANS.run(db, span)  # one row a span, never one a point
            _SEEN.run(db, (now, box_id))
            DUE.run(db, (box_id,))  # its stored notice is due (cloud.store._acks), if it wants them
            if to_feed:
                _FEED.run(db, (box_id, batch.table_id, batch.base_ts_ms, payload))
        return True

    def latest(self, box_id: str) -> list[tuple[str, int, object, int, str]]:
        """(point, ts_ms, value, quality, unit) of each point's latest sample."""
        with self._read() as db:
            rows = _LATEST_OF.rows(db, (box_id,))
        return [(p, int(t), json.loads(v) if v is not None else None, int(q), u) for p, t, v, q, u in rows]

    def confirmed(self, box_id: str, latest_ts: Mapping[str, int] | None = None) -> dict[str, int]:
        """Point -> the newest poll that found its latest value unchanged (a span at or after the value's
        time, report on change), for the points that have one. Read from the newest spans back, only
        as far as the oldest latest value still unconfirmed (not at all without spans). `latest_ts`:
        each point's latest value's time, when the caller has just read them (`latest`)."""
        s = spans.c
        out: dict[str, int] = {}
        if latest_ts is None:
            with self._read() as db:
                rows = db.execute(sa.select(latest.c.point, latest.c.ts_ms).where(latest.c.box_id == box_id))
                latest_ts = {str(p): int(t) for p, t in rows}
        need = dict(latest_ts)
        key: tuple[int, int, int] | None = None
        while need:
            with self._read() as db:
                if key is None:  # the first chunk, usually the only one: prepared (every API read of latest values)
                    chunk = _NEWEST_SPANS.rows(db, (box_id, min(need.values())))
                else:
                    query = sa.select(s.ts_ms, s.table_id, s.first, s.n).where(
                        s.box_id == box_id, s.ts_ms >= min(need.values()),
                        sa.tuple_(s.ts_ms, s.table_id, s.first) < sa.tuple_(*key))
                    chunk = list(db.execute(query.order_by(s.ts_ms.desc(), s.table_id.desc(), s.first.desc())
                                            .limit(500)).tuples())
            for ts, tid, first, n in chunk:
                table = self.table(box_id, int(tid))
                for p in table.names[first:first + n] if table is not None else ():
                    if need.get(p, ts + 1) <= ts:
                        out[p] = int(ts)
                        del need[p]
            if len(chunk) < 500:
                break
            key = (chunk[-1][0], chunk[-1][1], chunk[-1][2])
        return out

    def samples(self, box_id: str, point: str | None = None) -> list[tuple[str, int, object, int]]:
        """Every stored sample of a Box (or of one point), oldest first (then by point)."""
        c = samples.c
        query = sa.select(c.point, c.ts_ms, c.value, c.quality).where(c.box_id == box_id)
        if point is not None:
            query = query.where(c.point == point)
        with self._read() as db:
            rows = db.execute(query.order_by(c.ts_ms, c.point))
            return [(p, int(t), json.loads(v) if v is not None else None, int(q)) for p, t, v, q in rows]

    def conflicts(self, box_id: str) -> list[tuple[int, int]]:
        """(epoch, seq) of batches that came again with different content."""
        c = conflicts.c
        with self._read() as db:
            rows = db.execute(sa.select(c.epoch, c.seq).where(c.box_id == box_id).order_by(c.received))
            return [(int(e), int(s)) for e, s in rows]

    def batch_keys(self, box_id: str) -> list[tuple[int, int]]:
        """(epoch, seq) of every batch stored for a Box."""
        c = batches.c
        with self._read() as db:
            rows = db.execute(sa.select(c.epoch, c.seq).where(c.box_id == box_id).order_by(c.epoch, c.seq))
            return [(int(e), int(s)) for e, s in rows]

    # -- gaps and evictions ---------------------------------------------------------------------

    def put_evicted(self, box_id: str, epoch: int, ranges: list[list[int]], samples: int) -> None:
        """Remember batches a Box evicted (they are not gaps)."""
        now = time.time()
        if ranges:
            with self._tx() as db:
                db.execute(evicted.insert(), [{"box_id": box_id, "epoch": epoch, "seq_from": a, "seq_to": b,
                                               "samples": samples, "received": now} for a, b in ranges])

    def evicted_ranges(self, box_id: str, epoch: int) -> list[tuple[int, int]]:
        """(first, last) sequence numbers of the batches a Box reported evicted in an epoch."""
        c = evicted.c
        with self._read() as db:
            rows = db.execute(sa.select(c.seq_from, c.seq_to).where(c.box_id == box_id, c.epoch == epoch)
                              .order_by(c.seq_from))
            return [(int(a), int(b)) for a, b in rows]

    def missing_seqs(self, box_id: str, epoch: int, below: int, limit: int = 20) -> list[int]:
        """Sequence numbers under `below` that were neither stored nor reported evicted."""
        c = batches.c
        with self._read() as db:
            have = {int(s) for s in db.execute(sa.select(c.seq).where(c.box_id == box_id, c.epoch == epoch,
                                                                      c.seq < below)).scalars()}
        for a, b in self.evicted_ranges(box_id, epoch):
            have.update(range(a, b + 1))
        out = []
        for s in range(1, below):
            if s not in have:
                out.append(s)
                if len(out) >= limit:
                    break
        return out

    def first_seq(self, box_id: str, epoch: int) -> int:
        """The lowest sequence number seen for a Box's epoch (0 when none)."""
        c = batches.c
        with self._read() as db:
            low = db.execute(sa.select(sa.func.min(c.seq)).where(c.box_id == box_id, c.epoch == epoch)).scalar()
        return int(low) if low is not None else 0

    # -- messages put aside (a Box over its decoding budget, see cloud.receiver) ------------------

    def defer(self, box_id: str, leaf: str, payload: bytes, limit: int) -> bool:
        """Keep a message to decode later; False when the Box already has `limit` put aside."""
        with self._tx() as db:
            if _count(db, deferred, box_id) >= limit:
                return False
            db.execute(deferred.insert().values(box_id=box_id, leaf=leaf, payload=payload, received=time.time()))
        return True

    def deferred_counts(self) -> dict[str, int]:
        """Box -> messages put aside."""
        c = deferred.c
        with self._read() as db:
            return {str(b): int(n) for b, n in db.execute(sa.select(c.box_id, sa.func.count()).group_by(c.box_id))}

    def next_deferred(self, box_id: str) -> tuple[int, str, bytes] | None:
        """(id, leaf, payload) of a Box's oldest message put aside."""
        c = deferred.c
        with self._read() as db:
            r = db.execute(sa.select(c.id, c.leaf, c.payload).where(c.box_id == box_id).order_by(c.id).limit(1)).first()
        return (int(r.id), str(r.leaf), bytes(r.payload)) if r else None

    def drop_deferred(self, row_id: int) -> None:
        """Forget a message put aside (it was handled)."""
        with self._tx() as db:
            db.execute(deferred.delete().where(deferred.c.id == row_id))

    def park(self, box_id: str, table_id: int, payload: bytes, limit: int) -> bool:
        """Keep a batch whose point table has not arrived yet; False when the Box already has `limit` parked."""
        with self._tx() as db:
            if _count(db, parked_batches, box_id) >= limit:
                return False
            db.execute(parked_batches.insert().values(box_id=box_id, table_id=table_id, payload=payload,
                                                      received=time.time()))
        return True

    def unpark(self, box_id: str, table_id: int) -> list[bytes]:
        """Take the parked batches of a table that has now arrived."""
        c = parked_batches.c
        which = (c.box_id == box_id, c.table_id == table_id)
        with self._tx() as db:
            payloads = [bytes(p) for p in db.execute(sa.select(c.payload).where(*which).order_by(c.received)).scalars()]
            db.execute(parked_batches.delete().where(*which))
        return payloads


def _count(db: sa.Connection, table: sa.Table, box_id: str) -> int:
    return int(db.execute(sa.select(sa.func.count()).select_from(table).where(table.c.box_id == box_id)).scalar_one())
