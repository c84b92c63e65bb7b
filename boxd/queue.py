"""The durable store-and-forward queue of the Box (SQLite), between the buses and the uplink.

Readings go in as *pending groups* (one row per run of points read at one instant).
`seal()` turns the oldest pending groups into *batches*: encoded, numbered payloads
ready for the wire. A batch leaves the queue only when `ack()` says the broker has
it (QoS 1), so nothing is lost while the broker is unreachable, and a batch sent
again after a crash carries the same (epoch, seq) and the same bytes, so the cloud
keeps it once. Small *events* (evictions, later alarms) are queued the same way.

Size limit: when the queue holds more than `max_samples`, the oldest samples are
evicted (oldest batches first, then the oldest pending groups; never a batch in
flight), and the count is kept for an event to the cloud.

Time: a group carries the wall-clock time of its reading when the Box's clock is
trusted; otherwise it carries the monotonic time and the boot it belongs to, and is
sealed only once the clock is trusted (re-based then). A group from an earlier boot
whose clock was never trusted is sealed with `base_ts_ms = 0`: "time unknown".

SQLite settings, chosen for power loss: WAL journal (a torn write never corrupts
committed data), synchronous=FULL (a transaction that returned is on the disk),
and each put/seal/ack is one transaction. This module does not talk to the network.
"""

from __future__ import annotations

import itertools
import secrets
import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import cbor2

from boxd.errors import QueueError
from boxkit.files import private_db, private_dir
from drivers import Value
from proto import wire

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pending (
    id INTEGER PRIMARY KEY, table_id INTEGER NOT NULL, ts_ms INTEGER NOT NULL,
    n INTEGER NOT NULL, grp BLOB NOT NULL, boot TEXT NOT NULL DEFAULT '', trusted INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER NOT NULL, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, payload BLOB NOT NULL);
