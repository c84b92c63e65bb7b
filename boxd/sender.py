"""The sending task (``flush``): seals queued readings into batches and publishes them, QoS 1.

The I/O shell of `boxd.forwarder`: woken when readings or events are queued, when the link
comes up or goes down and when the broker acknowledges; while connected it seals what is
queued (after `batch_delay_ms`, so that fresh readings share a batch, unless a backlog waits),
asks the forwarder what to publish and publishes it; an acknowledgement lets the queue drop
the batch or event. A refusal pauses the sending (`Forwarder.hold_s`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from boxconfig import UplinkSettings
from boxd.clock import Clock
from boxd.forwarder import Forwarder
from boxd.link import Link
from boxd.queue import Queue
from proto.topics import Up


class Sender:
    """Owns the forwarder and the ``flush`` task. The constructor does no I/O."""

    def __init__(self, queue: Queue, link: Link, clock: Clock, settings: Callable[[], UplinkSettings],
                 forwarder: Forwarder | None = None) -> None:
        self.queue = queue
        self.link = link
        self.clock = clock
        self.forwarder = forwarder or Forwarder()
        self._settings = settings
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Something may be sent: readings or an event queued, the link up or down, the time known."""
        self._wake.set()

    def on_connected(self) -> None:
        """A new session: all that was in flight is sent again."""
        self.forwarder.on_connected()
        self._wake.set()

    def on_ack(self, mid: int, ok: bool) -> None:
        """The broker acknowledged (`ok`) or refused message `mid`."""
        acked = self.forwarder.on_puback(mid, ok, time.monotonic())
        if acked is not None and acked.kind == "batch":
            self.queue.ack(acked.ref)
        elif acked is not None:
            self.queue.ack_event(acked.ref)
        self._wake.set()

    async def run(self) -> None:
        """The ``flush`` task."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self.link.connected():
                continue
            settings = self._settings()
            hold = self.forwarder.hold_s(time.monotonic())
            if hold > 0:
                await asyncio.sleep(hold)
            if settings.batch_delay_ms and self.queue.backlog() <= len(self.forwarder.in_flight()):
                # nothing sealed waits to go: let fresh readings share a batch (a backlog drains at once)
                await asyncio.sleep(settings.batch_delay_ms / 1000)
            await self.queue.seal(settings.max_batch_samples, self.clock.timebase())
            self.send(settings.inflight_batches)

    def send(self, window: int) -> None:
        """Publish what the forwarder says, until the link takes no more."""
        for p in self.forwarder.next_publishes(window, self.queue):
            mid = self.link.publish(Up.DATA if p.kind == "batch" else Up.EVENTS, p.payload, qos=1)
            if mid is None:
                return
            self.forwarder.on_sent(p, mid)
