"""The reference cloud's storage (SQLite by default): Boxes, tokens, status, point tables, samples.

Plain SQL through DB-API with one connection per thread, so that a PostgreSQL
backend can take its place later (the statements are portable but for the
`INSERT ... ON CONFLICT` upserts, which PostgreSQL also speaks). Each (Box, epoch,
seq) batch is stored once: the batch row and its samples are written in one
transaction, and a batch seen again is skipped. This module does no network I/O.

`samples` is indexed by (Box, time), not by (Box, point, time): batches arrive in time
order, so each one appends to the index, where a per-point index took a write in a
different page for nearly every sample (17 us a sample at a million, against 4; see
docs/performance.md). A point's history is read through the time index (a time range,
then the point). The latest value of each point is kept in `latest`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Any, overload

from boxd.errors import WireError
from boxd.files import private_db, private_dir
from boxd.wire import Batch
from cloud._credentials import Credentials
from cloud.errors import StoreError
from cloud.pacing import Lru
from drivers import PointInfo, Value

MAX_CACHED_POINTS = 500_000  # parsed point tables kept in memory, in points (about 100 MB at most)
MAX_TABLES_PER_BOX = 2  # a Box has one table, two while it is reconfigured

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY, serial TEXT NOT NULL, created REAL NOT NULL,
    expires REAL NOT NULL, used REAL);
CREATE TABLE IF NOT EXISTS boxes (
    box_id TEXT PRIMARY KEY, serial TEXT NOT NULL, enrolled REAL NOT NULL,
    cert_serial TEXT NOT NULL, cert_not_after REAL NOT NULL, revoked REAL,
    online INTEGER NOT NULL DEFAULT 0, status_ts REAL, status_reason TEXT,
    last_seen REAL, version TEXT);
CREATE TABLE IF NOT EXISTS revoked_certs (
    cert_serial TEXT PRIMARY KEY, box_id TEXT NOT NULL, revoked REAL NOT NULL);
CREATE TABLE IF NOT EXISTS status_history (
    box_id TEXT NOT NULL, ts REAL NOT NULL, online INTEGER NOT NULL, reason TEXT);
CREATE TABLE IF NOT EXISTS point_tables (
    box_id TEXT NOT NULL, table_id INTEGER NOT NULL, points TEXT NOT NULL,
    PRIMARY KEY (box_id, table_id));
CREATE TABLE IF NOT EXISTS batches (
    box_id TEXT NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL, received REAL NOT NULL,
    n INTEGER NOT NULL, digest BLOB, PRIMARY KEY (box_id, epoch, seq));
CREATE TABLE IF NOT EXISTS conflicts (
    box_id TEXT NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL, received REAL NOT NULL);
CREATE TABLE IF NOT EXISTS deferred (
    id INTEGER PRIMARY KEY, box_id TEXT NOT NULL, leaf TEXT NOT NULL, payload BLOB NOT NULL,
    received REAL NOT NULL);
CREATE INDEX IF NOT EXISTS deferred_by_box ON deferred (box_id, id);
CREATE TABLE IF NOT EXISTS parked_batches (
    box_id TEXT NOT NULL, table_id INTEGER NOT NULL, payload BLOB NOT NULL, received REAL NOT NULL);
CREATE TABLE IF NOT EXISTS samples (
    box_id TEXT NOT NULL, point TEXT NOT NULL, ts_ms INTEGER NOT NULL, value TEXT,
    quality INTEGER NOT NULL);
DROP INDEX IF EXISTS samples_by_point;
CREATE INDEX IF NOT EXISTS samples_by_time ON samples (box_id, ts_ms);
CREATE TABLE IF NOT EXISTS health (
    box_id TEXT PRIMARY KEY, received REAL NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS evicted (
    box_id TEXT NOT NULL, epoch INTEGER NOT NULL, seq_from INTEGER NOT NULL, seq_to INTEGER NOT NULL,
    samples INTEGER NOT NULL, received REAL NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    box_id TEXT NOT NULL, device TEXT NOT NULL, bad_since REAL, reason TEXT, last_good REAL,
    PRIMARY KEY (box_id, device));
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY, box_id TEXT NOT NULL, kind TEXT NOT NULL, subject TEXT NOT NULL,
    message TEXT NOT NULL, opened REAL NOT NULL, closed REAL, acked REAL);
CREATE INDEX IF NOT EXISTS open_alerts ON alerts (box_id, kind, subject) WHERE closed IS NULL;
CREATE TABLE IF NOT EXISTS pending_certs (
    box_id TEXT PRIMARY KEY, cert_serial TEXT NOT NULL, not_after REAL NOT NULL, issued REAL NOT NULL);
CREATE TABLE IF NOT EXISTS superseded_certs (
    box_id TEXT NOT NULL, cert_serial TEXT NOT NULL, not_after REAL NOT NULL, superseded REAL NOT NULL);
CREATE TABLE IF NOT EXISTS configs (
    box_id TEXT NOT NULL, version INTEGER NOT NULL, toml TEXT NOT NULL, created REAL NOT NULL,
    published REAL, status TEXT, reasons TEXT, answered REAL, allow_empty INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (box_id, version));
CREATE TABLE IF NOT EXISTS commands (
    id TEXT PRIMARY KEY, box_id TEXT NOT NULL, name TEXT NOT NULL, args TEXT NOT NULL,
    expires REAL NOT NULL, created REAL NOT NULL, published REAL, status TEXT, reply TEXT, answered REAL);
CREATE INDEX IF NOT EXISTS unsent_commands ON commands (created) WHERE published IS NULL;
CREATE TABLE IF NOT EXISTS latest (
    box_id TEXT NOT NULL, point TEXT NOT NULL, ts_ms INTEGER NOT NULL, value TEXT,
    quality INTEGER NOT NULL, unit TEXT NOT NULL, PRIMARY KEY (box_id, point));
CREATE TABLE IF NOT EXISTS box_tags (
    box_id TEXT NOT NULL, tag TEXT NOT NULL, PRIMARY KEY (box_id, tag));
CREATE TABLE IF NOT EXISTS deployments (
    id TEXT PRIMARY KEY, target TEXT NOT NULL, version TEXT NOT NULL, selector TEXT NOT NULL,
    waves TEXT NOT NULL, max_failures INTEGER NOT NULL, health_s INTEGER NOT NULL,
    box_timeout_s REAL NOT NULL, status TEXT NOT NULL, reason TEXT, created REAL NOT NULL,
    updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS deployment_boxes (
    deployment TEXT NOT NULL, box_id TEXT NOT NULL, wave INTEGER NOT NULL, state TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '', cmd_id TEXT, sent REAL, updated REAL NOT NULL,
    PRIMARY KEY (deployment, box_id));
CREATE INDEX IF NOT EXISTS boxes_deployments ON deployment_boxes (box_id);
CREATE TABLE IF NOT EXISTS clear_retained (box_id TEXT PRIMARY KEY, requested REAL NOT NULL);
CREATE TABLE IF NOT EXISTS modem (
    box_id TEXT PRIMARY KEY, received REAL NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ota_events (
    deployment TEXT NOT NULL, box_id TEXT NOT NULL, received REAL NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (deployment, box_id));
"""
# columns added after a table's first release: (table, column, declaration), added to older databases
_ADDED_COLUMNS = (("alerts", "acked", "REAL"), ("configs", "allow_empty", "INTEGER NOT NULL DEFAULT 0"))


