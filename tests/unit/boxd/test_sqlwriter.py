"""The queue's writer thread: group commit, waiters released only once their transaction is on disk,
errors to the job that caused them, and a stop that drains."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from boxd.errors import QueueError
from boxd.sqlwriter import GroupWriter
from tests.support.wait import in_loop, until


def writer(path: Path) -> GroupWriter:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS t (v INTEGER NOT NULL CHECK (v >= 0))")
    w = GroupWriter(db)
    w.start()
    return w


def committed(path: Path) -> list[int]:
    """What another connection sees: committed rows only."""
    with sqlite3.connect(path) as other:
        return [v for (v,) in other.execute("SELECT v FROM t ORDER BY rowid")]


def insert(v: int) -> Callable[[sqlite3.Connection], int]:
    return lambda db: int(db.execute("INSERT INTO t VALUES (?)", (v,)).lastrowid or 0)


class Gate:
    """A job that holds the writer inside its transaction until opened."""

    def __init__(self) -> None:
        self.entered, self.opened = threading.Event(), threading.Event()

    def __call__(self, db: sqlite3.Connection) -> None:
        self.entered.set()
        assert self.opened.wait(10)

    async def wait_entered(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, 10)


async def busy(w: GroupWriter) -> tuple[Gate, asyncio.Future[None]]:
    """The writer held inside a transaction (as by a slow fsync) until the gate opens."""
    gate = Gate()
    held = w.submit("hold", gate)
    await gate.wait_entered()
    return gate, held


@in_loop
async def test_emissions_waiting_together_share_one_commit(tmp_path: Path) -> None:
    w = writer(tmp_path / "q.db")
    gate, first = await busy(w)
    before = w.groups
    waiting = [w.submit(f"write {v}", insert(v)) for v in range(10)]  # ten buses emit while the disk is busy
    gate.opened.set()
    await asyncio.gather(first, *waiting)
    assert w.groups == before + 1  # the ten went into one transaction: one fsync, not ten
    assert committed(tmp_path / "q.db") == list(range(10))  # in the order they were asked for
    w.stop()


@in_loop
async def test_a_waiter_is_released_only_once_its_whole_group_is_committed(tmp_path: Path) -> None:
    w = writer(tmp_path / "q.db")
    hold, held = await busy(w)
    gate = Gate()
    mine = w.submit("write 1", insert(1))
    later = w.submit("hold again", gate)  # the same group: it holds the transaction after mine ran
    hold.opened.set()
    await gate.wait_entered()  # my row is written in the open transaction, not committed
    await asyncio.sleep(0.05)  # (a wrong writer would have told me by now: this looks for an absence)
    assert not mine.done()
    assert committed(tmp_path / "q.db") == []
    gate.opened.set()
    await mine
    assert committed(tmp_path / "q.db") == [1]  # released: it is on disk
    await asyncio.gather(held, later)
    w.stop()


@in_loop
async def test_a_failed_write_reaches_its_waiter_and_no_other(tmp_path: Path) -> None:
    w = writer(tmp_path / "q.db")
    gate, held = await busy(w)
    good, bad, after = w.submit("write 1", insert(1)), w.submit("write -1", insert(-1)), w.submit("write 2", insert(2))
    gate.opened.set()
    await held
    with pytest.raises(QueueError, match="cannot write -1: CHECK constraint failed"):
        await bad
    assert await good and await after
    assert committed(tmp_path / "q.db") == [1, 2]  # its group went on without it
    w.stop()


@in_loop
async def test_bookkeeping_happens_even_when_the_waiter_gave_up(tmp_path: Path) -> None:
    w = writer(tmp_path / "q.db")
    gate, held = await busy(w)
    seen: list[object] = []
    job = w.submit("write 5", insert(5), lambda result, error: seen.append((result, error)))
    job.cancel()  # the emitter was cancelled (its bus stopped): the write still happens, and is counted
    gate.opened.set()
    await held
    await until(lambda: seen)
    assert seen == [(1, None)] and committed(tmp_path / "q.db") == [5]
    w.stop()


@in_loop
async def test_stop_commits_everything_asked_for_then_refuses(tmp_path: Path) -> None:
    w = writer(tmp_path / "q.db")
    gate, _ = await busy(w)
    pending = [w.submit(f"write {v}", insert(v)) for v in range(5)]
    gate.opened.set()
    w.stop()  # drains: waits for the five
    assert committed(tmp_path / "q.db") == list(range(5))
    with pytest.raises(QueueError, match="the queue is closed"):
        w.submit("write 9", insert(9))
    w.stop()  # twice is fine
    await asyncio.gather(*pending)  # and each was told


def test_a_blocking_call_returns_once_committed_or_raises(tmp_path: Path) -> None:
    w = writer(tmp_path / "q.db")
    assert w.call("write 3", insert(3)) == 1
    assert committed(tmp_path / "q.db") == [3]
    with pytest.raises(QueueError, match="cannot write -3"):
        w.call("write -3", insert(-3))
    w.stop()
