"""The queue's tables and the statements that change them (`boxd.queue` is the public face).

Each write function runs inside a transaction that its caller owns (the writer thread's
group: `boxd.sqlwriter`); none begins or commits one. Pure SQL and encoding: no thread,
no event loop, no bookkeeping of counts (the caller keeps those once a commit is known).
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cbor2

from drivers import Value
from proto import wire

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pending (
    id INTEGER PRIMARY KEY, table_id INTEGER NOT NULL, ts_ms INTEGER NOT NULL,
    n INTEGER NOT NULL, grp BLOB NOT NULL, boot TEXT NOT NULL DEFAULT '', trusted INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER NOT NULL, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, payload BLOB NOT NULL);
"""

# (ts_ms or mono_ms, first, values, faults); values an integer: a span of that many points polled and
# unchanged (`boxd.onchange`), stored and batched like values, counted as one sample
Group = tuple[int, int, Sequence[Value] | int, dict[int, int]]


@dataclass(frozen=True, slots=True)
class TimeBase:
    """How to turn a group's stored time into wall-clock time at sealing.

    `trusted` says whether the Box's clock can be believed now; `offset_ms` is
    wall-clock minus monotonic time (ms) for this boot; `boot` names this boot.
    """

    boot: str
    trusted: bool
    offset_ms: int


def setup(db: sqlite3.Connection, new_epoch: int) -> tuple[int, int]:
    """Create the tables if missing (a new queue gets `new_epoch`); (epoch, samples held)."""
    db.executescript(SCHEMA)
    row = db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
    if row is None:
        db.execute("INSERT INTO meta VALUES ('epoch', ?)", (new_epoch,))
        epoch = new_epoch
    else:
        epoch = int(row[0])
    b = db.execute("SELECT COALESCE(SUM(n), 0) FROM batches").fetchone()[0]
    p = db.execute("SELECT COALESCE(SUM(n), 0) FROM pending").fetchone()[0]
    return epoch, int(b) + int(p)


PendingRow = tuple[int, int, int, bytes, str, int]


def pending_rows(table_id: int, groups: Sequence[Group], time: TimeBase) -> list[PendingRow]:
    """Readings encoded as rows of `pending` (see `boxd.queue.Queue.put_many`)."""
    return [
        (table_id, ts, 1, cbor2.dumps([first, values]), time.boot, int(time.trusted)) if isinstance(values, int) else
        (table_id, ts, len(values), cbor2.dumps([first, list(values), faults] if faults else [first, list(values)]),
         time.boot, int(time.trusted))
        for ts, first, values, faults in groups
    ]


def insert_pending(db: sqlite3.Connection, rows: Sequence[PendingRow]) -> None:
    """Write readings as pending groups."""
    db.executemany("INSERT INTO pending (table_id, ts_ms, n, grp, boot, trusted) VALUES (?, ?, ?, ?, ?, ?)", rows)


def seal(db: sqlite3.Connection, epoch: int, max_samples: int, time: TimeBase, most: int, *, slack_ms: int = 0) -> int:
    """Make up to `most` batches of the oldest pending groups; how many were made."""
    made = 0
    while made < most and _seal_one(db, epoch, max_samples, time, slack_ms=slack_ms):
        made += 1
    return made


def _seal_one(db: sqlite3.Connection, epoch: int, max_samples: int, time: TimeBase, *, slack_ms: int) -> bool:
    # Step through the oldest groups only as far as the batch needs (a group may hold
    # hundreds of samples: fetching `max_samples` rows would read a whole backlog's worth).
    with contextlib.closing(db.execute(
        "SELECT id, table_id, ts_ms, n, grp, boot, trusted FROM pending ORDER BY id LIMIT ?", (max_samples,)
    )) as cur:
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
            first, values, *rest = cbor2.loads(grp)  # values: a list, or a span's count
            groups.append([first, values, rest[0] if rest else {}])
            count, last_id = count + n, row_id
    base = 0 if first_kind == "unknown" else stamps[0]
    raw = [(ts - base if base else 0, g[0], g[1], g[2]) for ts, g in zip(stamps, groups, strict=True)]
    # the batch, its number and the removal of its groups: one transaction (a crash keeps all or none)
    seq = int(db.execute("INSERT INTO batches (n, payload) VALUES (?, x'')", (count,)).lastrowid or 0)
    payload = wire.encode_batch_v2(epoch, seq, table, base, raw, slack_ms=slack_ms)  # type: ignore[arg-type]
    db.execute("UPDATE batches SET payload=? WHERE seq=?", (payload, seq))
    db.execute("DELETE FROM pending WHERE id <= ?", (last_id,))
    return True


