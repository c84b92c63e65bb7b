"""Batches stored exactly once, several in one transaction: the receiver's hot path.

`store_batches` stores a group of batches (of any Boxes) in one transaction with one commit (one
fsync, a few round trips whatever the group's size), where storing each alone cost a transaction
each: what lets one receiver keep up with a fleet (docs/performance.md). Each (Box, epoch, seq) is
stored once, inside a group as across groups: the group's batch rows go in as one insert that
skips the keys stored already and says which it inserted (`_dialect.NewKeys`); only those
batches' samples, spans and latest values are written. A copy of a batch stored before, or of one
earlier in the same group, is a duplicate; with another digest (its payload's hash) a conflict,
recorded in the same transaction. A batch whose rows cannot be made (a group past its table, a
number too large: `WireError`) is refused alone before the transaction; a database error fails
the whole group (nothing of it stored) and the caller stores its batches one by one to find the
bad one (`cloud.receiver`).

Lock order, for writers in parallel on PostgreSQL (several receivers): the batch keys sorted, then
the latest values sorted by (Box, point), then each Box's row, then its stored-notice row, sorted
by Box: two groups never wait on each other in a cycle. The stored notices are marked due in the
transaction (`cloud.store._acks.DUE`): no receiver can say a batch is stored before its commit.
Tables: those of `cloud.store._telemetry`. No network I/O but the database's.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from cloud.store._acks import DUE
from cloud.store._base import StoreBase
from cloud.store._connectors import feed
from cloud.store._dialect import BulkInsert, NewKeys, Prepared, Upsert, lock_writes
from cloud.store._fleet import boxes
from cloud.store._points import Batch, LatestRow, PointTable, SampleRow, SpanRow, sample_rows, span_rows
from cloud.store._telemetry import batches, conflicts, latest, samples, spans
from proto.errors import WireError
from proto.points import PointInfo

Key = tuple[str, int, int]  # (Box, epoch, seq)

_NEW_BATCHES = NewKeys(batches, 3)  # skipped when stored already; says which went in
_SAMPLES = BulkInsert.into(samples)
_LATEST = BulkInsert(Upsert(latest, ["box_id", "point"], lambda new: {  # an older sample changes nothing
    "ts_ms": new.ts_ms, "value": new.value, "quality": new.quality, "unit": new.unit},
    where=lambda new: new.ts_ms >= latest.c.ts_ms), [c.name for c in latest.columns])
_SPANS = BulkInsert.into(spans)
_SEEN = Prepared(lambda _: boxes.update().where(boxes.c.box_id == sa.bindparam("box"))
                 .values(last_seen=sa.bindparam("now")), ["now", "box"])
_FEED = Prepared(lambda _: feed.insert().values(box_id=sa.bindparam("box_id"), table_id=sa.bindparam("table_id"),
                                               base_ts_ms=sa.bindparam("base_ts_ms"), payload=sa.bindparam("payload")),
                 ["box_id", "table_id", "base_ts_ms", "payload"])


class Outcome(enum.Enum):
    """What became of a batch handed to the store."""

    STORED = "stored"  # its rows are in (committed with its group)
    AGAIN = "again"  # stored before (or earlier in its group): nothing written
    CONFLICT = "conflict"  # its number was stored before with other content: recorded in `conflicts`


@dataclass(frozen=True, slots=True)
class Incoming:
    """A decoded batch to store: its Box, its point table, its payload's `digest` (conflicts are told
    by it) and, for the connectors' feed, the `payload` as it came (empty: not fed)."""

    box_id: str
    batch: Batch
    table: PointTable
    digest: bytes = b""
    payload: bytes = b""

    @property
    def key(self) -> Key:
        """(Box, epoch, seq): what is stored once."""
        return (self.box_id, self.batch.epoch, self.batch.seq)


@dataclass(slots=True)
class _Rows:
    """A batch's rows, made before the transaction."""

    at: int  # its place in the group
    item: Incoming
    samples: list[SampleRow]
    latest: list[LatestRow]
    spans: list[SpanRow]
    ts_max: int


