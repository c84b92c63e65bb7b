"""The durable store-and-forward queue of the Box (SQLite), between the pollers and the uplink.

Readings go in as *pending groups* (one row per device poll). `seal()` turns the
oldest pending groups into *batches*: encoded, numbered payloads ready for the wire.
A batch leaves the queue only when `ack()` says the broker has it (QoS 1), so
nothing is lost while the broker is unreachable, and a batch that is sent again
after a crash carries the same (epoch, seq) and the same bytes, so the cloud keeps
it once.

SQLite settings, chosen for power loss: WAL journal (a torn write never corrupts
committed data), synchronous=FULL (a transaction that returned is on the disk),
and each put/seal/ack is one transaction. This module does not talk to the network.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import cbor2

from boxd import wire
from boxd.errors import QueueError
from drivers import Value

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pending (
    id INTEGER PRIMARY KEY, table_id INTEGER NOT NULL, ts_ms INTEGER NOT NULL,
    n INTEGER NOT NULL, grp BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER NOT NULL, payload BLOB NOT NULL);
"""


class Queue:
    """A durable queue of samples and batches in one SQLite file.

    The constructor does no I/O; call `open()` first and `close()` at the end.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._db: sqlite3.Connection | None = None
        self.epoch = 0

    def open(self) -> None:
        """Open (or create) the queue file.

        Raises:
            QueueError: the file cannot be opened or is not a queue.
        """
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
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
        except sqlite3.Error as e:
            raise QueueError(f"cannot open queue {self._path}: {e}") from e
        self._db, self.epoch = db, epoch

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

    def put(
        self, table_id: int, ts_ms: int, first: int, values: Sequence[Value], faults: dict[int, int]
    ) -> None:
        """Store one group of readings durably (returns once it is on disk)."""
        grp = cbor2.dumps([first, list(values), faults] if faults else [first, list(values)])
        try:
            self._conn.execute(
                "INSERT INTO pending (table_id, ts_ms, n, grp) VALUES (?, ?, ?, ?)",
                (table_id, ts_ms, len(values), grp),
            )
        except sqlite3.Error as e:
            raise QueueError(f"cannot write to queue: {e}") from e

    def seal(self, max_samples: int) -> int:
        """Turn the oldest pending groups into batches of at most `max_samples` samples each.

        Returns:
            the number of batches made.
        """
        made = 0
        while self._seal_one(max_samples):
            made += 1
        return made

    def _seal_one(self, max_samples: int) -> bool:
        db = self._conn
        rows = db.execute(
            "SELECT id, table_id, ts_ms, n, grp FROM pending ORDER BY id LIMIT ?",
            (max(1, max_samples),),
        ).fetchall()
        if not rows:
            return False
        table, base = rows[0][1], rows[0][2]
        groups: list[list[object]] = []
        count, last_id = 0, rows[0][0]
        for row_id, tid, ts, n, grp in rows:
            if tid != table or (groups and count + n > max_samples):
                break
            first, values, *rest = cbor2.loads(grp)
            groups.append(wire.encode_group(ts - base, first, values, rest[0] if rest else {}))
            count, last_id = count + n, row_id
        try:
            db.execute("BEGIN IMMEDIATE")
            cur = db.execute("INSERT INTO batches (n, payload) VALUES (?, x'')", (count,))
            seq = int(cur.lastrowid or 0)
            payload = wire.encode_batch(self.epoch, seq, table, base, groups)
            db.execute("UPDATE batches SET payload=? WHERE seq=?", (payload, seq))
            db.execute("DELETE FROM pending WHERE id <= ?", (last_id,))
            db.execute("COMMIT")
        except sqlite3.Error as e:
            db.execute("ROLLBACK")
            raise QueueError(f"cannot seal a batch: {e}") from e
        return True

    def batches(self, after_seq: int, limit: int) -> list[tuple[int, bytes]]:
        """The oldest sealed batches with a sequence number above `after_seq`."""
        return [
            (int(s), bytes(p))
            for s, p in self._conn.execute(
                "SELECT seq, payload FROM batches WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            )
        ]

    def ack(self, seq: int) -> None:
        """The broker has batch `seq`: forget it."""
        try:
            self._conn.execute("DELETE FROM batches WHERE seq=?", (seq,))
        except sqlite3.Error as e:
            raise QueueError(f"cannot remove an acknowledged batch: {e}") from e

    def depth(self) -> tuple[int, int]:
        """(samples waiting in batches, samples waiting to be batched)."""
        b = self._conn.execute("SELECT COALESCE(SUM(n), 0) FROM batches").fetchone()[0]
        p = self._conn.execute("SELECT COALESCE(SUM(n), 0) FROM pending").fetchone()[0]
        return int(b), int(p)