@dataclass(frozen=True)
class ConfigRow:
    """A configuration pushed to a Box, and what the Box answered."""

    box_id: str
    version: int
    toml: str
    created: float
    published: float | None
    status: str | None  # None until the Box answers: "applied", "rejected", "rolled_back"
    reasons: list[str]
    answered: float | None
    allow_empty: bool = False


@dataclass(frozen=True)
class CommandRow:
    """A command sent to a Box, and its reply (the Box's document: status, detail, result...)."""

    id: str
    box_id: str
    name: str
    args: dict[str, object]
    expires: float
    created: float
    published: float | None
    status: str | None  # None until the Box answers
    reply: dict[str, object]
    answered: float | None

    @property
    def detail(self) -> str:
        return str(self.reply.get("detail", ""))

    @property
    def result(self) -> dict[str, object]:
        r = self.reply.get("result")
        return r if isinstance(r, dict) else {}

    @property
    def lines(self) -> list[str]:
        r = self.reply.get("lines")
        return [str(x) for x in r] if isinstance(r, list) else []


@dataclass(frozen=True)
class DeploymentRow:
    """A deployment of a software release to a set of Boxes, in waves."""

    id: str
    target: str  # the TUF target file name
    version: str
    selector: dict[str, object]  # {"boxes": [...]} or {"tag": "x"}
    waves: list[int]  # cumulative Box counts, resolved at creation
    max_failures: int  # more failures than this halts the deployment
    health_s: int
    box_timeout_s: float
    status: str  # "running", "completed", "halted", "stopped"
    reason: str | None
    created: float
    updated: float


@dataclass(frozen=True)
class DeploymentBoxRow:
    """One Box in a deployment: its wave and where it is (see cloud.deploy for the states)."""

    deployment: str
    box_id: str
    wave: int  # 1, 2, ...
    state: str
    detail: str
    cmd_id: str | None  # the update command
    sent: float | None
    updated: float


@dataclass(frozen=True)
class BoxRow:
    """A Box as the cloud knows it."""

    box_id: str
    serial: str
    enrolled: float
    cert_serial: int
    cert_not_after: float
    revoked: float | None
    online: bool
    status_ts: float | None
    status_reason: str | None
    last_seen: float | None
    version: str | None


class PointTable(Sequence[PointInfo]):
    """A Box's point table, with what storing a batch needs computed once per table, not per batch.

    A sequence of `PointInfo`; also the names, the units, and each point's device (the part of
    its name before the first dot) with the end of the run of points of that device it is in.
    """

    __slots__ = ("devices", "names", "points", "run_end", "units")

    def __init__(self, points: Iterable[PointInfo]) -> None:
        self.points = tuple(points)
        self.names = tuple(p.name for p in self.points)
        self.units = tuple(p.unit for p in self.points)
        self.devices = tuple(n.split(".", 1)[0] for n in self.names)
        run_end = [len(self.points)] * len(self.points)
        for i in range(len(self.points) - 2, -1, -1):
            if self.devices[i] == self.devices[i + 1]:
                run_end[i] = run_end[i + 1]
            else:
                run_end[i] = i + 1
        self.run_end = tuple(run_end)

    def __len__(self) -> int:
        return len(self.points)

    def __iter__(self) -> Iterator[PointInfo]:
        return iter(self.points)

    @overload
    def __getitem__(self, i: int) -> PointInfo: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[PointInfo]: ...
    def __getitem__(self, i: int | slice) -> PointInfo | Sequence[PointInfo]:
        return self.points[i]


