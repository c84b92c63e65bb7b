"""The durable store-and-forward queue of the Box (SQLite), between the buses and the uplink.

Readings go in as *pending groups* (one row per run of points read at one instant, or per *span*
of points polled and unchanged, `boxd.onchange`: durable like values, counted as one sample).
`seal()` turns the oldest pending groups into *batches*: encoded, numbered payloads
ready for the wire. A batch leaves the queue only when `ack()` says the broker has
it (QoS 1), so nothing is lost while the broker is unreachable, and a batch sent
again after a crash carries the same (epoch, seq) and the same bytes, so the cloud
keeps it once. Small *events* (evictions, updates) are queued the same way.

Who writes: one thread (`boxd.sqlwriter.GroupWriter`), never the event loop. Every
write is a job of that thread, run in the order it was asked for; jobs that wait
together share one transaction and one fsync (group commit). `put_many` returns a
future that resolves once the readings are committed: the daemon's `emit` awaits it,
so a reading acknowledged to its bus is on disk. `seal` is a job too, so it sees
exactly what was written before it, and a batch becomes readable for sending only
once the transaction that made it committed: nothing sent is made of groups that
are not durable. `ack` and `ack_event` are written without anyone waiting: the batch
or event is hidden from the readers at once (never sent again, never counted) and
removed when its job commits (a failed removal shows it again, and it is resent).
`enforce_limit` picks the batches to evict on the loop, among those not in flight,
and hides them at once (so they cannot be sent meanwhile); its job deletes them,
evicts pending groups if needed, adds to the "evicted_total" counter and queues the
`evicted` event, all in one transaction. The reads (`batches`, `events`, `depth`...)
run on the loop on a read-only connection of their own: short queries that wait for
no fsync, and see only committed (durable) transactions (WAL).

Size limit: when the queue holds more than `max_samples`, the oldest samples are
evicted (oldest batches first, then the oldest pending groups; never a batch in
flight), and the count goes to the cloud in an event.

Time: a group carries the wall-clock time of its reading when the Box's clock is
trusted; otherwise it carries the monotonic time and the boot it belongs to, and is
sealed only once the clock is trusted (re-based then). A group from an earlier boot
whose clock was never trusted is sealed with `base_ts_ms = 0`: "time unknown".

SQLite settings, chosen for power loss: WAL journal (a torn write never corrupts
committed data), synchronous=FULL (a committed transaction is on the disk). This
module does not talk to the network.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sqlite3
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from boxd import _queuesql as sql
from boxd._queuesql import Group, TimeBase
from boxd.errors import QueueError
from boxd.sqlwriter import GroupWriter
from boxkit.files import private_db, private_dir
from drivers import Value

__all__ = ["Group", "Queue", "TimeBase"]

# The page cache of each connection (SQLite's default is 2 MiB each, resident once a long outage
# has filled the queue). The work is appends at one end and reads at the other: a small cache
# serves both (docs/performance.md, "The whole service's memory").
CACHE_KIB = 512

log = logging.getLogger("boxd.queue")

SEAL_STEP = 64  # batches sealed per job at most: readings of the buses are written between two steps
EventDoc = Callable[[int, int, list[int]], bytes]  # (samples evicted, evicted in all, batch seqs) -> payload


class Queue:
    """A durable queue of samples, batches and events in one SQLite file.

    The constructor does no I/O; call `open()` first and `close()` at the end. Writes are
    asked for from the event loop's thread.
    """

    def __init__(self, path: Path, max_samples: int = 10_000_000) -> None:
        self._path = path
        self._db: sqlite3.Connection | None = None  # the loop's, read-only
        self._writer: GroupWriter | None = None
        self.epoch = 0
        self.max_samples = max_samples
        self._count = 0  # samples held in committed transactions (batches + pending)
        self._hidden: dict[int, int] = {}  # batch seq -> samples: removal asked for, not committed yet
        self._victims: set[int] = set()  # of those, the batches being evicted (not counted evicted yet)
        self._hidden_events: set[int] = set()
        self._events_out = 0  # the newest event id `events()` handed out
        self._writing = 0  # readings asked to be written, not yet committed
        self._evicting: asyncio.Lock | None = None

    def open(self) -> None:
        """Open (or create) the queue file and start its writer.

        Raises:
            QueueError: the file cannot be opened or is not a queue.
        """
        try:
            if not self._path.parent.exists():
                private_dir(self._path.parent)
            private_db(self._path)  # 0600, and so are the -wal and -shm files SQLite makes beside it
            db = self._connect()
            try:
                epoch, count = sql.setup(db, secrets.randbits(63))
                reader = sqlite3.connect(self._path, isolation_level=None)
                reader.execute("PRAGMA query_only=1")
                reader.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            except BaseException:
                db.close()
                raise
        except (sqlite3.Error, OSError) as e:
            raise QueueError(f"cannot open queue {self._path}: {e}") from e
        self._db, self.epoch, self._count = reader, epoch, count
        self._writer = GroupWriter(db)
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        """The writer's connection (its thread uses it alone once started)."""
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        return db

    def close(self) -> None:
        """Commit every write asked for, then close the file; safe to call twice."""
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._writer is not None:
            self._writer.stop()  # the last connection closed checkpoints the WAL: in the writer's thread
            self._writer = None

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise QueueError("queue is not open")
        return self._db

    @property
    def _w(self) -> GroupWriter:
        if self._writer is None:
            raise QueueError("queue is not open")
        return self._writer

    # -- readings in ------------------------------------------------------------------------

    def put(self, table_id: int, ts_ms: int, first: int, values: Sequence[Value],
            faults: dict[int, int]) -> asyncio.Future[None]:
        """Store one group of readings, with a trusted wall-clock time (see `put_many`)."""
        return self.put_many(table_id, [(ts_ms, first, values, faults)], TimeBase("", True, 0))

    def put_many(self, table_id: int, groups: Sequence[Group], time: TimeBase) -> asyncio.Future[None]:
        """Store several groups in one job; the future resolves once they are on disk.

        With a trusted `time`, each group's time is wall-clock ms; otherwise it is
        monotonic ms of boot `time.boot`, to be re-based when the clock is trusted.
        The future raises `QueueError` if they could not be written.
        """
        rows = sql.pending_rows(table_id, groups, time)  # encoded here: the writer thread only writes
        n = sum(row[2] for row in rows)

        def settle(_: object, error: BaseException | None) -> None:
            self._writing -= 1
            if error is None:
                self._count += n

        future = self._w.submit("write to queue", lambda db: sql.insert_pending(db, rows), settle)
        self._writing += 1
        return future

    # -- batches out ------------------------------------------------------------------------

    async def seal(self, max_samples: int, time: TimeBase | None = None, slack_ms: int = 0) -> int:
        """Turn the oldest pending groups into batches of at most `max_samples` samples each (poll
        times within `slack_ms` of the readings', `proto.series.encode`).

        Groups whose time cannot be known yet (this boot, clock not trusted) and all that
        follow them wait. Returns the number of batches made.

        Raises:
            QueueError: a batch could not be written.
        """
        time = time or TimeBase("", True, 0)
        size, epoch = max(1, max_samples), self.epoch
        made = 0
        # nothing waits, committed or being written: no job (a job would see what is being written)
        while self.unsealed():
            step = await self._w.submit("seal a batch",
                                        lambda db: sql.seal(db, epoch, size, time, SEAL_STEP, slack_ms=slack_ms))
            made += step
            if step < SEAL_STEP:
                break
        return made

    def unsealed(self) -> bool:
        """Whether readings wait to be sealed (committed or being written)."""
        return bool(self._writing or self._conn.execute("SELECT EXISTS (SELECT 1 FROM pending)").fetchone()[0])

    def batches(self, after_seq: int, limit: int, skip: Collection[int] = ()) -> list[tuple[int, bytes]]:
        """The oldest sealed batches with a sequence number above `after_seq`, not in `skip`."""
        out: list[tuple[int, bytes]] = []
        for s, p in self._conn.execute("SELECT seq, payload FROM batches WHERE seq > ? ORDER BY seq LIMIT ?",
                                       (after_seq, limit + len(skip) + len(self._hidden))):
            if s not in skip and s not in self._hidden and len(out) < limit:
                out.append((int(s), bytes(p)))
        return out

    def newest_batch(self) -> tuple[int, bytes] | None:
        """The most recently sealed batch (the fresh-data lane of a backlog drain)."""
        where, args = self._live()
        row = self._conn.execute(f"SELECT seq, payload FROM batches{where} ORDER BY seq DESC LIMIT 1",  # noqa: S608
                                 args).fetchone()
        return (int(row[0]), bytes(row[1])) if row else None

    def ack(self, seq: int) -> None:
        """The broker has batch `seq`: forget it (hidden now, removed by the writer)."""
        if seq in self._hidden:
            return
        row = self._conn.execute("SELECT n FROM batches WHERE seq=?", (seq,)).fetchone()
        if row is None:
            return
        n = self._hidden[seq] = int(row[0])

        def settle(_: object, error: BaseException | None) -> None:
            del self._hidden[seq]
            if error is None:
                self._count -= n
            else:  # it shows again and is sent again: the cloud keeps it once
                log.warning("%s; batch %d stays queued", error, seq)

        self._w.post("remove an acknowledged batch", lambda db: sql.delete_batch(db, seq), settle)

    def ack_through(self, seq: int, ahead: Collection[int] = ()) -> int:
        """The platform stored every batch up to `seq` and those of `ahead`: forget them (hidden now,
        removed by the writer in one job); how many."""
        top = max(ahead, default=seq)
        rows = [(s, n) for s, n in self._conn.execute("SELECT seq, n FROM batches WHERE seq <= ?", (top,))
                if s <= seq or s in ahead]
        gone = {int(s): int(n) for s, n in rows if int(s) not in self._hidden}
        if not gone:
            return 0
        self._hidden.update(gone)
        seqs = list(gone)

        def settle(_: object, error: BaseException | None) -> None:
            for s in seqs:
                del self._hidden[s]
            if error is None:
                self._count -= sum(gone.values())
            else:  # they show again and are sent again: the cloud keeps them once
                log.warning("%s; %d stored batches stay queued", error, len(seqs))

        self._w.post("remove stored batches", lambda db: sql.delete_batches(db, seqs), settle)
        return len(seqs)

    def depth(self) -> tuple[int, int]:
        """(samples waiting in batches, samples waiting to be batched)."""
        where, args = self._live()
        b = self._conn.execute(f"SELECT COALESCE(SUM(n), 0) FROM batches{where}", args).fetchone()[0]  # noqa: S608
        p = self._conn.execute("SELECT COALESCE(SUM(n), 0) FROM pending").fetchone()[0]
        return int(b), int(p)

    def backlog(self) -> int:
        """How many sealed batches wait for the broker."""
        where, args = self._live()
        return int(self._conn.execute(f"SELECT COUNT(*) FROM batches{where}", args).fetchone()[0])  # noqa: S608

    def last_seq(self) -> int:
        """The highest sequence number ever sealed in this epoch (0 before the first)."""
        row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name='batches'").fetchone()
        return int(row[0]) if row else 0

    def oldest_seq(self) -> int:
        """The lowest sequence number still waiting for the broker (0 when none waits). A batch being
        evicted waits until its eviction commits: only then does the "evicted_total" counter have it,
        and a heartbeat must never put a batch below its oldest that it neither counts evicted nor was
        acknowledged (the platform would call it a gap)."""
        where, args = self._live()
        row = self._conn.execute(f"SELECT MIN(seq) FROM batches{where}", args).fetchone()  # noqa: S608
        waiting = [int(row[0])] if row and row[0] is not None else []
        return min(waiting + list(self._victims), default=0)

    @property
    def samples(self) -> int:
        """Samples held (batches and pending), less those whose removal is being written."""
        return self._count - sum(self._hidden.values())

    def _live(self) -> tuple[str, tuple[str, ...]]:
        """A WHERE clause that leaves out the hidden batches (exact even once their removal committed)."""
        if not self._hidden:
            return "", ()
        return " WHERE seq NOT IN (SELECT value FROM json_each(?))", (json.dumps(list(self._hidden)),)

    # -- the size limit ---------------------------------------------------------------------

    async def enforce_limit(self, in_flight: Callable[[], Collection[int]],
                            event: EventDoc | None = None,
                            merge: Callable[[bytes, bytes], bytes | None] | None = None) -> tuple[int, list[int]]:
        """Evict the oldest samples until at most `max_samples` remain.

        Batches handed to the broker (`in_flight()`, asked when the victims are chosen)
        are never evicted: they may be delivered. `event(samples, total, seqs)` makes the
        payload of the event that reports it, queued in the same transaction; with `merge`,
        the newest queued event, if it was never handed out (`events`), becomes
        `merge(its payload, the new one)` unless that is None (an outage queues one
        eviction event, not one per poll, for the broker's message rate afterwards).

        Returns:
            how many samples went, and the sequence numbers of the batches that went.

        Raises:
            QueueError: the eviction could not be written (nothing was evicted).
        """
        self._evicting = self._evicting or asyncio.Lock()
        async with self._evicting:  # one at a time: each counts what the one before removed
            excess = self.samples - self.max_samples
            if excess <= 0:
                return 0, []
            busy = set(in_flight())
            victims: dict[int, int] = {}
            for s, n in self._conn.execute("SELECT seq, n FROM batches ORDER BY seq"):
                if s not in busy and s not in self._hidden:
                    victims[int(s)] = int(n)
                    if sum(victims.values()) >= excess:
                        break
            self._hidden.update(victims)  # from now on they are never sent
            self._victims.update(victims)
            from_batches = sum(victims.values())
            seqs = list(victims)

            def settle(result: int | None, error: BaseException | None) -> None:
                for s in seqs:
                    del self._hidden[s]
                self._victims.difference_update(seqs)
                if error is None:
                    self._count -= from_batches + (result or 0)

            job = self._w.submit("evict the oldest samples",
                                 lambda db: sql.evict(db, seqs, max(0, excess - from_batches), event,
                                                      (self._events_out, merge) if merge else None), settle)
            from_pending = await asyncio.shield(job)  # a cancelled caller leaves it to finish, counted
        return from_batches + from_pending, seqs

    # -- events -----------------------------------------------------------------------------

    def put_event(self, payload: bytes) -> asyncio.Future[None]:
        """Queue an event (sent on `.../up/events`); the future resolves once it is on disk."""
        return self._w.submit("queue an event", lambda db: sql.insert_event(db, payload))

    def put_event_now(self, payload: bytes) -> None:
        """Queue an event and wait until it is on disk, holding up the caller's thread (the
        event loop, if called there) for one transaction: for the rare caller that must not
        go on before (the update agent forgets its own record of an outcome once its event
        is queued).

        Raises:
            QueueError: it could not be written.
        """
        self._w.call("queue an event", lambda db: sql.insert_event(db, payload))

    def events(self, limit: int) -> list[tuple[int, bytes]]:
        """The oldest queued events."""
        rows = self._conn.execute("SELECT id, payload FROM events ORDER BY id LIMIT ?",
                                  (limit + len(self._hidden_events),))
        out = [(int(i), bytes(p)) for i, p in rows if i not in self._hidden_events][:limit]
        if out:  # handed out (perhaps to the broker): never merged into from now on
            self._events_out = max(self._events_out, out[-1][0])
        return out

    def ack_event(self, event_id: int) -> None:
        """The broker has the event: forget it (hidden now, removed by the writer)."""
        if event_id in self._hidden_events:
            return
        self._hidden_events.add(event_id)

        def settle(_: object, error: BaseException | None) -> None:
            self._hidden_events.discard(event_id)
            if error is not None:
                log.warning("%s; event %d stays queued", error, event_id)

        self._w.post("remove an acknowledged event", lambda db: sql.delete_event(db, event_id), settle)

    def meta(self, key: str, default: int = 0) -> int:
        """A persistent counter (e.g. "evicted_total")."""
        row = self._conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else default