"""

Group = tuple[int, int, Sequence[Value], dict[int, int]]  # (ts_ms or mono_ms, first, values, faults)


@dataclass(frozen=True, slots=True)
class TimeBase:
    """How to turn a group's stored time into wall-clock time at sealing.

    `trusted` says whether the Box's clock can be believed now; `offset_ms` is
    wall-clock minus monotonic time (ms) for this boot; `boot` names this boot.
    """

    boot: str
    trusted: bool
    offset_ms: int


class Queue:
    """A durable queue of samples, batches and events in one SQLite file.

    The constructor does no I/O; call `open()` first and `close()` at the end.
    """

    def __init__(self, path: Path, max_samples: int = 10_000_000) -> None:
        self._path = path
        self._db: sqlite3.Connection | None = None
        self.epoch = 0
        self.max_samples = max_samples
        self._count = 0  # samples held (batches + pending), kept in step with the file
        self.evicted_unreported = 0

    def open(self) -> None:
        """Open (or create) the queue file.

        Raises:
            QueueError: the file cannot be opened or is not a queue.
        """
        try:
            if not self._path.parent.exists():
                private_dir(self._path.parent)
            private_db(self._path)  # 0600, and so are the -wal and -shm files SQLite makes beside it
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
            if row is None:
                epoch = secrets.randbits(63)
                db.execute("INSERT INTO meta VALUES ('epoch', ?)", (epoch,))
            else:
                epoch = int(row[0])
            b = db.execute("SELECT COALESCE(SUM(n), 0) FROM batches").fetchone()[0]
            p = db.execute("SELECT COALESCE(SUM(n), 0) FROM pending").fetchone()[0]
        except (sqlite3.Error, OSError) as e:
            raise QueueError(f"cannot open queue {self._path}: {e}") from e
        self._db, self.epoch, self._count = db, epoch, int(b) + int(p)

    def close(self) -> None:
        """Close the file; safe to call twice."""
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise QueueError("queue is not open")
        return self._db

    def _write(self, sql_rows: Sequence[tuple[str, Sequence[object]]], what: str) -> None:
        db = self._conn
        try:
            db.execute("BEGIN IMMEDIATE")
            for sql, args in sql_rows:
                db.execute(sql, args)
            db.execute("COMMIT")
        except sqlite3.Error as e:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise QueueError(f"cannot {what}: {e}") from e

    # -- readings in ------------------------------------------------------------------------

    def put(self, table_id: int, ts_ms: int, first: int, values: Sequence[Value], faults: dict[int, int]) -> None:
        """Store one group of readings durably, with a trusted wall-clock time."""
        self.put_many(table_id, [(ts_ms, first, values, faults)], TimeBase("", True, 0))

    def put_many(self, table_id: int, groups: Sequence[Group], time: TimeBase) -> None:
        """Store several groups in one transaction (returns once they are on disk).

        With a trusted `time`, each group's time is wall-clock ms; otherwise it is
        monotonic ms of boot `time.boot`, to be re-based when the clock is trusted.
        """
        rows = [
            (table_id, ts, len(values), cbor2.dumps([first, list(values), faults] if faults else [first, list(values)]),
             time.boot, int(time.trusted))
            for ts, first, values, faults in groups
        ]
        db = self._conn
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT INTO pending (table_id, ts_ms, n, grp, boot, trusted) VALUES (?, ?, ?, ?, ?, ?)",
                           rows)
            db.execute("COMMIT")
        except sqlite3.Error as e:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise QueueError(f"cannot write to queue: {e}") from e
        self._count += sum(r[2] for r in rows)

    # -- batches out ------------------------------------------------------------------------

    def seal(self, max_samples: int, time: TimeBase | None = None) -> int:
        """Turn the oldest pending groups into batches of at most `max_samples` samples each.

        Groups whose time cannot be known yet (this boot, clock not trusted) and all that
        follow them wait. Returns the number of batches made.
        """
        time = time or TimeBase("", True, 0)
        made = 0
        while self._seal_one(max(1, max_samples), time):
            made += 1
        return made

    def _seal_one(self, max_samples: int, time: TimeBase) -> bool:
        # Step through the oldest groups only as far as the batch needs (a group may hold
        # hundreds of samples: fetching `max_samples` rows would read a whole backlog's worth).
        cur = self._conn.execute(
            "SELECT id, table_id, ts_ms, n, grp, boot, trusted FROM pending ORDER BY id LIMIT ?", (max_samples,)
        )
        try:
            head = cur.fetchone()
            if head is None:
                return False
            first_kind = _time_kind(head[5], head[6], time)
            if first_kind == "wait":
                return False
            table = head[1]
            groups: list[list[object]] = []
            stamps: list[int] = []
            count, last_id = 0, head[0]
            for row_id, tid, ts, n, grp, boot, trusted in itertools.chain([head], cur):
                kind = _time_kind(boot, trusted, time)
                if tid != table or kind != first_kind or (groups and count + n > max_samples):
                    break
                stamps.append(ts + time.offset_ms if kind == "rebase" else ts)
                first, values, *rest = cbor2.loads(grp)
                groups.append([first, values, rest[0] if rest else {}])
                count, last_id = count + n, row_id
        finally:
            cur.close()  # the read ends before the write transaction begins
        base = 0 if first_kind == "unknown" else stamps[0]
        encoded = [wire.encode_group(ts - base if base else 0, g[0], g[1], g[2])  # type: ignore[arg-type]
                   for ts, g in zip(stamps, groups, strict=True)]
        db = self._conn
        try:
            db.execute("BEGIN IMMEDIATE")
            cur = db.execute("INSERT INTO batches (n, payload) VALUES (?, x'')", (count,))
            seq = int(cur.lastrowid or 0)
            payload = wire.encode_batch(self.epoch, seq, table, base, encoded)
            db.execute("UPDATE batches SET payload=? WHERE seq=?", (payload, seq))
            db.execute("DELETE FROM pending WHERE id <= ?", (last_id,))
            db.execute("COMMIT")
        except sqlite3.Error as e:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise QueueError(f"cannot seal a batch: {e}") from e
        return True

    def batches(self, after_seq: int, limit: int, skip: Collection[int] = ()) -> list[tuple[int, bytes]]:
        """The oldest sealed batches with a sequence number above `after_seq`, not in `skip`."""
        out: list[tuple[int, bytes]] = []
        for s, p in self._conn.execute(
            "SELECT seq, payload FROM batches WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit + len(skip))
        ):
            if s not in skip and len(out) < limit:
                out.append((int(s), bytes(p)))
        return out

    def newest_batch(self) -> tuple[int, bytes] | None:
        """The most recently sealed batch (the fresh-data lane of a backlog drain)."""
        row = self._conn.execute("SELECT seq, payload FROM batches ORDER BY seq DESC LIMIT 1").fetchone()
        return (int(row[0]), bytes(row[1])) if row else None

    def ack(self, seq: int) -> None:
        """The broker has batch `seq`: forget it."""
        db = self._conn
        row = db.execute("SELECT n FROM batches WHERE seq=?", (seq,)).fetchone()
        if row is None:
            return
        self._write([("DELETE FROM batches WHERE seq=?", (seq,))], "remove an acknowledged batch")
        self._count -= int(row[0])

    def depth(self) -> tuple[int, int]:
        """(samples waiting in batches, samples waiting to be batched)."""
        b = self._conn.execute("SELECT COALESCE(SUM(n), 0) FROM batches").fetchone()[0]
        p = self._conn.execute("SELECT COALESCE(SUM(n), 0) FROM pending").fetchone()[0]
        return int(b), int(p)

    def backlog(self) -> int:
        """How many sealed batches wait for the broker."""
        return int(self._conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0])

    def last_seq(self) -> int:
        """The highest sequence number ever sealed in this epoch (0 before the first)."""
        row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name='batches'").fetchone()
        return int(row[0]) if row else 0

    def oldest_seq(self) -> int:
        """The lowest sequence number still waiting for the broker (0 when none waits)."""
        row = self._conn.execute("SELECT MIN(seq) FROM batches").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    @property
    def samples(self) -> int:
        """Samples held (batches and pending)."""
        return self._count

    # -- the size limit ---------------------------------------------------------------------

    def enforce_limit(self, in_flight: Collection[int] = ()) -> tuple[int, list[int]]:
        """Evict the oldest samples until at most `max_samples` remain.

        Returns:
            how many samples went, and the sequence numbers of the batches that went.

        Batches handed to the broker (`in_flight`) are never evicted: they may be delivered.
        """
        evicted, seqs = 0, []
        db = self._conn
        while self._count > self.max_samples:
            excess = self._count - self.max_samples
            victims = [
                (s, n) for s, n in db.execute("SELECT seq, n FROM batches ORDER BY seq LIMIT 64") if s not in in_flight
            ]
            if victims:
                chosen, total = [], 0
                for s, n in victims:
                    chosen.append(s)
                    total += n
                    if total >= excess:
                        break
                marks = ",".join("?" * len(chosen))
                self._write([(f"DELETE FROM batches WHERE seq IN ({marks})", chosen)], "evict batches")  # noqa: S608
                seqs += chosen
            else:
                rows = db.execute("SELECT id, n FROM pending ORDER BY id LIMIT 256").fetchall()
                if not rows:
                    break
                total, last = 0, rows[0][0]
                for row_id, n in rows:
                    total += n
                    last = row_id
                    if total >= excess:
                        break
                self._write([("DELETE FROM pending WHERE id <= ?", (last,))], "evict readings")
            self._count -= total
            evicted += total
        self.evicted_unreported += evicted
        return evicted, seqs

    # -- events -----------------------------------------------------------------------------

    def put_event(self, payload: bytes) -> None:
        """Queue an event durably (sent on `.../up/events`)."""
        self._write([("INSERT INTO events (payload) VALUES (?)", (payload,))], "queue an event")

    def events(self, limit: int) -> list[tuple[int, bytes]]:
        """The oldest queued events."""
        return [(int(i), bytes(p)) for i, p in
                self._conn.execute("SELECT id, payload FROM events ORDER BY id LIMIT ?", (limit,))]

    def ack_event(self, event_id: int) -> None:
        """The broker has the event: forget it."""
        self._write([("DELETE FROM events WHERE id=?", (event_id,))], "remove an acknowledged event")

    def meta(self, key: str, default: int = 0) -> int:
        """A persistent counter (e.g. "evicted_total")."""
        row = self._conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else default

    def set_meta(self, key: str, value: int) -> None:
        """Set a persistent counter."""
        self._write([("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                      (key, value))], "update a counter")


def _time_kind(boot: str, trusted: int, time: TimeBase) -> str:
    """How a stored group's time becomes wall-clock time now: as is, re-based, unknown, or wait."""
    if trusted:
        return "wall"
    if boot == time.boot:
        return "rebase" if time.trusted else "wait"
    return "unknown"
