"""Commands from the platform as declared jobs, run against the running buses.

`JOBS` is the one dispatch table: for each command (`proto.commands`, one dataclass each) its
handler, the conditions under which it may run, its concurrency and its time limit, as the
Home Assistant Supervisor declares its jobs. `CommandRunner.run` takes a decoded command and
returns the framed reply for ``up/replies`` and what the daemon must do once the reply is out
(``restart``, or ``reboot``: the stop that follows is planned). In order:

1. a repeated id (`downlink.SeenIds`, persisted in ``<state>/commands.seen.json`` before the
   command runs: at most once, across restarts) -> "duplicate", nothing runs;
2. an expired command -> "expired", nothing runs;
3. a condition of its job not met -> "rejected" with the reason (``restart`` and ``reboot``
   while an update is past its point of no return; ``renew_cert`` on a daemon without renewal;
   ``update``/``update_abort`` on one without updates);
4. a job declared single (``renew_cert``, ``reboot``) while another of its kind runs ->
   "rejected";
5. the job, within its time limit: ``write`` (the point's bus checks it, `PointSource.check_write`:
   a refusal is "rejected", nothing sent; then the bus writes), ``read`` (`read_now` on each bus),
   ``logs`` (the in-memory tail, `boxd.logring`), ``restart`` (the daemon exits 75 after the reply;
   systemd starts it again), ``reboot`` (the configured reboot command; without one,
   ``systemctl reboot`` only in a boxd that systemd started), ``renew_cert`` (the daemon's
   `Certificates.renew`), ``update`` and ``update_abort`` (handed to `boxd.updates.UpdateAgent`:
   accepted at once, the outcome follows as ``ota`` events).

A failure of the bus or of the command is "failed" with the reason. Nothing raised by a command
escapes `run` (it is logged and replied "failed").
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from boxd import downlink
from boxd.errors import CommandFailedError
from boxd.logring import LogRing
from boxkit.files import write_atomic
from drivers import PointSource, Quality, Value
from drivers.errors import DriverError, WriteRefusedError
from proto.commands import Command, Logs, Read, Reboot, RenewCert, Restart, Update, UpdateAbort, Write
from proto.errors import RejectedError
from proto.replies import reply

log = logging.getLogger("boxd.commands")

SEEN_FILE = "commands.seen.json"
DEFAULT_REBOOT = "systemctl reboot"
TIME_LIMIT_S = 60.0
RENEW_TIME_LIMIT_S = 180.0  # HTTPS to the enrollment endpoint, then a trial connection, maybe a way back

Renew = Callable[[], Awaitable[str]]


class Updates(Protocol):
    """What runs software updates (`boxd.updates.UpdateAgent`); `start` and `abort` return the
    reply's detail or raise `RejectedError` to refuse."""

    @property
    def past_no_return(self) -> str:
        """Why the daemon must not restart or reboot now ("" when it may)."""
        ...

    def start(self, cmd: Update) -> str: ...

    def abort(self, cmd: UpdateAbort) -> str: ...


@dataclass(frozen=True, slots=True)
class Buses:
    """What commands run against: the bus of each point of the running configuration."""

    source_of: Mapping[str, PointSource]


@dataclass(frozen=True, slots=True)
class Outcome:
    """A command's reply, and what the daemon does after sending it ("", "restart", or "reboot": the
    machine is going down, so the stop that follows is planned)."""

    reply: bytes
    then: str = ""


C = TypeVar("C", bound=Command)
Condition = Callable[["CommandRunner"], str]  # why the job may not run now ("" when it may)


@dataclass(frozen=True, slots=True)
class Job(Generic[C]):
    """How one command runs: declared once, in `JOBS`."""

    run: Callable[[CommandRunner, C, Buses], Awaitable[Outcome]]
    conditions: tuple[Condition, ...] = ()
    single: bool = False  # refused while another of its kind runs
    time_limit_s: float = 0.0  # beyond the runner's limit (0: the runner's)


