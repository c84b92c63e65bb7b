"""The supervisor: runs the daemon's long-lived tasks, restarts one that fails.

Each task is a coroutine factory with a name. A task that returns or raises is
restarted after a backoff delay (capped, with jitter); the failure is logged here,
at the top, with its traceback (the only `except Exception` of the daemon). A task
that raises `Fatal` stops the whole daemon: systemd restarts it. Every task is owned
by one `asyncio.TaskGroup`, so none outlives the supervisor. While it runs, `start` adds
a task and `stop` ends some (a reconfiguration replaces the field buses' tasks).
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


class Fatal(BoxdError):
    """Raised by a task when the daemon cannot go on (systemd will restart it)."""


@dataclass
class TaskStats:
    """Per-task restart counters, for the heartbeat and `boxctl status`."""

    restarts: int = 0
    last_error: str = ""


@dataclass
class Supervisor:
    """Owns the daemon's tasks."""

    tasks: Mapping[str, TaskFactory]
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    stats: dict[str, TaskStats] = field(default_factory=dict)
    _group: asyncio.TaskGroup | None = field(default=None, init=False, repr=False)
    _running: dict[str, asyncio.Task[None]] = field(default_factory=dict, init=False, repr=False)

    async def run(self) -> None:
        """Run every task until cancelled, or until one raises `Fatal`."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._group = tg
                tg.create_task(asyncio.Event().wait(), name="supervisor")  # runs on with no task left
                for name, factory in self.tasks.items():
                    self.start(name, factory)
        finally:
            self._group = None

    def start(self, name: str, factory: TaskFactory) -> None:
        """Add a task (while `run` runs); a task of that name must not be running."""
        if self._group is None:
            raise RuntimeError("the supervisor is not running")
        if name in self._running and not self._running[name].done():
            raise RuntimeError(f"task {name} is already running")
        self.stats[name] = TaskStats()
        self._running[name] = self._group.create_task(self._keep(name, factory), name=name)

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
        """The tasks running now."""
        return [n for n, t in self._running.items() if not t.done()]

    async def _keep(self, name: str, factory: TaskFactory) -> None:
        backoff = Backoff(self.backoff_base, self.backoff_cap)
        stats = self.stats[name]
        while True:
            try:
                await factory()
                stats.last_error = "returned"
                log.warning("task %s returned; restarting it", name, extra={"component": name})
            except (asyncio.CancelledError, Fatal):
                raise
            except Exception as e:  # the supervisor's top: log, count, restart
                stats.last_error = f"{type(e).__name__}: {e}"
                log.exception("task %s failed; restarting it", name, extra={"component": name})
            stats.restarts += 1
            await asyncio.sleep(backoff.next())