def _time_kind(boot: str, trusted: int, time: TimeBase) -> str:
    """How a stored group's time becomes wall-clock time now: as is, re-based, unknown, or wait."""
    if trusted:
        return "wall"
    if boot == time.boot:
        return "rebase" if time.trusted else "wait"
    return "unknown"


def delete_batch(db: sqlite3.Connection, seq: int) -> None:
    """Remove a batch the broker acknowledged."""
    db.execute("DELETE FROM batches WHERE seq=?", (seq,))


def delete_batches(db: sqlite3.Connection, seqs: Sequence[int]) -> None:
    """Remove batches the platform stored."""
    db.executemany("DELETE FROM batches WHERE seq=?", [(s,) for s in seqs])


def evict(db: sqlite3.Connection, seqs: Sequence[int], pending_samples: int,
          event: Callable[[int, int, list[int]], bytes] | None,
          merge: tuple[int, Callable[[bytes, bytes], bytes | None]] | None = None) -> int:
    """Remove batches `seqs` and at least `pending_samples` samples of the oldest pending groups
    (whole groups; fewer if there are not so many), add the samples removed to the counter
    "evicted_total", and queue `event(samples, total, seqs)`; with `merge` (an event id, a function),
    the newest queued event, if its id is above that one (never handed to the broker), becomes
    `function(its payload, the new one)` instead, unless that says None. Returns the pending
    samples removed."""
    from_batches = 0
    if seqs:
        marks = ",".join("?" * len(seqs))
        from_batches = db.execute(f"SELECT COALESCE(SUM(n), 0) FROM batches WHERE seq IN ({marks})",  # noqa: S608
                                  list(seqs)).fetchone()[0]
        db.execute(f"DELETE FROM batches WHERE seq IN ({marks})", list(seqs))  # noqa: S608
    from_pending, last = 0, None
    if pending_samples > 0:
        with contextlib.closing(db.execute("SELECT id, n FROM pending ORDER BY id")) as cur:
            for row_id, n in cur:
                from_pending, last = from_pending + int(n), row_id
                if from_pending >= pending_samples:
                    break
    if last is not None:
        db.execute("DELETE FROM pending WHERE id <= ?", (last,))
    gone = list(seqs)
    if last is not None:
        # A span still queued may refer to a value just evicted: a batch number is skipped (and said
        # evicted), so the cloud sees a gap and never resolves a later span past it (`proto.wire`).
        gone.append(int(db.execute("INSERT INTO batches (n, payload) VALUES (0, x'')").lastrowid or 0))
        db.execute("DELETE FROM batches WHERE seq=?", (gone[-1],))
    evicted = int(from_batches) + from_pending
    if evicted:
        total = add_meta(db, "evicted_total", evicted)
        if event is not None:
            payload = event(evicted, total, gone)
            if merge is None or not _merged(db, payload, *merge):
                insert_event(db, payload)
    return from_pending


def _merged(db: sqlite3.Connection, payload: bytes, above: int, fn: Callable[[bytes, bytes], bytes | None]) -> bool:
    """Whether the newest queued event (if never handed out: its id above `above`) took `payload` in."""
    row = db.execute("SELECT id, payload FROM events ORDER BY id DESC LIMIT 1").fetchone()
    if row is None or int(row[0]) <= above:
        return False
    merged = fn(bytes(row[1]), payload)
    if merged is None:
        return False
    # a new row, not an update: were the old one read at this moment and delivered, the merged one only
    # says its part again (at least once), never loses the new part with it
    db.execute("DELETE FROM events WHERE id=?", (int(row[0]),))
    insert_event(db, merged)
    return True


def add_meta(db: sqlite3.Connection, key: str, delta: int) -> int:
    """Add to a persistent counter; its new value."""
    db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value=value+excluded.value",
               (key, delta))
    return int(db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()[0])


def insert_event(db: sqlite3.Connection, payload: bytes) -> None:
    """Queue an event."""
    db.execute("INSERT INTO events (payload) VALUES (?)", (payload,))


def delete_event(db: sqlite3.Connection, event_id: int) -> None:
    """Remove an event the broker acknowledged."""
    db.execute("DELETE FROM events WHERE id=?", (event_id,))