class CommandRunner:
    """Runs commands. The constructor does no I/O; `load` reads the persisted seen ids."""

    def __init__(self, state_dir: Path, ring: LogRing, reboot_command: str = DEFAULT_REBOOT, *,
                 now: Callable[[], float] = time.time, time_limit_s: float = TIME_LIMIT_S,
                 renew: Renew | None = None, updates: Updates | None = None) -> None:
        self._seen_path = state_dir / SEEN_FILE
        self._ring = ring
        self._reboot = shlex.split(reboot_command)  # empty: DEFAULT_REBOOT, under systemd only
        self._now = now
        self._time_limit = time_limit_s
        self.renewal = renew
        self.updates = updates
        self.seen = downlink.SeenIds()
        self._running: set[str] = set()  # the names of the single jobs running now

    def load(self) -> None:
        """Read the persisted seen ids (an unreadable file: start empty, said in the log)."""
        try:
            self.seen = downlink.SeenIds.from_json(self._seen_path.read_bytes())
        except OSError:
            pass
        except RejectedError as e:
            log.warning("%s: starting with no seen command ids", e)

    async def run(self, cmd: Command, buses: Buses) -> Outcome:
        """Run one command (never raises but for cancellation)."""
        if cmd.id in self.seen:
            log.info("command %s (%s): a repeated id, not run again", cmd.id, cmd.name)
            return Outcome(reply(cmd.id, "duplicate", "this id was received before; not run again"))
        self.seen.add(cmd.id)
        try:
            write_atomic(self._seen_path, self.seen.to_json(), 0o600)
        except OSError as e:  # the command runs; a repeat after a restart could run it again
            log.warning("cannot keep the seen command ids in %s: %s", self._seen_path, e)
        if downlink.is_expired(cmd, self._now()):
            log.info("command %s (%s): expired, not run", cmd.id, cmd.name)
            return Outcome(reply(cmd.id, "expired", f"expired at {cmd.expires:.0f}; not run"))
        log.info("command %s: %s", cmd.id, cmd.name)
        job: Job[Any] = JOBS[type(cmd)]
        limit = max(self._time_limit, job.time_limit_s)
        try:
            self._may_run(cmd, job)
            return await self._run(cmd, job, buses, limit)
        except RejectedError as e:
            log.info("command %s (%s) rejected: %s", cmd.id, cmd.name, e)
            return Outcome(reply(cmd.id, "rejected", str(e)))
        except TimeoutError:
            log.warning("command %s (%s): no result within %.0f s", cmd.id, cmd.name, limit)
            return Outcome(reply(cmd.id, "failed", f"no result within {limit:.0f} s"))
        except (DriverError, CommandFailedError) as e:
            log.warning("command %s (%s) failed: %s", cmd.id, cmd.name, e)
            return Outcome(reply(cmd.id, "failed", str(e) or type(e).__name__))
        except Exception as e:  # the command's top: untrusted input must never take the daemon down
            log.exception("command %s (%s) failed", cmd.id, cmd.name)
            return Outcome(reply(cmd.id, "failed", f"{type(e).__name__}: {e}"))

    def _may_run(self, cmd: Command, job: Job[Any]) -> None:
        """Raises RejectedError: a condition of the job is not met, or it is single and runs already."""
        for condition in job.conditions:
            why = condition(self)
            if why:
                raise RejectedError(f"cmd {cmd.id} ({cmd.name}): {why}")
        if job.single and cmd.name in self._running:
            raise RejectedError(f"cmd {cmd.id} ({cmd.name}): another {cmd.name} is running; not run")

    async def _run(self, cmd: Command, job: Job[Any], buses: Buses, limit: float) -> Outcome:
        if job.single:
            self._running.add(cmd.name)
        try:
            async with asyncio.timeout(limit):  # not wait_for: 3.11's can swallow a cancellation
                return await job.run(self, cmd, buses)
        finally:
            if job.single:
                self._running.discard(cmd.name)

    # -- the jobs ------------------------------------------------------------------------

    async def write(self, cmd: Write, buses: Buses) -> Outcome:
        """``write``: checked by the point's bus (a refusal is "rejected", nothing sent), then written."""
        point = cmd.point
        source = buses.source_of.get(point)
        if source is None:
            raise RejectedError(f"cmd {cmd.id} (write): point {point!r} is not a point of this Box")
        value: Value = None if cmd.relinquish else cmd.value
        try:
            source.check_write(point, value, cmd.priority)
        except WriteRefusedError as e:
            raise RejectedError(f"cmd {cmd.id} (write): {e}") from e
        await source.write(point, value, cmd.priority)
        what = f"relinquished priority {cmd.priority}" if cmd.relinquish else f"wrote {value!r}"
        log.info("command %s: %s %s", cmd.id, what, point, extra={"point": point})
        return Outcome(reply(cmd.id, "ok", f"{what} to {point}"))

    async def read(self, cmd: Read, buses: Buses) -> Outcome:
        """``read``: each bus reads its points now."""
        names = list(cmd.points)
        unknown = [n for n in names if n not in buses.source_of]
        if unknown:
            shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
            raise RejectedError(f"cmd {cmd.id} (read): not a point of this Box: {shown}")
        by_source: dict[int, tuple[PointSource, list[str]]] = {}
        for n in names:
            src = buses.source_of[n]
            by_source.setdefault(id(src), (src, []))[1].append(n)
        result: dict[str, Value] = {}
        faults: dict[str, int] = {}
        for src, points in by_source.values():
            for s in await src.read_now(points):
                if s.quality == Quality.GOOD:
                    result[s.point] = s.value
                else:
                    result[s.point] = None
                    faults[s.point] = int(s.quality)
        good = len(names) - len(faults)
        return Outcome(reply(cmd.id, "ok", f"{good} of {len(names)} point(s) read", result=result, faults=faults))

    async def logs(self, cmd: Logs, _buses: Buses) -> Outcome:
        """``logs``: the last lines of the daemon's log."""
        lines = self._ring.tail(cmd.lines)
        return Outcome(reply(cmd.id, "ok", f"{len(lines)} line(s)", lines=lines))

    async def restart(self, cmd: Restart, _buses: Buses) -> Outcome:
        """``restart``: the daemon goes once the reply is out."""
        return Outcome(reply(cmd.id, "ok", "restarting"), then="restart")

    async def reboot(self, cmd: Reboot, _buses: Buses) -> Outcome:
        """``reboot``: the configured reboot command (without one, systemd's, under systemd only)."""
        argv = self._reboot
        if not argv:
            if not os.environ.get("INVOCATION_ID"):  # set by systemd for the services it starts
                raise RejectedError(f"cmd {cmd.id} (reboot): this boxd was not started by systemd, so it does not "
                                    "reboot this machine (set BOXD_REBOOT_COMMAND to the command that reboots it)")
            argv = shlex.split(DEFAULT_REBOOT)
        shown = shlex.join(argv)
        try:
            proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                        stdout=asyncio.subprocess.DEVNULL,
                                                        stderr=asyncio.subprocess.PIPE)
        except OSError as e:
            return Outcome(reply(cmd.id, "failed", f"cannot run {shown}: {e.strerror or e}"))
        _, err = await proc.communicate()
        if proc.returncode != 0:
            tail = err.decode("utf-8", "replace").strip()[-300:]
            return Outcome(reply(cmd.id, "failed", f"{shown} exited with {proc.returncode}: {tail}"))
        log.warning("command %s: rebooting (%s)", cmd.id, shown)
        return Outcome(reply(cmd.id, "ok", "rebooting"), then="reboot")

    async def renew(self, cmd: RenewCert, _buses: Buses) -> Outcome:
        """``renew_cert``: the daemon's renewal."""
        assert self.renewal is not None  # its condition
        return Outcome(reply(cmd.id, "ok", await self.renewal()))

    async def update(self, cmd: Update, _buses: Buses) -> Outcome:
        """``update``: accepted (or refused) by the update agent; the work goes on as its job."""
        assert self.updates is not None  # its condition
        return Outcome(reply(cmd.id, "ok", self.updates.start(cmd)))

    async def update_abort(self, cmd: UpdateAbort, _buses: Buses) -> Outcome:
        """``update_abort``: the update agent stops the download, or says it is too late."""
        assert self.updates is not None  # its condition
        return Outcome(reply(cmd.id, "ok", self.updates.abort(cmd)))


