"""The supervisor: owns every task of the daemon; restarts a long-lived one that fails.

Two kinds of task, both children of one `asyncio.TaskGroup` (none outlives the supervisor,
and nothing else in the daemon calls `create_task`):

- long-lived (`start`): a coroutine factory restarted after a backoff delay (capped, with
  jitter) whenever it returns or raises; `stop` ends some (a reconfiguration replaces the
  field buses' tasks);
- one-shot (`spawn`): a job that runs once (an update, a configuration's probation, a renewed
  certificate's trial); an exception is logged and counted, never restarted.

Either may be called before `run`: the tasks start when it does. A failure is logged here,
at the top, with its traceback (the daemon's only `except Exception` for its own tasks).

Two exceptions end the daemon from any task: `FatalError` (it cannot go on: systemd restarts
it) and `Stop` (not an error: a planned exit with a status, e.g. 75 after a `restart` command
or an update's switch, which systemd or the launcher restarts). `run` raises them unwrapped
(not inside an `ExceptionGroup`), so the daemon handles them at its top.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from boxd.backoff import Backoff
from boxd.errors import BoxdError

log = logging.getLogger("boxd.supervisor")

TaskFactory = Callable[[], Awaitable[None]]
RESTART_STATUS = 75  # the exit status of a planned restart (EX_TEMPFAIL): systemd or the launcher starts boxd again


class FatalError(BoxdError):
    """Raised by a task when the daemon cannot go on (systemd will restart it)."""


class Stop(BoxdError):  # not an error (PEP 8: no Error suffix): a planned exit
    """Raised by a task to end the daemon on purpose: `status` is its exit status, `reason` what
    the platform is told ("restarting": planned, no alert)."""

    def __init__(self, status: int, reason: str, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.reason = reason


@dataclass
class TaskStats:
    """Per-task restart counters, for the heartbeat and `boxctl status`."""

    restarts: int = 0
    last_error: str = ""


@dataclass
class Supervisor:
    """Owns the daemon's tasks."""

    tasks: Mapping[str, TaskFactory] = field(default_factory=dict)
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    stats: dict[str, TaskStats] = field(default_factory=dict)
    _group: asyncio.TaskGroup | None = field(default=None, init=False, repr=False)
    _running: dict[str, asyncio.Task[None]] = field(default_factory=dict, init=False, repr=False)
    _pending: list[tuple[str, TaskFactory, bool]] = field(default_factory=list, init=False, repr=False)

    async def run(self) -> None:
        """Run every task until cancelled, or until one raises `FatalError` or `Stop` (raised here)."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._group = tg
                tg.create_task(asyncio.Event().wait(), name="supervisor")  # runs on with no task left
                for name, factory in self.tasks.items():
                    self.start(name, factory)
                pending, self._pending = self._pending, []
                for name, factory, once in pending:
                    (self.spawn if once else self.start)(name, factory)
        except BaseExceptionGroup as group:
            raise _first(group) from None
        finally:
            self._group = None

    def start(self, name: str, factory: TaskFactory) -> None:
        """Add a long-lived task; a task of that name must not be running."""
        if self._group is None:
            self._pending.append((name, factory, False))
            return
        if name in self._running and not self._running[name].done():
            raise RuntimeError(f"task {name} is already running")
        self.stats[name] = TaskStats()
        self._running[name] = self._group.create_task(self._keep(name, factory), name=name)

    def spawn(self, name: str, job: TaskFactory) -> None:
        """Run `job` once, owned here (cancelled when the daemon stops); a failure is logged."""
        if self._group is None:
            self._pending.append((name, job, True))
            return
        self._group.create_task(self._once(name, job), name=name)

    async def stop(self, names: list[str]) -> None:
        """End these tasks (cancelled; each cleans up in its own `finally`) and wait for them."""
        tasks = [t for n in names if (t := self._running.pop(n, None)) is not None]
        for n in names:
            self.stats.pop(n, None)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def names(self) -> list[str]:
        """The long-lived tasks running now."""
        return [n for n, t in self._running.items() if not t.done()]

    async def _keep(self, name: str, factory: TaskFactory) -> None:
        backoff = Backoff(self.backoff_base, self.backoff_cap)
        stats = self.stats[name]
        while True:
            try:
                await factory()
                stats.last_error = "returned"
                log.warning("task %s returned; restarting it", name, extra={"component": name})
            except (asyncio.CancelledError, FatalError, Stop):
                raise
            except Exception as e:  # the supervisor's top: log, count, restart
                stats.last_error = f"{type(e).__name__}: {e}"
                log.exception("task %s failed; restarting it", name, extra={"component": name})
            stats.restarts += 1
            await asyncio.sleep(backoff.next())

    async def _once(self, name: str, job: TaskFactory) -> None:
        try:
            await job()
        except (asyncio.CancelledError, FatalError, Stop):
            raise
        except Exception:  # the supervisor's top: a job's bug is logged, the daemon goes on
            log.exception("job %s failed", name, extra={"component": name})


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception that ended the group: a `Stop` before a `FatalError` before anything else."""
    leaves: list[BaseException] = []

    def walk(g: BaseExceptionGroup[BaseException]) -> None:
        for e in g.exceptions:
            if isinstance(e, BaseExceptionGroup):
                walk(e)
            else:
                leaves.append(e)

    walk(group)
    for kind in (Stop, FatalError):
        for e in leaves:
            if isinstance(e, kind):
                return e
    return leaves[0] if len(leaves) == 1 else group
