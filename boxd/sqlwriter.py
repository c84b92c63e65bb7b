"""One thread that owns the writes of a SQLite connection, with group commit.

The event loop must not wait for a disk: a commit with ``synchronous=FULL`` waits for an
fsync (milliseconds on good flash, tens on an SD card, seconds on a failing one). So every
write is a *job* (a function of the connection) that `GroupWriter.submit` hands to one
thread; the loop gets a future and goes on. The thread runs jobs in the order they were
submitted, and every job that waits when it is free goes into the same transaction: one
COMMIT, one fsync for all of them (*group commit*: a dozen buses emitting at once cost one
fsync, not twelve in a row). A job that fails fails alone: the group is run again with
each job in a savepoint of its own (savepoints only then: they cost statements, and every
statement hands the interpreter's lock back and forth with the loop). A failed COMMIT (or
an error that ends the transaction) fails every job of the group.

A job's outcome reaches the loop only after its transaction committed (durable) or failed:
first its `settle` callback, which keeps the owner's bookkeeping right even when nobody
awaits the future any more (a cancelled emitter's readings are still written), then its
future. A SQLite error becomes `QueueError` ("cannot <what>: ..."); any other exception
of a job (a bug) reaches its future as it is, and the thread goes on. `stop()` drains:
everything submitted before it is committed, then the connection is closed.

Does not: know what the jobs write, or read for the loop (the loop reads on a connection
of its own: in WAL mode a reader sees only committed, hence durable, transactions).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from boxd.errors import QueueError

T = TypeVar("T")
Settle = Callable[[T | None, BaseException | None], None]  # (result, error): exactly one is meaningful

MAX_GROUP = 512  # jobs in one transaction at most (a bound on its size and on the wait of its first job)


@dataclass(eq=False)
class _Job(Generic[T]):
    what: str  # for the error message: "cannot <what>: ..."
    work: Callable[[sqlite3.Connection], T]
    loop: asyncio.AbstractEventLoop | None
    future: asyncio.Future[T] | None
    settle: Settle[T] | None
    result: T | None = None
    error: BaseException | None = field(default=None)
    done: threading.Event | None = None  # for `call`: set by the thread once the outcome is known


_STOP = object()


class GroupWriter:
    """The writer thread of one connection; see the module docstring.

    The constructor does no I/O; `start()` starts the thread, `stop()` drains and closes.
    Submit from the event loop's thread only.
    """

    def __init__(self, db: sqlite3.Connection, name: str = "queue writer", max_group: int = MAX_GROUP) -> None:
        self._db = db
        self._name = name
        self._max_group = max_group
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.groups = 0  # transactions committed or tried, for tests and benchmarks
        self.jobs = 0

    def start(self) -> None:
        """Start the thread (the connection must allow use from another thread)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def submit(self, what: str, work: Callable[[sqlite3.Connection], T],
               settle: Settle[T] | None = None) -> asyncio.Future[T]:
        """Run `work(connection)` in the writer's next transaction; the future resolves once
        it is committed (its result) or failed (`QueueError`).

        Raises:
            QueueError: the writer is stopped.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._put(_Job(what, work, loop, future, settle))
        return future

    def post(self, what: str, work: Callable[[sqlite3.Connection], T], settle: Settle[T]) -> None:
        """As `submit`, for a write nobody waits for: `settle` alone hears how it ended."""
        self._put(_Job(what, work, asyncio.get_running_loop(), None, settle))

    def call(self, what: str, work: Callable[[sqlite3.Connection], T]) -> T:
        """As `submit`, but the calling thread waits until the job is committed: only for the
        rare write whose caller must not go on before (it holds up the event loop as long).

        Raises:
            QueueError: the write failed, or the writer is stopped.
        """
        done = threading.Event()
        job: _Job[T] = _Job(what, work, None, None, None, done=done)
        self._put(job)
        done.wait()
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]  # set by the thread when there is no error

    def stop(self) -> None:
        """Commit everything submitted so far, close the connection, end the thread. Idempotent."""
        self._stopping = True
        thread, self._thread = self._thread, None
        if thread is None:
            self._db.close()  # never started
            return
        self._jobs.put(_STOP)
        thread.join()

    def _put(self, job: _Job[Any]) -> None:
        if self._stopping:
            raise QueueError(f"cannot {job.what}: the queue is closed")
        self._jobs.put(job)

    # -- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        stop = False
        try:
            while not stop:
                first = self._jobs.get()
                if first is _STOP:
                    break
                group: list[_Job[Any]] = [first]
                while len(group) < self._max_group:
                    try:
                        job = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if job is _STOP:
                        stop = True
                        break
                    group.append(job)
                self._commit(group)
                self._deliver(group)
        finally:
            self._db.close()

    def _commit(self, group: list[_Job[Any]]) -> None:
        self.groups += 1
        self.jobs += len(group)
        if not self._transaction(group, isolated=len(group) == 1):
            self._transaction(group, isolated=True)  # a job failed and undid the group: again, one savepoint each

    def _transaction(self, group: list[_Job[Any]], isolated: bool) -> bool:
        """Run the group in one transaction and commit it; every job's outcome is set. Not
        `isolated` (the common case: no savepoints, fewer statements), a failing job rolls the
        whole group back and this returns False, outcomes unset, for the caller to run it again."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            self._fail(group, e)
            return True
        for k, job in enumerate(group):
            try:
                if isolated:
                    db.execute("SAVEPOINT job")
                job.result = job.work(db)
                if isolated:
                    db.execute("RELEASE job")
            except Exception as e:  # noqa: BLE001 - the job's outcome, delivered to its waiter (see the docstring)
                if not isolated:
                    _rollback(db)
                    return False
                job.result, job.error = None, _wrap(job.what, e)
                if len(group) == 1:
                    _rollback(db)
                elif not self._undo_job(db):  # the error ended the whole transaction (disk full, I/O)
                    self._fail(group[:k] + group[k + 1:], e)
                    return True
        try:
            db.execute("COMMIT")
        except sqlite3.Error as e:
            _rollback(db)
            self._fail([j for j in group if j.error is None], e)
        return True

    @staticmethod
    def _undo_job(db: sqlite3.Connection) -> bool:
        """Roll one job back to its savepoint; False when the transaction itself is gone."""
        if not db.in_transaction:
            return False
        try:
            db.execute("ROLLBACK TO job")
            db.execute("RELEASE job")
        except sqlite3.Error:
            _rollback(db)
            return False
        return True

    @staticmethod
    def _fail(jobs: list[_Job[Any]], error: BaseException) -> None:
        for job in jobs:
            job.result, job.error = None, _wrap(job.what, error)

    @staticmethod
    def _deliver(group: list[_Job[Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Job[Any]]] = {}
        for job in group:
            if job.done is not None:
                job.done.set()
            elif job.loop is not None:
                by_loop.setdefault(job.loop, []).append(job)
        for loop, jobs in by_loop.items():  # one wake-up of the loop per group
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to tell
                loop.call_soon_threadsafe(_settle_all, loop, jobs)


def _rollback(db: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        if db.in_transaction:
            db.execute("ROLLBACK")


def _wrap(what: str, error: BaseException) -> BaseException:
    if isinstance(error, sqlite3.Error):
        wrapped = QueueError(f"cannot {what}: {error}")
        wrapped.__cause__ = error
        return wrapped
    return error


def _settle_all(loop: asyncio.AbstractEventLoop, jobs: list[_Job[Any]]) -> None:
    for job in jobs:
        try:
            _settle(job)
        except Exception as e:  # noqa: BLE001 - a callback's top: reported as the loop would, the others go on
            loop.call_exception_handler({"message": f"settling a write ({job.what}) failed", "exception": e})


def _settle(job: _Job[Any]) -> None:
    """On the loop: the job's bookkeeping, then its waiter."""
    if job.settle is not None:
        job.settle(job.result, job.error)
    future = job.future
    if future is not None and not future.done():
        if job.error is not None:
            future.set_exception(job.error)
        else:
            future.set_result(job.result)
