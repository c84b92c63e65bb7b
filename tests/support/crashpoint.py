"""boxd with a crash point, for aimed crash tests: the daemon freezes itself (SIGSTOP) at one
chosen moment of its queue's transactions, and the test then kills it (or cuts the power).

Run instead of ``python -m boxd.cli`` (`BoxProcess.start(..., crashpoint="seal-before:3")`)::

    BOXD_TEST_CRASHPOINT=<kind>-<when>:<n> python -m tests.support.crashpoint <boxd arguments>

<kind> is the queue transaction: ``put`` (a bus's readings written), ``seal`` (pending readings
made into a batch), ``ack`` (a batch removed once the broker acknowledged it); <when> is
``before`` (its statements done, its COMMIT not) or ``after`` (committed, nothing else done yet);
<n> counts the transactions holding that kind since the start (the queue's writer commits
several writes at once: a transaction may hold puts, a seal and acknowledgements together).
The freeze stops every thread of the process at once. The test sees the process stopped
(`is_stopped`). Nothing of this is in the daemon: this wrapper replaces the queue's writer
connection (`Queue._connect`) with one that watches the statements, and then runs boxd's own
entry point.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ENV = "BOXD_TEST_CRASHPOINT"
KINDS = {"INSERT INTO pending": "put", "INSERT INTO batches": "seal", "DELETE FROM batches WHERE seq=?": "ack"}


def is_stopped(pid: int) -> bool:
    """Whether process `pid` is stopped (state T in /proc/<pid>/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] in ("T", "t")


class _Watched:
    """A sqlite3 connection that freezes the process at the chosen transaction."""

    def __init__(self, db: sqlite3.Connection, kind: str, when: str, n: int) -> None:
        self._db, self._kind, self._when, self._n = db, kind, when, n
        self._seen = 0
        self._tx: set[str] = set()

    def _classify(self, sql: str) -> None:
        for prefix, kind in KINDS.items():
            if sql.startswith(prefix):
                self._tx.add(kind)

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "BEGIN IMMEDIATE":
            self._tx = set()
        elif sql == "COMMIT" and self._kind in self._tx:
            self._seen += 1
            hit = self._seen == self._n
            if hit and self._when == "before":
                _freeze()
            cur = self._db.execute(sql)
            if hit and self._when == "after":
                _freeze()
            return cur
        self._classify(sql)
        return self._db.execute(sql, *args)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        self._classify(sql)
        return self._db.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def _freeze() -> None:
    os.kill(os.getpid(), signal.SIGSTOP)


def install(spec: str) -> None:
    """Watch the queue's connection for the crash point `spec` ("<kind>-<when>:<n>")."""
    from boxd import queue

    point, _, n = spec.partition(":")
    kind, _, when = point.partition("-")
    if kind not in KINDS.values() or when not in ("before", "after") or not n.isdigit():
        raise SystemExit(f"{ENV}: expected <put|seal|ack>-<before|after>:<n>, got {spec!r}")
    connect: Callable[[queue.Queue], sqlite3.Connection] = queue.Queue._connect

    def connect_watched(self: queue.Queue) -> sqlite3.Connection:
        return _Watched(connect(self), kind, when, int(n))  # type: ignore[return-value]

    queue.Queue._connect = connect_watched  # type: ignore[method-assign]


def main() -> int:
    install(os.environ[ENV])
    from boxd.cli import main as boxd_main

    return boxd_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
