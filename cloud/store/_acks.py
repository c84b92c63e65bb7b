"""The end-to-end acknowledgement: which Boxes want to hear "stored up to (epoch, seq)", what each
was last told, and when a notice is due (table `stored_acks`). No network I/O: the receivers send.

A Box that keeps its batches until they are stored says so in its online status, with the least time
between two notices it wants (`want_acks`); its heartbeats say the oldest batch it still holds
(`note_held`). Storing a batch of that Box marks a notice due (`Telemetry.store_batch`, in its own
transaction), and so does a batch that comes again (`again`: the Box missed a notice). A receiver
(any of them: the row is the only state) claims a due notice at most once in the Box's interval
(`claim_notice`, a conditional update: two receivers never both send it) and says the highest seq
up to which every batch from the oldest held one is stored or was reported evicted. Counting from
the oldest batch the Box holds, never from a guess: a hole below it is not the platform's to judge,
and a hole above it (a batch lost with a receiver) stops the cumulative seq until the Box sends it
again; the batches stored past the hole go with it (a bitmap of `MAX_AHEAD`), so that the Box sends
again only the missing batches, not all that followed them.
"""

from __future__ import annotations

import time

import sqlalchemy as sa

from cloud.store._base import BIGINT, SECONDS, StoreBase, metadata
from cloud.store._dialect import Prepared, Upsert
from proto.downlink import MAX_AHEAD, StoredNotice

MAX_WALK = 20_000  # stored batches read to find how far the run goes, at most, per notice

stored_acks = sa.Table(
    "stored_acks", metadata,
    sa.Column("box_id", sa.Text, primary_key=True),
    sa.Column("every_s", sa.Integer, nullable=False),  # the least time between two notices (the Box's)
    sa.Column("epoch", BIGINT, nullable=False, server_default=sa.text("0")),  # its queue's, from its heartbeat
    sa.Column("start", BIGINT, nullable=False, server_default=sa.text("0")),  # the oldest seq it holds (0: unknown)
    sa.Column("upto", BIGINT, nullable=False, server_default=sa.text("0")),  # the last seq it was told
    sa.Column("due", sa.Boolean, nullable=False, server_default=sa.false()),  # something new may be stored
    sa.Column("again", sa.Boolean, nullable=False, server_default=sa.false()),  # it missed a notice: tell again
    sa.Column("sent", SECONDS, nullable=False, server_default=sa.text("0")),
)

# in every batch's transaction: a no-op for a Box that does not want notices (no row)
DUE = Prepared(lambda _: stored_acks.update().where(stored_acks.c.box_id == sa.bindparam("box"),
                                                    stored_acks.c.due == sa.false()).values(due=sa.true()), ["box"])
_WANT = Upsert(stored_acks, ["box_id"], lambda new: {"every_s": new.every_s})


class StoredAcks(StoreBase):
    """The Boxes' stored notices."""

    def want_acks(self, box_id: str, every_s: int) -> None:
        """A Box's online status: it wants a notice at most every `every_s` seconds (0: it does not)."""
        with self._tx() as db:
            if every_s > 0:
                db.execute(_WANT(db), {"box_id": box_id, "every_s": every_s})
            else:
                db.execute(stored_acks.delete().where(stored_acks.c.box_id == box_id))

    def note_held(self, box_id: str, epoch: int, start: int) -> None:
        """A Box's heartbeat: the oldest batch of queue `epoch` it holds is `start` (when it holds none,
        the one after its last). A held batch the Box was told is stored means it missed the notice."""
        a = stored_acks.c
        with self._tx() as db:
            row = db.execute(sa.select(a.epoch, a.upto, a.again).where(a.box_id == box_id)).first()
            if row is None:
                return
            upto = int(row.upto) if int(row.epoch) == epoch else 0
            db.execute(stored_acks.update().where(a.box_id == box_id).values(
                epoch=epoch, start=start, upto=upto, due=True, again=bool(row.again) or 0 < start <= upto))

    def ack_again(self, box_id: str) -> None:
        """A batch came again: the Box may have missed a notice (sent once more, when due)."""
        a = stored_acks.c
        with self._tx() as db:
            db.execute(stored_acks.update().where(a.box_id == box_id).values(due=True, again=True))

    def acks_due(self, now: float | None = None, limit: int = 500) -> list[str]:
        """Boxes whose notice is due now (something new, and their interval since the last one passed)."""
        a, now = stored_acks.c, now or time.time()
        with self._read() as db:
            return list(db.execute(sa.select(a.box_id).where(a.due == sa.true(), a.sent <= now - a.every_s)
                                   .limit(limit)).scalars())

    def claim_notice(self, box_id: str, now: float | None = None) -> StoredNotice | None:
        """Claim a Box's due notice (None when another receiver did, or nothing new can be said)."""
        a, now = stored_acks.c, now or time.time()
        ready = (a.box_id == box_id) & (a.due == sa.true()) & (a.sent <= now - a.every_s)
        with self._tx(keyed=True) as db:
            row = db.execute(sa.select(a.epoch, a.start, a.upto, a.again).where(ready)).first()
            if row is None or db.execute(stored_acks.update().where(ready).values(
                    due=False, again=False, sent=now)).rowcount != 1:
                return None
            epoch, start, upto = int(row.epoch), int(row.start), int(row.upto)
            if start <= 0:
                return None  # no heartbeat yet: where the Box's batches start is not known
            reached, ahead = self._stored_runs(db, box_id, epoch, max(start, upto + 1))
            if reached > upto or ahead or (row.again and reached >= start):
                db.execute(stored_acks.update().where(a.box_id == box_id).values(upto=max(reached, upto)))
                return StoredNotice(epoch, max(reached, upto), frozenset(ahead))
        return None

    def _stored_runs(self, db: sa.Connection, box_id: str, epoch: int, first: int) -> tuple[int, list[int]]:
        """The highest seq n such that every batch from `first` to n was stored or reported evicted
        (`first` - 1 when `first` is missing), and the batches stored past the hole after n (up to
        n + `MAX_AHEAD`)."""
        from cloud.store._telemetry import batches, evicted

        b, e = batches.c, evicted.c
        seqs = [int(s) for s in db.execute(sa.select(b.seq).where(b.box_id == box_id, b.epoch == epoch,
                                                                  b.seq >= first).order_by(b.seq).limit(MAX_WALK))
                .scalars()]
        gone = [(int(x), int(y)) for x, y in db.execute(
            sa.select(e.seq_from, e.seq_to).where(e.box_id == box_id, e.epoch == epoch, e.seq_to >= first))]
        n = first - 1
        for i, s in enumerate(seqs):
            n = _past_evicted(n, gone)
            if s > n + 1:
                return n, [x for x in seqs[i:] if x <= n + MAX_AHEAD]
            n = max(n, s)
        return _past_evicted(n, gone), []


def _past_evicted(n: int, gone: list[tuple[int, int]]) -> int:
    """`n` moved past the evicted ranges that start right after it."""
    moved = True
    while moved:
        moved = False
        for x, y in gone:
            if x <= n + 1 <= y:
                n, moved = y, True
    return n
