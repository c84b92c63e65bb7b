"""The daemon's wiring: its owners built, connected and run under one supervisor.

Owners (each a class with its own state and tasks; the logic lives in their modules):

  - `fieldbus.FieldBuses`: the running configuration's buses, tasks ``bus:<name>`` (each runs
    its own schedule and emits readings into the durable queue);
  - `sender.Sender`: task ``flush``, the I/O shell of the pure `forwarder.Forwarder` (batches
    published QoS 1 while connected, a window in flight, one slot kept for the freshest batch);
  - `link.Link`: the current MQTT `uplink.Uplink` (replaced when the certificate is renewed);
  - `pointtable.TablePublisher`: the retained point table, sent only when the platform lacks it;
  - `inbox.Inbox`: task ``downlink``: configuration pushes (`configuration.Configurator`:
    applied without a restart, probation, rollback), commands (`commands.CommandRunner`) and
    CRLs, one at a time;
  - `certs.Certificates`: the identity, its renewal and a renewed certificate's trial;
  - `updates.UpdateAgent`: the ``update`` commands and an updated version's trial;
  - `health.Reporter`: tasks ``heartbeat``, ``watchdog`` and ``runtime``;
  - `cellular.Cellular`: task ``modem`` when the configuration has a ``[modem]`` (`modem`: the
    4G modem's bring-up, recovery ladder, signal, data used and the uplink's interface).

Every task is the supervisor's (`boxd.supervisor`): long-lived tasks restarted when they fail,
one-shot jobs (a probation, an update, a trial) awaited with them. A planned exit (a
``restart`` command, an update's switch, an update's trial out of time) is a `Stop` raised by the task
that decides it, handled here: the platform is told "restarting" and `exit_status` says 75.

To add an owner (as the modem's was): build it in `__init__` (no I/O), start its long-lived tasks
with `self.supervisor.start(name, owner.run)` in `_run` before the supervisor runs, and let
`health.Reporter` read what it needs from it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path

from boxd import __version__, reconfig, sdnotify
from boxd.backoff import Reconnect
from boxd.cellular import Cellular
from boxd.certs import Certificates
from boxd.clock import Clock
from boxd.commands import CommandRunner
from boxd.configuration import Configurator
from boxd.fieldbus import FieldBuses
from boxd.health import Reporter
from boxd.inbox import Inbox
from boxd.link import Link
from boxd.logring import LogRing
from boxd.pointtable import TablePublisher
from boxd.queue import Queue
from boxd.sender import Sender, stored_notice_s
from boxd.supervisor import RESTART_STATUS, Stop, Supervisor
from boxd.updates import UpdateAgent
from boxd.uplink import MqttUplink, Uplink, UplinkFactory
from proto.uplink import OtaEvent
from trust.crl import CrlKeeper
from trust.identity import Identity

log = logging.getLogger("boxd")


def _env_float(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if math.isfinite(value) and value >= 0 else default


class Daemon:
    """One Box daemon. The constructor does no I/O; `run()` runs until cancelled or a `Stop`."""

    def __init__(self, state_dir: Path, config_path: Path, *, probation_s: float = reconfig.DEFAULT_PROBATION_S,
                 reboot_command: str = "", uplink: UplinkFactory = MqttUplink, release: str | None = None) -> None:
        self.state_dir = state_dir
        self.version = release or __version__  # on a Box image, the image release's version (`ota.image`)
        self.config_path = config_path
        self.exit_status = 0  # 75 after a `restart` command or an update: systemd or the launcher starts boxd again
        self.log_ring = LogRing()
        self._uplink = uplink
        self.supervisor = sup = Supervisor()
        self.clock = Clock()
        self.queue = Queue(state_dir / "queue.db")
        self.files = reconfig.ConfigFiles(config_path, state_dir)
        self.link = Link(self._make_uplink)
        self.table = TablePublisher(state_dir, self.link, table=lambda: self.buses.table,
                                    table_id=lambda: self.buses.table_id, broker=self._broker_address)
        self.sender = Sender(self.queue, self.link, self.clock,
                             lambda: self.cellular.uplink_settings(self.buses.cfg.uplink))
        self.certs = Certificates(state_dir, self.link)
        self.cellular = Cellular(state_dir, sup, link=self.link, queue=self.queue, clock=self.clock,
                                 forwarder=self.sender.forwarder, ident=lambda: self.certs.ident,
                                 wake=self.sender.wake, beat_now=self._beat_now, resave=self._resave)
        self.buses = FieldBuses(self.queue, self.clock, sup, wake=self.sender.wake,
                                in_flight=self.sender.forwarder.in_flight, publish_table=self._table_changed,
                                urgent=self.sender.urgent, read_at=self.sender.read_at,
                                shape=self.cellular.shape, before_replace=self.cellular.apply)
        self.updates = UpdateAgent(state_dir, self.version, self._put_ota_event, sup,
                                   launched=os.environ.get("BOXD_LAUNCHED") == "1",
                                   backoff_s=_env_float("BOXD_OTA_BACKOFF_S", 2.0), on_image=release is not None)
        self.commands = CommandRunner(state_dir, self.log_ring, reboot_command, renew=self.certs.renew,
                                      updates=self.updates)
        self.config = Configurator(self.files, self.buses, self.link, sup, probation_s, cellular=self.cellular)
        self.crl = CrlKeeper(state_dir, lambda path: self.link.uplink.add_crl(path) if self.link.uplink else None)
        self.inbox = Inbox(link=self.link, clock=self.clock, config=self.config, commands=self.commands,
                           buses=self.buses, crl=self.crl, time_known=self.sender.wake,
                           table_requested=self.table.requested, platform_acks=self.sender.on_platform,
                           stored=self.sender.on_stored)
        self.health = Reporter(state_dir, link=self.link, queue=self.queue, clock=self.clock, buses=self.buses,
                               files=self.files, certs=self.certs, forwarder=self.sender.forwarder,
                               restarts=lambda: sup.stats, probation_s=probation_s,
                               version=self.version, cellular=self.cellular)

    async def run(self) -> None:
        """Load everything, start the tasks, run until cancelled or stopped, stop cleanly.

        Raises:
            IdentityError, ConfigError, QueueError: the Box cannot start; the message says why.
        """
        logging.getLogger().addHandler(self.log_ring)
        try:
            await self._run()
        finally:
            logging.getLogger().removeHandler(self.log_ring)

    async def _run(self) -> None:
        ident = self.certs.load()
        sdnotify.set_box_id(ident.box_id)
        self.commands.load()
        cfg, self.files.running = reconfig.load_at_start(self.config_path, self.state_dir)
        self.queue.max_samples = cfg.queue.max_samples
        self.queue.open()
        sup = self.supervisor
        self.updates.at_start(self.health.missing)
        await self.cellular.apply(cfg)  # before the buses: their pace is the modem's budget's
        self.buses.use(cfg)
        for name, task in (("flush", self.sender.run), ("heartbeat", self.health.heartbeat),
                           ("watchdog", self.health.watchdog), ("runtime", self.health.runtime),
                           ("downlink", self.inbox.run)):
            sup.start(name, task)
        await self.link.start(ident)
        if self.certs.on_trial:
            sup.spawn("certificate trial", self.certs.trial_at_start)
        if not self.clock.trusted():
            log.warning("the clock reads before this software was built: readings are held until the "
                        "platform's time is known")
        log.info(
            "boxd started: Box %s, %d bus(es), %d point(s), queue epoch %x, %d sample(s) queued",
            ident.box_id, len(self.buses.sources), len(self.buses.points.source_of), self.queue.epoch,
            self.queue.samples,
        )
        sdnotify.notify("READY=1")
        reason = "stopped"
        try:
            await sup.run()
        except Stop as e:
            log.warning("stopping: %s", e)
            self.exit_status, reason = e.status, e.reason
        finally:
            sdnotify.notify("STOPPING=1")
            await self.link.stop("restarting" if self.exit_status == RESTART_STATUS or self.inbox.rebooting
                                 else reason)
            self.queue.close()
            log.info("boxd stopped")

    def _make_uplink(self, ident: Identity) -> Uplink:
        settings = self.buses.cfg.uplink
        return self._uplink(
            ident,
            on_connected=self._connected,
            on_disconnected=self.sender.wake,
            on_ack=self._acked,
            on_message=self.inbox.receive,
            keepalive_s=settings.keepalive_s,
            reconnect=Reconnect(1.0, float(settings.reconnect_spread_s), float(settings.reconnect_max_s)),
            relax_time_check=lambda: not self.clock.trusted(),
            version=self.version,
            acks_s=self._acks_s,
        )

    def _acks_s(self) -> int:
        """How often the platform may send its stored notice (asked in the online status; the uplink's
        thread asks, at each connection)."""
        return stored_notice_s(self.cellular.uplink_settings(self.buses.cfg.uplink))

    def _connected(self) -> None:
        self.link.on_connected()
        self.sender.on_connected()
        self.table.connected()
        self.health.beat_now()

    def _broker_address(self) -> str:
        ident = self.certs.ident
        return f"{ident.box_id}@{ident.broker_host}:{ident.broker_port}" if ident is not None else ""

    def _acked(self, mid: int, ok: bool) -> None:
        self.link.on_ack(mid)
        self.table.acked(mid, ok)
        self.cellular.on_ack()
        self.sender.on_ack(mid, ok)

    async def _resave(self) -> None:
        await self.config.reapply()

    def _beat_now(self) -> None:
        self.health.beat_now()

    def _table_changed(self, _table: bytes) -> None:
        self.table.changed()
        self.health.beat_now()

    def _put_ota_event(self, event: OtaEvent) -> None:
        # waited for (one transaction on the loop, a few per update): the agent forgets its own
        # record of an outcome right after, and that record must not go before the event is on disk
        self.queue.put_event_now(dataclasses.replace(event, ts_ms=self.clock.now_ms()).encode())
        self.sender.wake()
