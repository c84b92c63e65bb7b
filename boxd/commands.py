"""Commands from the platform, run against the running configuration and buses.

`CommandRunner.run` takes a decoded command (`proto.commands`, one dataclass each) and returns the framed reply for
``up/replies`` and what the daemon must do once the reply is out (``restart``), so that
the platform hears "ok" before the daemon goes. In order:

1. a repeated id (`downlink.SeenIds`, persisted in ``<state>/commands.seen.json`` before the
   command runs: at most once, across restarts) -> "duplicate", nothing runs;
2. an expired command -> "expired", nothing runs;
3. the command: ``write`` (checked by `downlink.check_write` against the configuration's
   points, then the bus's `write`, which checks again), ``read`` (`read_now` on each bus),
   ``logs`` (the in-memory tail, `boxd.logring`), ``restart`` (the daemon exits non-zero
   after the reply; systemd starts it again), ``reboot`` (the configured reboot command; without
   one, ``systemctl reboot`` only in a boxd that systemd started: never the machine of someone
   trying boxd by hand or in the demo),
   ``renew_cert`` (the daemon's renewal: new key and certificate, tried on the broker, kept
   only if it works; "rejected" when the daemon gives none), ``update`` and ``update_abort``
   (handed to the daemon's `Updates`, `boxd.updates.UpdateAgent`: accepted at once, the outcome
   follows as ``ota`` events).

A refusal is "rejected" with the reason; a failure of the bus or of the command "failed"
with the reason. Nothing raised by a command escapes `run` (it is logged and replied as
"failed"), and each command has a time limit.
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
from typing import Protocol

from boxd import downlink
from boxd.errors import CommandFailedError
from boxd.logring import LogRing
from boxkit.files import write_atomic
from drivers import PointSource, Quality, Value
from drivers.errors import DriverError
from proto.commands import Command, Logs, Read, Reboot, RenewCert, Restart, Update, UpdateAbort, Write
from proto.errors import RejectedError
from proto.replies import decode_reply, reply

log = logging.getLogger("boxd.commands")

SEEN_FILE = "commands.seen.json"
DEFAULT_REBOOT = "systemctl reboot"
TIME_LIMIT_S = 60.0
RENEW_TIME_LIMIT_S = 180.0  # HTTPS to the enrollment endpoint, then a trial connection, maybe a way back

Renew = Callable[[], Awaitable[str]]


class Updates(Protocol):
    """What runs software updates (`boxd.updates.UpdateAgent`); each returns the reply's detail
    or raises `RejectedError` to refuse."""

    def start(self, cmd: Update) -> str: ...

    def abort(self, cmd: UpdateAbort) -> str: ...


@dataclass(frozen=True, slots=True)
class Buses:
    """What commands run against: the running configuration's points and the bus of each."""

    specs: Mapping[str, downlink.PointSpec]
    source_of: Mapping[str, PointSource]


@dataclass(frozen=True, slots=True)
class Outcome:
    """A command's reply, and what the daemon does after sending it ("", "restart", or "reboot": the
    machine is going down, so the stop that follows is planned)."""

    reply: bytes
    then: str = ""


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
        self._renew = renew
        self.updates = updates
        self.seen = downlink.SeenIds()

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
        limit = max(self._time_limit, RENEW_TIME_LIMIT_S) if isinstance(cmd, RenewCert) else self._time_limit
        try:
            async with asyncio.timeout(limit):  # not wait_for: 3.11's can swallow a cancellation
                return await self._run(cmd, buses)
        except RejectedError as e:
            log.info("command %s (%s) rejected: %s", cmd.id, cmd.name, e)
            return Outcome(reply(cmd.id, "rejected", str(e)))
        except TimeoutError:
            log.warning("command %s (%s): no result within %.0f s", cmd.id, cmd.name, limit)
            return Outcome(reply(cmd.id, "failed", f"no result within {limit:.0f} s"))
        except (DriverError, CommandFailedError) as e:
            log.warning("command %s (%s) failed: %s", cmd.id, cmd.name, e)
            return Outcome(reply(cmd.id, "failed", str(e) or type(e).__name__))
        except Exception as e:  # untrusted input must never take the daemon down
            log.exception("command %s (%s) failed", cmd.id, cmd.name)
            return Outcome(reply(cmd.id, "failed", f"{type(e).__name__}: {e}"))

    async def _run(self, cmd: Command, buses: Buses) -> Outcome:
        match cmd:
            case Write():
                return Outcome(await self._write(cmd, buses))
            case Read():
                return Outcome(await self._read(cmd, buses))
            case Logs():
                lines = self._ring.tail(cmd.lines)
                return Outcome(reply(cmd.id, "ok", f"{len(lines)} line(s)", lines=lines))
            case Restart():
                return Outcome(reply(cmd.id, "ok", "restarting"), then="restart")
            case Reboot():
                answer = await self._reboot_now(cmd)
                return Outcome(answer, then="reboot" if decode_reply(answer).status == "ok" else "")
            case RenewCert():
                if self._renew is None:
                    raise RejectedError(f"cmd {cmd.id} (renew_cert): not supported yet by this Box")
                return Outcome(reply(cmd.id, "ok", await self._renew()))
            case Update() | UpdateAbort():
                if self.updates is None:
                    raise RejectedError(f"cmd {cmd.id} ({cmd.name}): this Box does not take updates")
                detail = self.updates.start(cmd) if isinstance(cmd, Update) else self.updates.abort(cmd)
                return Outcome(reply(cmd.id, "ok", detail))

    async def _write(self, cmd: Write, buses: Buses) -> bytes:
        downlink.check_write(cmd, buses.specs)
        point = cmd.point
        source = buses.source_of.get(point)
        if source is None:  # a point of the configuration always has its bus: said rather than assumed
            raise RejectedError(f"cmd {cmd.id} (write): point {point!r} has no running bus")
        value: Value = None if cmd.relinquish else cmd.value
        await source.write(point, value, cmd.priority)
        what = f"relinquished priority {cmd.priority}" if cmd.relinquish else f"wrote {value!r}"
        log.info("command %s: %s %s", cmd.id, what, point, extra={"point": point})
        return reply(cmd.id, "ok", f"{what} to {point}")

    async def _read(self, cmd: Read, buses: Buses) -> bytes:
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
        return reply(cmd.id, "ok", f"{good} of {len(names)} point(s) read", result=result, faults=faults)

    async def _reboot_now(self, cmd: Reboot) -> bytes:
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
            return reply(cmd.id, "failed", f"cannot run {shown}: {e.strerror or e}")
        _, err = await proc.communicate()
        if proc.returncode != 0:
            tail = err.decode("utf-8", "replace").strip()[-300:]
            return reply(cmd.id, "failed", f"{shown} exited with {proc.returncode}: {tail}")
        log.warning("command %s: rebooting (%s)", cmd.id, shown)
        return reply(cmd.id, "ok", "rebooting")


def buses_of(specs: Mapping[str, downlink.PointSpec], sources: Sequence[PointSource]) -> Buses:
    """The `Buses` of a configuration's point specs and its running sources."""
    source_of = {p.name: s for s in sources for p in s.points()}
    return Buses(specs, source_of)
