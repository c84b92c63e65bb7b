"""What the platform sends the Box (``boxes/<id>/down/<leaf>``, untrusted), routed to its owner.

`Inbox.receive` runs on the event loop for each message the uplink hands over: the platform's
time goes to the clock at once (and whether the platform acknowledges stored batches, to the
sender), its "stored up to" notice to the sender (`boxd.sender.Sender.on_stored`), and a request for
the point table to `boxd.pointtable`;
configuration pushes, commands and revocation lists wait in a bounded queue (beyond
`DOWNLINK_BACKLOG`, dropped and logged) for the ``downlink`` task, which
handles them one at a time: a push to `boxd.configuration`, a command to `boxd.commands`, a CRL
to `trust.crl`. A message never takes the task down: what fails is logged and answered.

After a ``restart`` command's reply is acknowledged (or 5 s), the task raises `Stop` (75): the
supervisor ends the daemon, and systemd starts it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from boxd.clock import Clock
from boxd.commands import CommandRunner
from boxd.configuration import Configurator, peek_version
from boxd.fieldbus import FieldBuses
from boxd.link import Link
from boxd.supervisor import RESTART_STATUS, Stop
from proto import names
from proto.downlink import StoredNotice, decode_command, decode_stored, decode_time, peek
from proto.errors import WireError
from proto.replies import config_reply, reply
from proto.topics import Down
from trust.crl import CrlKeeper

log = logging.getLogger("boxd")

DOWNLINK_BACKLOG = 64  # downlink messages waiting to be handled; beyond, they are dropped (logged)


def peek_id(payload: bytes) -> str:
    """The id a command says it has, if it is a valid id ("" otherwise)."""
    v = peek(payload, "id")
    return v if names.COMMAND_ID.fullmatch(v) else ""


class Inbox:
    """Owns the downlink queue and the ``downlink`` task. The constructor does no I/O."""

    def __init__(self, *, link: Link, clock: Clock, config: Configurator, commands: CommandRunner,
                 buses: FieldBuses, crl: CrlKeeper, time_known: Callable[[], None],
                 table_requested: Callable[[bytes], None] = lambda _payload: None,
                 platform_acks: Callable[[bool], None] = lambda _stores: None,
                 stored: Callable[[StoredNotice], None] = lambda _notice: None) -> None:
        self.link, self.clock, self.config, self.commands, self.buses, self.crl = (
            link, clock, config, commands, buses, crl)
        self._time_known = time_known
        self._table_requested = table_requested
        self._platform_acks, self._stored = platform_acks, stored
        self._down: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(DOWNLINK_BACKLOG)
        self.rebooting = False  # a reboot command succeeded: the stop that follows is planned

    def receive(self, leaf: str, payload: bytes) -> None:
        """A message from the platform on ``boxes/<id>/down/<leaf>`` (on the loop; untrusted)."""
        if leaf == Down.TIME:
            try:
                notice = decode_time(payload)
            except WireError as e:
                log.warning("ignoring a malformed time message: %s", e)
                return
            was = self.clock.trusted()
            self.clock.platform_time(notice.ts_ms)
            self._platform_acks(notice.acks)
            if not was:
                log.info("the platform's time is known: held readings are re-based and sent")
                self._time_known()
            return
        if leaf == Down.STORED:
            try:
                self._stored(decode_stored(payload))
            except WireError as e:
                log.warning("ignoring a malformed stored notice: %s", e)
            return
        if leaf == Down.TABLE:
            self._table_requested(payload)
            return
        if leaf == Down.CRL:  # the platform's revocation list, checked and kept by the downlink task
            with contextlib.suppress(asyncio.QueueFull):
                self._down.put_nowait((leaf, payload))
            return
        if leaf not in (Down.CONFIG, Down.CMD):
            log.info("ignoring %d bytes on down/%s (not handled by this version)", len(payload), leaf)
            return
        try:
            self._down.put_nowait((leaf, payload))
        except asyncio.QueueFull:
            log.warning("ignoring a message on down/%s: %d downlink messages wait already", leaf, DOWNLINK_BACKLOG)

    async def run(self) -> None:
        """The ``downlink`` task: one message at a time; a message never takes it down."""
        while True:
            leaf, payload = await self._down.get()
            try:
                await self.handle(leaf, payload)
            except (asyncio.CancelledError, Stop):
                raise
            except Exception as e:  # the task's top: untrusted input is logged, answered if it can be, and it goes on
                log.exception("a message on down/%s could not be handled", leaf)
                why = f"the Box could not handle it: {type(e).__name__}: {e}"
                if leaf == Down.CMD and (cmd_id := peek_id(payload)):
                    self.link.reply(reply(cmd_id, "failed", why))
                elif leaf == Down.CONFIG and (version := peek_version(payload)):
                    self.link.reply(config_reply(version, "rejected", [why]))

    async def handle(self, leaf: str, payload: bytes) -> None:
        """Handle one queued message."""
        if leaf == Down.CONFIG:
            await self.config.on_push(payload)
        elif leaf == Down.CRL:
            await self.crl.take(payload)
        else:
            await self.on_command(payload)

    async def on_command(self, payload: bytes) -> None:
        """Decode and run a command; answer it.

        Raises:
            Stop: a ``restart`` command ran (its reply is out).
        """
        try:
            cmd = decode_command(payload)
        except WireError as e:
            cmd_id = peek_id(payload)
            log.warning("command %s rejected: %s", cmd_id or "(no id)", e)
            if cmd_id:
                self.link.reply(reply(cmd_id, "rejected", str(e)))
            return
        outcome = await self.commands.run(cmd, self.buses.points)
        self.rebooting = self.rebooting or outcome.then == "reboot"
        mid = self.link.reply(outcome.reply)
        if outcome.then == "restart":
            if mid is not None:
                await self.link.wait_acked(mid, 5.0)
            log.warning("restarting on the platform's command %s", cmd.id)
            raise Stop(RESTART_STATUS, "restarting", f"the platform's command {cmd.id}")
