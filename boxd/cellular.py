"""The 4G modem's place in the daemon: the configuration's ``[modem]`` run as task ``modem``, or none.

`Cellular` owns the `boxd.modem.ModemManagerTask` of the running configuration (there is none
without a ``[modem]`` section) and is what the other owners ask about the modem:

- `FieldBuses` builds its buses from `shape(cfg)` (while the data budget saves data, points that
  are not critical are polled less often) and calls `apply(cfg)` before it replaces them (a modem
  added, removed or reconfigured by a push);
- the `Sender` waits `uplink_settings(...)`'s ``batch_delay_ms`` (longer while saving data);
- a configuration's probation asks `refused_apn()` and `settled()` (a pushed APN the network
  refuses is rolled back with the rest of the configuration) and, after such a rollback, waits
  in `link_back()` until the broker acknowledges something again before it answers;
- `health.Reporter` reads `health()` and `status()`.

The modem's evidence of a working uplink is the count of the broker's acknowledgements (`on_ack`)
with the publishes still owed one. Its events go to the durable queue through the writer thread,
not waited for (sent once on disk; a failure is logged). The constructor does no I/O.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import boxconfig as config
from boxconfig import UplinkSettings
from boxd.clock import Clock
from boxd.forwarder import Forwarder
from boxd.link import Link
from boxd.queue import Queue
from boxd.supervisor import Supervisor
from proto.modem import ModemEvent, ModemReport, WanEvent
from trust.identity import Identity

if TYPE_CHECKING:
    from boxd.modem import ModemManagerTask

log = logging.getLogger("boxd.modem")

LINK_BACK_S = 300.0  # how long a rollback's answer waits for the uplink to carry data again


class Cellular:
    """The running configuration's modem (or none). See the module's docstring."""

    def __init__(self, state_dir: Path, supervisor: Supervisor, *, link: Link, queue: Queue, clock: Clock,
                 forwarder: Forwarder, ident: Callable[[], Identity | None], wake: Callable[[], None],
                 beat_now: Callable[[], None], resave: Callable[[], Awaitable[None]]) -> None:
        self.state_dir = state_dir
        self.task: ModemManagerTask | None = None
        self.acks = 0  # the broker's acknowledgements since start
        self._resave = resave  # runs the configuration again (at the pace of saving data, or not)
        self._supervisor = supervisor
        self._link, self._queue, self._clock, self._forwarder = link, queue, clock, forwarder
        self._ident, self._wake, self._beat_now = ident, wake, beat_now

    # -- what the other owners ask ------------------------------------------------------------

    def on_ack(self) -> None:
        self.acks += 1

    def shape(self, cfg: config.BoxConfig) -> config.BoxConfig:
        return self.task.shape(cfg) if self.task else cfg

    def uplink_settings(self, settings: UplinkSettings) -> UplinkSettings:
        if self.task is None:
            return settings
        delay = self.task.batch_delay_ms(settings.batch_delay_ms)
        return settings if delay == settings.batch_delay_ms else dataclasses.replace(settings, batch_delay_ms=delay)

    def refused_apn(self) -> str:
        """Why the network refused the configured APN, in words ("" when it did not)."""
        return self.task.fault_text if self.task is not None and self.task.fault == "apn_rejected" else ""

    def settled(self) -> bool:
        return self.task is None or self.task.settled()

    def health(self) -> ModemReport | None:
        return self.task.health() if self.task else None

    def status(self) -> dict[str, object] | None:
        return self.task.status() if self.task else None

    async def link_back(self) -> None:
        """Return once the broker acknowledged something new while connected (at most `LINK_BACK_S`)."""
        acks = self.acks
        try:
            async with asyncio.timeout(LINK_BACK_S):
                while self.acks == acks or not self._link.connected():  # noqa: ASYNC110 - set from the uplink thread
                    await asyncio.sleep(0.5)
        except TimeoutError:
            pass

    # -- the task -------------------------------------------------------------------------------

    async def apply(self, cfg: config.BoxConfig) -> None:
        """Run `cfg`'s modem from now on: reconfigured, started, or stopped."""
        if cfg.modem and self.task:
            self.task.reconfigure(cfg.modem, cfg.wan)
            return
        if self.task:
            await self._supervisor.stop(["modem"])
            self.task = None
        if cfg.modem:
            self.task = self._make(cfg)
            self._supervisor.start("modem", self.task.run)

    def _make(self, cfg: config.BoxConfig) -> ModemManagerTask:
        from boxd.modem import ModemManagerTask  # only with a [modem]: its stack stays out of the others' memory

        assert cfg.modem is not None
        ident = self._ident()
        assert ident is not None, "the identity is loaded before the configuration"
        platform = (ident.broker_host, ident.broker_port)
        return ModemManagerTask(cfg.modem, cfg.wan, self.state_dir, platform=lambda: platform,
                                uplink=lambda: (self._link.connected(), self._forwarder.messages_in_flight(),
                                                self.acks),
                                put_event=self._put_event, wake_heartbeat=self._beat_now, on_save=self._save)

    def _put_event(self, event: ModemEvent | WanEvent) -> None:
        def done(fut: asyncio.Future[None]) -> None:
            if not fut.cancelled() and fut.exception() is not None:
                log.error("modem: cannot queue its %s event: %s", event.to_doc().get("kind"), fut.exception())
            self._wake()

        self._queue.put_event(dataclasses.replace(event, ts_ms=self._clock.now_ms()).encode()).add_done_callback(done)

    async def _save(self, saving: bool) -> None:
        """The data budget asks to save data (or no longer): the buses poll at the new pace."""
        await self._resave()