# -- conditions ---------------------------------------------------------------------------


def update_not_switching(runner: CommandRunner) -> str:
    """Not while an update is past its point of no return (it restarts the daemon itself)."""
    return runner.updates.past_no_return if runner.updates is not None else ""


def renewal_supported(runner: CommandRunner) -> str:
    """Only in a daemon that renews its certificate."""
    return "" if runner.renewal is not None else "not supported yet by this Box"


def takes_updates(runner: CommandRunner) -> str:
    """Only in a daemon with an update agent."""
    return "" if runner.updates is not None else "this Box does not take updates"


JOBS: Mapping[type[Command], Job[Any]] = {
    Write: Job(CommandRunner.write),
    Read: Job(CommandRunner.read),
    Logs: Job(CommandRunner.logs),
    Restart: Job(CommandRunner.restart, conditions=(update_not_switching,)),
    Reboot: Job(CommandRunner.reboot, conditions=(update_not_switching,), single=True),
    RenewCert: Job(CommandRunner.renew, conditions=(renewal_supported,), single=True,
                   time_limit_s=RENEW_TIME_LIMIT_S),
    Update: Job(CommandRunner.update, conditions=(takes_updates,)),
    UpdateAbort: Job(CommandRunner.update_abort, conditions=(takes_updates,)),
}


def buses_of(sources: Sequence[PointSource]) -> Buses:
    """The `Buses` of the running sources."""
    return Buses({p.name: s for s in sources for p in s.points()})