class Ingest(StoreBase):
    """Storing batches (a part of `Store`)."""

    def store_batch(self, box_id: str, batch: Batch, table: Sequence[PointInfo], digest: bytes = b"",
                    payload: bytes = b"") -> bool:
        """Store one batch in its own transaction; False when (Box, epoch, seq) was already stored.

        A batch number seen again with a different `digest` is recorded as a conflict (the Box
        re-used a sequence number for other data: lost state, or tampering). With `payload` and
        some connector existing, the batch joins the connectors' feed in the same transaction.

        Raises:
            WireError: a group points outside the table, or a number too large to store.
            StoreError: the database refused it.
        """
        table = table if isinstance(table, PointTable) else PointTable(table)
        outcome = self.store_batches([Incoming(box_id, batch, table, digest, payload)])[0]
        if isinstance(outcome, WireError):
            raise outcome
        return outcome is Outcome.STORED

    def store_batches(self, items: Sequence[Incoming]) -> list[Outcome | WireError]:
        """Store batches in one transaction, each once; each one's outcome, in the order given.

        A batch whose rows cannot be made gets its `WireError` (the others are stored); nothing
        is stored when the database refuses (StoreError): store them one at a time then, to
        keep the others of a batch the database refuses.

        Raises:
            StoreError: the database refused the group (none of it is stored).
        """
        out: list[Outcome | WireError] = [Outcome.AGAIN] * len(items)
        made: list[_Rows] = []
        for at, item in enumerate(items):
            try:
                rows, newest = sample_rows(item.box_id, item.batch, item.table)
                span = span_rows(item.box_id, item.batch, item.table) \
                    if any(g.unchanged for g in item.batch.groups) else []
            except WireError as e:
                out[at] = e
                continue
            ts_max = item.batch.base_ts_ms + max((g.dt_ms for g in item.batch.groups), default=0)
            made.append(_Rows(at, item, rows, newest, span, ts_max))
        if made:
            for at, outcome in self._store_group(made):
                out[at] = outcome
        return out

    def _store_group(self, made: list[_Rows]) -> list[tuple[int, Outcome]]:
        now = time.time()
        first: dict[Key, _Rows] = {}  # the first copy of each batch in the group: the one inserted, if any
        for r in made:
            first.setdefault(r.item.key, r)
        keyed = sorted(first.values(), key=lambda r: r.item.key)  # lock order (module docstring)
        with self._tx(keyed=True) as db:
            # a batch that feeds connectors takes the database's write lock (before any write): the feed's
            # row numbers must be given in commit order, or a connector's pass could move past a number a
            # slower transaction commits later (PostgreSQL)
            to_feed = any(r.item.payload for r in keyed) and self.feeding(db)
            if to_feed:
                lock_writes(db)
            new = _NEW_BATCHES.run(db, [(*r.item.key, now, len(r.samples), r.item.digest, r.ts_max) for r in keyed])
            stored = [r for r in made if r.item.key in new and first[r.item.key] is r]  # in the group's order
            old = [k for k in first if k not in new]
            digests = {k: first[k].item.digest for k in new} | (_digests(db, old) if old else {})
            outcomes: list[tuple[int, Outcome]] = []
            clashes = []
            for r in made:
                if r.item.key in new and first[r.item.key] is r:
                    outcomes.append((r.at, Outcome.STORED))
                    continue
                was = digests.get(r.item.key)
                clash = bool(r.item.digest and was and was != r.item.digest)
                outcomes.append((r.at, Outcome.CONFLICT if clash else Outcome.AGAIN))
                if clash:
                    clashes.append({"box_id": r.item.box_id, "epoch": r.item.batch.epoch, "seq": r.item.batch.seq,
                                    "received": now})
            if clashes:
                db.execute(conflicts.insert(), clashes)
            if stored:
                _write_rows(db, stored, now, to_feed)
        return outcomes


def _write_rows(db: sa.Connection, stored: list[_Rows], now: float, to_feed: bool) -> None:
    """The rows of the batches this group inserted: appends, then keyed updates in lock order."""
    _SAMPLES.run(db, [row for r in stored for row in r.samples])
    _LATEST.run(db, _newest(stored))  # one row a point of a Box, sorted
    _SPANS.run(db, [row for r in stored for row in r.spans])  # one row a span, never one a point
    seen = sorted({r.item.box_id for r in stored})
    _SEEN.run_many(db, [(now, box) for box in seen])
    DUE.run_many(db, [(box,) for box in seen])  # their stored notices are due (cloud.store._acks), if wanted
    if to_feed:
        _FEED.run_many(db, [(r.item.box_id, r.item.batch.table_id, r.item.batch.base_ts_ms, r.item.payload)
                            for r in stored if r.item.payload])


def _newest(stored: list[_Rows]) -> list[LatestRow]:
    """Each (Box, point)'s newest sample in the group (of equal times, the later batch's: as if stored one
    after the other), sorted by (Box, point): an upsert must not name a key twice, and two writers of
    one Box's latest values lock them in one order."""
    newest: dict[tuple[str, str], LatestRow] = {}
    for r in stored:
        for row in r.latest:
            was = newest.get((row[0], row[1]))
            if was is None or row[2] >= was[2]:
                newest[row[0], row[1]] = row
    return [newest[k] for k in sorted(newest)]


def _digests(db: sa.Connection, keys: list[Key]) -> dict[Key, bytes]:
    """The digests stored with batches stored before (for their copies: a conflict or not)."""
    b = batches.c
    rows = db.execute(sa.select(b.box_id, b.epoch, b.seq, b.digest)
                      .where(sa.tuple_(b.box_id, b.epoch, b.seq).in_(keys)))
    return {(str(x), int(e), int(s)): bytes(d) for x, e, s, d in rows if d is not None}


__all__ = ["Incoming", "Ingest", "Outcome"]