class Store(Credentials):
    """The cloud database. The constructor does no I/O; connections open on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        # parsed point tables, per Box: a table id names its content, so never stale; at most
        # MAX_TABLES_PER_BOX a Box (its newest) and MAX_CACHED_POINTS in all (a Box sending huge
        # tables evicts its own, then the least recently used, it does not grow the cloud)
        self._tables: Lru[str, dict[int, PointTable]] = Lru(MAX_CACHED_POINTS, lambda d: sum(map(len, d.values())))
        self._tables_lock = threading.Lock()

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            try:
                if not self.path.parent.exists():
                    private_dir(self.path.parent)
                private_db(self.path)  # customers' data: 0600, and so are the -wal and -shm files
                db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                db.executescript(_SCHEMA)
                for table, column, decl in _ADDED_COLUMNS:
                    if column not in {r[1] for r in db.execute(f"PRAGMA table_info({table})")}:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
            except (sqlite3.Error, OSError) as e:
                raise StoreError(f"cannot open the cloud database {self.path}: {e}") from e
            self._local.db = db
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # -- boxes ------------------------------------------------------------------------------

    def boxes(self) -> list[BoxRow]:
        """Every Box, by ID."""
        sql = f"SELECT {_BOX_COLS} FROM boxes ORDER BY box_id"  # noqa: S608 - constant column list
        return [self._row(r) for r in self._db().execute(sql)]

    def box(self, box_id: str) -> BoxRow | None:
        """One Box, or None."""
        sql = f"SELECT {_BOX_COLS} FROM boxes WHERE box_id=?"  # noqa: S608 - constant column list
        r = self._db().execute(sql, (box_id,)).fetchone()
        return self._row(r) if r else None

    @staticmethod
    def _row(r: Sequence[object]) -> BoxRow:
        vals = list(r)
        vals[3] = int(str(vals[3]))
        vals[6] = bool(vals[6])
        return BoxRow(*vals)  # type: ignore[arg-type]

    def set_status(self, box_id: str, online: bool, ts: float, reason: str, version: str | None) -> None:
        """Record a Box's online/offline status and keep its history."""
        with self._tx() as db:
            db.execute(
                "UPDATE boxes SET online=?, status_ts=?, status_reason=?, version=COALESCE(?, version) WHERE box_id=?",
                (int(online), ts, reason, version, box_id),
            )
            db.execute("INSERT INTO status_history VALUES (?, ?, ?, ?)", (box_id, ts, int(online), reason))

    def status_history(self, box_id: str, limit: int = 20) -> list[tuple[float, bool, str]]:
        """The latest status changes of a Box, newest first."""
        return [
            (float(t), bool(o), r or "")
            for t, o, r in self._db().execute(
                "SELECT ts, online, reason FROM status_history WHERE box_id=? ORDER BY ts DESC LIMIT ?",
                (box_id, limit),
            )
        ]

    # -- data -------------------------------------------------------------------------------

    def put_table(self, box_id: str, table_id: int, points: Sequence[PointInfo]) -> None:
        """Remember a Box's point table."""
        body = json.dumps([[p.name, p.unit, p.kind] for p in points])
        with self._tx() as db:
            db.execute(
                "INSERT INTO point_tables VALUES (?, ?, ?) ON CONFLICT DO NOTHING", (box_id, table_id, body)
            )
        self._cache_table(box_id, table_id, PointTable(points))

    def table(self, box_id: str, table_id: int) -> PointTable | None:
        """A Box's point table, or None when it has not been received."""
        with self._tables_lock:
            cached = (self._tables.get(box_id) or {}).get(table_id)
        if cached is not None:
            return cached
        r = self._db().execute(
            "SELECT points FROM point_tables WHERE box_id=? AND table_id=?", (box_id, table_id)
        ).fetchone()
        if r is None:
            return None
        table = PointTable(PointInfo(*p) for p in json.loads(r[0]))
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

    # -- messages put aside (a Box over its decoding budget, see cloud.receiver) ------------------

    def defer(self, box_id: str, leaf: str, payload: bytes, limit: int) -> bool:
        """Keep a message to decode later; False when the Box already has `limit` put aside."""
        with self._tx() as db:
            (n,) = db.execute("SELECT COUNT(*) FROM deferred WHERE box_id=?", (box_id,)).fetchone()
            if n >= limit:
                return False
            db.execute("INSERT INTO deferred (box_id, leaf, payload, received) VALUES (?, ?, ?, ?)",
                       (box_id, leaf, payload, time.time()))
        return True

    def deferred_counts(self) -> dict[str, int]:
        """Box -> messages put aside."""
        return {str(b): int(n) for b, n in self._db().execute("SELECT box_id, COUNT(*) FROM deferred GROUP BY box_id")}

    def next_deferred(self, box_id: str) -> tuple[int, str, bytes] | None:
        """(id, leaf, payload) of a Box's oldest message put aside."""
        r = self._db().execute("SELECT id, leaf, payload FROM deferred WHERE box_id=? ORDER BY id LIMIT 1",
                               (box_id,)).fetchone()
        return (int(r[0]), str(r[1]), bytes(r[2])) if r else None

    def drop_deferred(self, row_id: int) -> None:
        """Forget a message put aside (it was handled)."""
        with self._tx() as db:
            db.execute("DELETE FROM deferred WHERE id=?", (row_id,))

    def park(self, box_id: str, table_id: int, payload: bytes, limit: int) -> bool:
        """Keep a batch whose point table has not arrived yet; False when the Box already has `limit` parked."""
        with self._tx() as db:
            (n,) = db.execute("SELECT COUNT(*) FROM parked_batches WHERE box_id=?", (box_id,)).fetchone()
            if n >= limit:
                return False
            db.execute("INSERT INTO parked_batches VALUES (?, ?, ?, ?)", (box_id, table_id, payload, time.time()))
        return True

    def unpark(self, box_id: str, table_id: int) -> list[bytes]:
        """Take the parked batches of a table that has now arrived."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT payload FROM parked_batches WHERE box_id=? AND table_id=?", (box_id, table_id)
            ).fetchall()
            db.execute("DELETE FROM parked_batches WHERE box_id=? AND table_id=?", (box_id, table_id))
        return [bytes(r[0]) for r in rows]

    def store_batch(self, box_id: str, batch: Batch, table: Sequence[PointInfo], digest: bytes = b"") -> bool:
        """Store a batch's samples once; returns False when (Box, epoch, seq) was already stored.

        A batch number seen again with a different `digest` (its payload's hash) is recorded as a
        conflict: the Box re-used a sequence number for other data (lost state, or tampering).

        Raises:
            WireError: a group points outside the table.
        """
        rows, latest = _sample_rows(box_id, batch, table if isinstance(table, PointTable) else PointTable(table))
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (box_id, batch.epoch, batch.seq, now, len(rows), digest),
            )
            if cur.rowcount == 0:
                (old,) = db.execute("SELECT digest FROM batches WHERE box_id=? AND epoch=? AND seq=?",
                                    (box_id, batch.epoch, batch.seq)).fetchone()
                if digest and old and bytes(old) != digest:
                    db.execute("INSERT INTO conflicts VALUES (?, ?, ?, ?)", (box_id, batch.epoch, batch.seq, now))
                return False
            db.executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?)", rows)
            db.executemany(
                """INSERT INTO latest VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT (box_id, point) DO UPDATE SET ts_ms=excluded.ts_ms,
                     value=excluded.value, quality=excluded.quality, unit=excluded.unit
                   WHERE excluded.ts_ms >= latest.ts_ms""",
                latest,
            )
            db.execute("UPDATE boxes SET last_seen=? WHERE box_id=?", (now, box_id))
        return True

    # -- configurations and commands to Boxes ----------------------------------------------------

    def add_config(self, box_id: str, toml_text: str, allow_empty: bool = False) -> int:
        """Record a new configuration for a Box; returns its version (1, 2, ...)."""
        with self._tx() as db:
            (last,) = db.execute("SELECT COALESCE(MAX(version), 0) FROM configs WHERE box_id=?", (box_id,)).fetchone()
            db.execute("INSERT INTO configs (box_id, version, toml, created, allow_empty) VALUES (?, ?, ?, ?, ?)",
                       (box_id, int(last) + 1, toml_text, time.time(), int(allow_empty)))
        return int(last) + 1

    def unpublished_configs(self) -> list[ConfigRow]:
        """The newest configuration of each Box, when it is not published yet."""
        rows = self._db().execute(
            """SELECT * FROM configs c WHERE published IS NULL
               AND version = (SELECT MAX(version) FROM configs WHERE box_id = c.box_id)""").fetchall()
        return [self._config_row(r) for r in rows]

    def mark_config_published(self, box_id: str, version: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE configs SET published=? WHERE box_id=? AND version=?", (time.time(), box_id, version))

    def config_answered(self, box_id: str, version: int, status: str, reasons: list[str]) -> bool:
        """The Box's answer to configuration `version`; False when there is no such version."""
        with self._tx() as db:
            cur = db.execute("UPDATE configs SET status=?, reasons=?, answered=? WHERE box_id=? AND version=?",
                             (status, json.dumps(reasons), time.time(), box_id, version))
        return cur.rowcount > 0

    def configs(self, box_id: str, limit: int = 10) -> list[ConfigRow]:
        """A Box's configurations, newest first."""
        rows = self._db().execute("SELECT * FROM configs WHERE box_id=? ORDER BY version DESC LIMIT ?",
                                  (box_id, limit)).fetchall()
        return [self._config_row(r) for r in rows]

    def config_state(self, box_id: str) -> ConfigRow | None:
        """The newest configuration pushed to a Box, with its answer if any."""
        rows = self.configs(box_id, 1)
        return rows[0] if rows else None

    @staticmethod
    def _config_row(r: Sequence[Any]) -> ConfigRow:
        return ConfigRow(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]) if r[6] else [], r[7], bool(r[8]))

    def add_command(self, cmd_id: str, box_id: str, name: str, args: dict[str, object], expires: float) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO commands (id, box_id, name, args, expires, created) VALUES (?, ?, ?, ?, ?, ?)",
                       (cmd_id, box_id, name, json.dumps(args), expires, time.time()))

    def unpublished_commands(self, now: float) -> list[CommandRow]:
        """Commands not sent yet, not expired and not cancelled, oldest first."""
        rows = self._db().execute("SELECT * FROM commands WHERE published IS NULL AND status IS NULL "
                                  "AND expires > ? ORDER BY created", (now,)).fetchall()
        return [self._command_row(r) for r in rows]

    def mark_command_published(self, cmd_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE commands SET published=? WHERE id=?", (time.time(), cmd_id))

    def claim_command(self, cmd_id: str) -> bool:
        """Mark a queued command published before publishing it; False when it was cancelled (or
        claimed) meanwhile: then it must not be published. `unclaim_command` when publishing fails."""
        with self._tx() as db:
            return db.execute("UPDATE commands SET published=? WHERE id=? AND published IS NULL AND status IS NULL",
                              (time.time(), cmd_id)).rowcount > 0

    def unclaim_command(self, cmd_id: str) -> None:
        """A claimed command could not be published: queue it again."""
        with self._tx() as db:
            db.execute("UPDATE commands SET published=NULL WHERE id=? AND status IS NULL", (cmd_id,))

    def cancel_command(self, cmd_id: str) -> bool:
        """Cancel a queued command so that it is never published (status "cancelled").

        Returns:
            True when it was cancelled; False when it was already published (or is unknown).
        """
        with self._tx() as db:
            return db.execute("UPDATE commands SET status='cancelled', answered=? "
                              "WHERE id=? AND published IS NULL AND status IS NULL",
                              (time.time(), cmd_id)).rowcount > 0

    def command_answered(self, box_id: str, cmd_id: str, reply: dict[str, object]) -> bool:
        """Store the Box's reply to one of its commands; False when the id is not this Box's.

        The first answer stays: a Box re-sending a reply (after a reconnection) changes nothing."""
        with self._tx() as db:
            cur = db.execute("UPDATE commands SET status=?, reply=?, answered=? "
                             "WHERE id=? AND box_id=? AND answered IS NULL",
                             (str(reply.get("status")), json.dumps(reply), time.time(), cmd_id, box_id))
        return cur.rowcount > 0

    def command(self, cmd_id: str) -> CommandRow | None:
        r = self._db().execute("SELECT * FROM commands WHERE id=?", (cmd_id,)).fetchone()
        return self._command_row(r) if r else None

    def commands(self, box_id: str, limit: int = 20) -> list[CommandRow]:
        """A Box's commands, newest first."""
        rows = self._db().execute("SELECT * FROM commands WHERE box_id=? ORDER BY created DESC LIMIT ?",
                                  (box_id, limit)).fetchall()
        return [self._command_row(r) for r in rows]

    @staticmethod
    def _command_row(r: Sequence[Any]) -> CommandRow:
        return CommandRow(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6], r[7],
                          json.loads(r[8]) if r[8] else {}, r[9])

    # -- tags and deployments --------------------------------------------------------------------

    def tag_box(self, box_id: str, tags: Iterable[str]) -> None:
        with self._tx() as db:
            db.executemany("INSERT OR IGNORE INTO box_tags VALUES (?, ?)", [(box_id, t) for t in tags])

    def untag_box(self, box_id: str, tags: Iterable[str]) -> int:
        """Remove tags from a Box; returns how many it had."""
        with self._tx() as db:
            return sum(db.execute("DELETE FROM box_tags WHERE box_id=? AND tag=?", (box_id, t)).rowcount
                       for t in tags)

    def tags(self) -> dict[str, list[str]]:
        """Each tagged Box's tags, sorted."""
        out: dict[str, list[str]] = {}
        for box_id, tag in self._db().execute("SELECT box_id, tag FROM box_tags ORDER BY box_id, tag"):
            out.setdefault(str(box_id), []).append(str(tag))
        return out

    def tagged(self, tag: str) -> list[str]:
        """The Boxes with a tag (revoked or not), sorted."""
        return [str(b) for (b,) in self._db().execute("SELECT box_id FROM box_tags WHERE tag=? ORDER BY box_id",
                                                       (tag,))]

    def add_deployment(self, d: DeploymentRow, boxes: Sequence[tuple[str, int]]) -> list[tuple[str, str]]:
        """Record a new deployment and its (Box, wave)s, all pending, unless one of the Boxes is in
        another running deployment (checked in the same transaction).

        Returns:
            (Box, deployment) of each such conflict; the deployment was not recorded when any.
        """
        with self._tx() as db:
            conflicts: list[tuple[str, str]] = []
            for box_id, _ in boxes:
                conflicts += [(box_id, str(other)) for (other,) in db.execute(
                    "SELECT b.deployment FROM deployment_boxes b JOIN deployments d ON d.id=b.deployment "
                    "WHERE b.box_id=? AND d.status='running'", (box_id,))]
            if conflicts:
                return conflicts
            db.execute("INSERT INTO deployments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (d.id, d.target, d.version, json.dumps(d.selector), json.dumps(d.waves), d.max_failures,
                        d.health_s, d.box_timeout_s, d.status, d.reason, d.created, d.updated))
            db.executemany("INSERT INTO deployment_boxes VALUES (?, ?, ?, 'pending', '', NULL, NULL, ?)",
                           [(d.id, b, wave, d.created) for b, wave in boxes])
        return []

    def deployments(self, status: str | None = None) -> list[DeploymentRow]:
        """Deployments (of a status), newest first."""
        sql, args = "SELECT * FROM deployments", tuple[str, ...]()
        if status is not None:
            sql, args = sql + " WHERE status=?", (status,)
        return [self._deployment_row(r) for r in self._db().execute(sql + " ORDER BY created DESC, id", args)]

    def ended_with_open_boxes(self) -> list[DeploymentRow]:
        """Halted or stopped deployments with Boxes still under way (sent, downloading...)."""
        rows = self._db().execute(
            "SELECT * FROM deployments d WHERE status IN ('halted', 'stopped') AND EXISTS (SELECT 1 FROM "
            "deployment_boxes b WHERE b.deployment=d.id AND b.state IN ('sent', 'downloading', 'installing', "
            "'restarting'))").fetchall()
        return [self._deployment_row(r) for r in rows]

    def deployment(self, dep_id: str) -> DeploymentRow | None:
        r = self._db().execute("SELECT * FROM deployments WHERE id=?", (dep_id,)).fetchone()
        return self._deployment_row(r) if r else None

    @staticmethod
    def _deployment_row(r: Sequence[Any]) -> DeploymentRow:
        return DeploymentRow(r[0], r[1], r[2], json.loads(r[3]), json.loads(r[4]), int(r[5]), int(r[6]),
                             float(r[7]), r[8], r[9], float(r[10]), float(r[11]))

    def end_deployment(self, dep_id: str, status: str, reason: str | None, now: float,
                       cancel_pending: str | None = None) -> bool:
        """Move a running deployment to `status`; False when it was not running. With `cancel_pending`
        (the detail), its Boxes not sent yet are cancelled in the same transaction: nobody sees the
        deployment ended with Boxes still waiting to be sent."""
        with self._tx() as db:
            ended = db.execute("UPDATE deployments SET status=?, reason=?, updated=? WHERE id=? AND status='running'",
                               (status, reason, now, dep_id)).rowcount > 0
            if ended and cancel_pending is not None:
                db.execute("UPDATE deployment_boxes SET state='cancelled', detail=?, updated=? "
                           "WHERE deployment=? AND state='pending'", (cancel_pending, now, dep_id))
            return ended

    def deployment_boxes(self, dep_id: str) -> list[DeploymentBoxRow]:
        """The Boxes of a deployment, by wave then Box."""
        rows = self._db().execute("SELECT * FROM deployment_boxes WHERE deployment=? ORDER BY wave, box_id",
                                  (dep_id,)).fetchall()
        return [DeploymentBoxRow(r[0], r[1], int(r[2]), r[3], r[4], r[5], r[6], float(r[7])) for r in rows]

    def set_box_state(self, dep_id: str, box_id: str, state: str, detail: str | None, now: float, *,
                      only_from: Iterable[str], cmd_id: str | None = None) -> bool:
        """Move a Box of a deployment to `state` if it is in one of `only_from` (checked in the same
        transaction: the cloud's threads and `boxcloud` processes share the table). With `cmd_id`, the
        update command sent to it (and the time it was sent). `detail` None keeps the detail.

        Returns:
            whether the Box moved.
        """
        states = list(only_from)
        marks = ",".join("?" * len(states))
        sets, args = "state=?, updated=?", [state, now]
        if detail is not None:
            sets, args = sets + ", detail=?", [*args, detail]
        if cmd_id is not None:
            sets, args = sets + ", cmd_id=?, sent=?", [*args, cmd_id, now]
        with self._tx() as db:
            return db.execute(f"UPDATE deployment_boxes SET {sets} "  # noqa: S608 - constant fragments
                              f"WHERE deployment=? AND box_id=? AND state IN ({marks})",
                              (*args, dep_id, box_id, *states)).rowcount > 0

    def put_ota_event(self, dep_id: str, box_id: str, doc: dict[str, object], now: float) -> None:
        """Keep the latest `ota` event of a Box in a deployment."""
        with self._tx() as db:
            db.execute("INSERT INTO ota_events VALUES (?, ?, ?, ?) ON CONFLICT (deployment, box_id) DO UPDATE "
                       "SET received=excluded.received, doc=excluded.doc", (dep_id, box_id, now, json.dumps(doc)))

    def ota_events(self, dep_id: str) -> dict[str, tuple[float, dict[str, object]]]:
        """Box -> (time received, document) of the latest `ota` event of each Box in a deployment."""
        return {str(b): (float(t), json.loads(d)) for b, t, d in self._db().execute(
            "SELECT box_id, received, doc FROM ota_events WHERE deployment=?", (dep_id,))}

    # -- health and alerts -------------------------------------------------------------------

    def put_health(self, box_id: str, doc: dict[str, object]) -> dict[str, object] | None:
        """Keep a Box's latest health report; returns the previous one."""
        with self._tx() as db:
            row = db.execute("SELECT doc FROM health WHERE box_id=?", (box_id,)).fetchone()
            db.execute("INSERT INTO health VALUES (?, ?, ?) ON CONFLICT (box_id) DO UPDATE SET "
                       "received=excluded.received, doc=excluded.doc", (box_id, time.time(), json.dumps(doc)))
        return json.loads(row[0]) if row else None

    def health(self, box_id: str) -> tuple[float, dict[str, object]] | None:
        """(time received, report) of a Box's latest health report."""
        row = self._db().execute("SELECT received, doc FROM health WHERE box_id=?", (box_id,)).fetchone()
        return (float(row[0]), json.loads(row[1])) if row else None

    def put_modem(self, box_id: str, doc: dict[str, object]) -> dict[str, object] | None:
        """Keep a Box's latest modem report (it comes only when something changed); returns the previous one."""
        with self._tx() as db:
            row = db.execute("SELECT doc FROM modem WHERE box_id=?", (box_id,)).fetchone()
            db.execute("INSERT INTO modem VALUES (?, ?, ?) ON CONFLICT (box_id) DO UPDATE SET "
                       "received=excluded.received, doc=excluded.doc", (box_id, time.time(), json.dumps(doc)))
        return json.loads(row[0]) if row else None

    def modem(self, box_id: str) -> tuple[float, dict[str, object]] | None:
        """(time received, report) of a Box's latest modem report."""
        row = self._db().execute("SELECT received, doc FROM modem WHERE box_id=?", (box_id,)).fetchone()
        return (float(row[0]), json.loads(row[1])) if row else None

    def put_evicted(self, box_id: str, epoch: int, ranges: list[list[int]], samples: int) -> None:
        """Remember batches a Box evicted (they are not gaps)."""
        with self._tx() as db:
            db.executemany("INSERT INTO evicted VALUES (?, ?, ?, ?, ?, ?)",
                           [(box_id, epoch, a, b, samples, time.time()) for a, b in ranges])

    def missing_seqs(self, box_id: str, epoch: int, below: int, limit: int = 20) -> list[int]:
        """Sequence numbers under `below` that were neither stored nor reported evicted."""
        have = {int(s) for (s,) in self._db().execute(
            "SELECT seq FROM batches WHERE box_id=? AND epoch=? AND seq < ?", (box_id, epoch, below))}
        for a, b in self._db().execute(
                "SELECT seq_from, seq_to FROM evicted WHERE box_id=? AND epoch=?", (box_id, epoch)):
            have.update(range(int(a), int(b) + 1))
        out = []
        for s in range(1, below):
            if s not in have:
                out.append(s)
                if len(out) >= limit:
                    break
        return out

    def first_seq(self, box_id: str, epoch: int) -> int:
        """The lowest sequence number seen for a Box's epoch (0 when none)."""
        row = self._db().execute("SELECT MIN(seq) FROM batches WHERE box_id=? AND epoch=?", (box_id, epoch)).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def device_state(self, box_id: str, device: str, bad_reason: str | None, now: float) -> None:
        """Record whether a device behind a Box answered (reason None) or not."""
        with self._tx() as db:
            if bad_reason is None:
                db.execute("INSERT INTO devices VALUES (?, ?, NULL, NULL, ?) ON CONFLICT (box_id, device) DO UPDATE "
                           "SET bad_since=NULL, reason=NULL, last_good=excluded.last_good", (box_id, device, now))
            else:
                db.execute("INSERT INTO devices VALUES (?, ?, ?, ?, NULL) ON CONFLICT (box_id, device) DO UPDATE "
                           "SET bad_since=COALESCE(devices.bad_since, excluded.bad_since), reason=excluded.reason",
                           (box_id, device, now, bad_reason))

    def bad_devices(self, box_id: str) -> list[tuple[str, float, str]]:
        """(device, bad since, reason) of a Box's devices that do not answer."""
        return [(d, float(t), r) for d, t, r in self._db().execute(
            "SELECT device, bad_since, reason FROM devices WHERE box_id=? AND bad_since IS NOT NULL", (box_id,))]

    def open_alert(self, box_id: str, kind: str, subject: str, message: str, *, refresh: bool = False) -> bool:
        """Open an alert unless the same one is open (then, with `refresh`, update its message).

        Returns:
            whether the alert is new.
        """
        with self._tx() as db:
            row = db.execute("SELECT id FROM alerts WHERE box_id=? AND kind=? AND subject=? AND closed IS NULL",
                             (box_id, kind, subject)).fetchone()
            if row:
                if refresh:
                    db.execute("UPDATE alerts SET message=? WHERE id=?", (message, row[0]))
                return False
            db.execute("INSERT INTO alerts (box_id, kind, subject, message, opened) VALUES (?, ?, ?, ?, ?)",
                       (box_id, kind, subject, message, time.time()))
        return True

    def close_alert(self, box_id: str, kind: str, subject: str | None = None) -> int:
        """Close the open alerts of a kind (and subject); returns how many."""
        sql = "UPDATE alerts SET closed=? WHERE box_id=? AND kind=? AND closed IS NULL"
        args: tuple[object, ...] = (time.time(), box_id, kind)
        if subject is not None:
            sql, args = sql + " AND subject=?", (*args, subject)
        with self._tx() as db:
            return db.execute(sql, args).rowcount

    def alerts(self, box_id: str | None = None, include_closed: bool = False) -> list[Alert]:
        """Alerts, newest first."""
        sql = "SELECT id, box_id, kind, subject, message, opened, closed, acked FROM alerts WHERE 1=1"
        args: tuple[object, ...] = ()
        if box_id is not None:
            sql, args = sql + " AND box_id=?", (box_id,)
        if not include_closed:
            sql += " AND closed IS NULL"
        return [Alert(*r) for r in self._db().execute(sql + " ORDER BY opened DESC, id DESC", args)]

    def alert(self, alert_id: int) -> Alert | None:
        """One alert by its number."""
        r = self._db().execute("SELECT id, box_id, kind, subject, message, opened, closed, acked FROM alerts "
                               "WHERE id=?", (alert_id,)).fetchone()
        return Alert(*r) if r else None

    def ack_alert(self, alert_id: int, close: bool) -> bool:
        """Acknowledge an open alert (and with `close`, close it); False when it was not open and unacknowledged."""
        now = time.time()
        with self._tx() as db:
            return db.execute("UPDATE alerts SET acked=COALESCE(acked, ?), closed=CASE WHEN ? THEN ? ELSE closed END "
                              "WHERE id=? AND closed IS NULL AND (acked IS NULL OR ?)",
                              (now, int(close), now, alert_id, int(close))).rowcount > 0

    def delete_box(self, box_id: str) -> None:
        """Forget a Box and everything stored about it (its revoked certificates stay on the CRL)."""
        with self._tx() as db:
            for table in ("samples", "latest", "batches", "conflicts", "parked_batches", "point_tables", "health",
                          "modem", "evicted", "devices", "alerts", "status_history", "configs", "commands", "box_tags",
                          "superseded_certs", "boxes"):
                db.execute(f"DELETE FROM {table} WHERE box_id=?", (box_id,))  # noqa: S608 - constant names

    def request_clear_retained(self, box_id: str) -> None:
        """Ask the running cloud to clear the retained configuration on a Box's downlink."""
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO clear_retained VALUES (?, ?)", (box_id, time.time()))

    def retained_to_clear(self) -> list[str]:
        return [str(b) for (b,) in self._db().execute("SELECT box_id FROM clear_retained")]

    def retained_cleared(self, box_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM clear_retained WHERE box_id=?", (box_id,))

    def set_offline(self, box_id: str, reason: str) -> None:
        """Mark a Box offline by the platform's own judgement (missed heartbeats)."""
        self.set_status(box_id, False, time.time(), reason, None)

    def latest(self, box_id: str) -> list[tuple[str, int, object, int, str]]:
        """(point, ts_ms, value, quality, unit) of each point's latest sample."""
        return [
            (p, int(t), json.loads(v) if v is not None else None, int(q), u)
            for p, t, v, q, u in self._db().execute(
                "SELECT point, ts_ms, value, quality, unit FROM latest WHERE box_id=? ORDER BY point", (box_id,)
            )
        ]

    def samples(self, box_id: str, point: str | None = None) -> list[tuple[str, int, object, int]]:
        """Every stored sample of a Box (or of one point), oldest first."""
        sql = "SELECT point, ts_ms, value, quality FROM samples WHERE box_id=?"
        args: tuple[object, ...] = (box_id,)
        if point is not None:
            sql, args = sql + " AND point=?", (*args, point)
        return [
            (p, int(t), json.loads(v) if v is not None else None, int(q))
            for p, t, v, q in self._db().execute(sql + " ORDER BY ts_ms, rowid", args)
        ]

    def conflicts(self, box_id: str) -> list[tuple[int, int]]:
        """(epoch, seq) of batches that came again with different content."""
        return [(int(e), int(s)) for e, s in self._db().execute(
            "SELECT epoch, seq FROM conflicts WHERE box_id=? ORDER BY received", (box_id,))]

    def batch_keys(self, box_id: str) -> list[tuple[int, int]]:
        """(epoch, seq) of every batch stored for a Box."""
        return [(int(e), int(s)) for e, s in self._db().execute(
            "SELECT epoch, seq FROM batches WHERE box_id=? ORDER BY epoch, seq", (box_id,))]


@dataclass(frozen=True)
class Alert:
    """An alert about a Box (or a device behind it)."""

    id: int
    box_id: str
    kind: str
    subject: str
    message: str
    opened: float
    closed: float | None
    acked: float | None = None


_Row = tuple[str, str, int, str, int]


def _sample_rows(box_id: str, batch: Batch, table: PointTable) -> tuple[list[_Row], list[tuple[object, ...]]]:
    """The `samples` rows of a batch, in its order, and the `latest` rows: each point's newest sample.

    Built a group at a time (C-level `zip`, one JSON encoding per group), not a sample at a time:
    this runs for every sample the cloud receives.

    Raises:
        WireError: a group points outside the table.
    """
    names, units = table.names, table.units
    groups = []  # (dt_ms, first index, count, ts_ms, values as JSON, qualities)
    for g in batch.groups:
        n, first = len(g.values), g.first
        if first + n > len(names):
            raise WireError(f"group at index {first} runs past the {len(names)}-point table")
        quality = [g.faults.get(i, 0) for i in range(n)] if g.faults else [0] * n
        groups.append((g.dt_ms, first, n, batch.base_ts_ms + g.dt_ms, _json_values(g.values), quality))
    rows: list[_Row] = []
    for _, first, n, ts, values, quality in groups:
        rows += zip(repeat(box_id, n), names[first:first + n], repeat(ts, n), values, quality, strict=True)
    # oldest group first (a stable sort), so that the last row written for a point is its newest
    newest: dict[str, tuple[object, ...]] = {}
    for _, first, n, ts, values, quality in sorted(groups, key=itemgetter(0)):
        points = names[first:first + n]
        newest.update(zip(points, zip(repeat(box_id, n), points, repeat(ts, n), values, quality,
                                      units[first:first + n], strict=True), strict=True))
    return rows, list(newest.values())


def _json_values(values: list[Value]) -> list[str]:
    """Each value as JSON text (`json.dumps(v)` of each), with one encoding for the whole list.

    Numbers, booleans and null never contain a comma, so the list's encoding splits into its
    items; a list holding text is encoded item by item.
    """
    if not values:
        return []
    if str in map(type, values):
        return [json.dumps(v) for v in values]
    return json.dumps(values, separators=(",", ":"))[1:-1].split(",")


_BOX_COLS = (
    "box_id, serial, enrolled, cert_serial, cert_not_after, revoked, online, status_ts,"
    " status_reason, last_seen, version"
)
