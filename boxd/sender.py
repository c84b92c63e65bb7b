"""The sending task (``flush``): seals queued readings into batches and publishes them, QoS 1.

The I/O shell of `boxd.forwarder`: woken when readings or events are queued, when the link
comes up or goes down and when the broker acknowledges. While connected, every wake-up
publishes what the forwarder says at once (events, and batches already sealed); readings are
sealed `batch_delay_ms` after the oldest of them was read (`read_at`, told by the buses; the
delay is not restarted by the readings during it), so that the readings of that time share one
batch and none waits on the Box longer than the delay (its poll and its write to the queue are
part of the wait, not added to it; and the sealing starts earlier by what sealing and publishing
a batch took lately, `Lead`, at most a tenth of the delay, so that the delay is what a reading
waits until the broker has it), unless:

- an urgent reading was queued (`urgent`, from `boxd.fieldbus`): the delay ends now, what is
  queued is sealed (ordinary readings with it: one batch, not two) and the newest batch is
  marked urgent for the forwarder, which sends it before any other, past a full window;
- a backlog of sealed batches waits: readings are sealed at once (they would wait anyway).

Command and configuration replies do not pass here (`boxd.link.Link.reply` publishes them at
once); the forwarder keeps room for them in the MQTT client's window. The broker's acknowledgement
lets the queue drop an event, and a batch only when the platform does not acknowledge stored
batches (an older platform); otherwise the platform's "stored up to" notice (`on_stored`) drops
every batch it covers, and a batch the broker has but no notice covered within
`Forwarder.resend_s` is sent again (`boxd.forwarder`). A refusal pauses the sending
(`Forwarder.hold_s`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from boxconfig import UplinkSettings
from boxd.clock import Clock
from boxd.forwarder import Forwarder, resend_after
from boxd.link import Link
from boxd.queue import Queue
from proto.downlink import StoredNotice
from proto.topics import Up

log = logging.getLogger("boxd")

LEAD_SHARE = 0.1  # the sealing starts at most this share of the batch delay early
SEALS_MEASURED = 64  # batches whose sealing time is kept until acknowledged, at most


NOTICE_PER_DELAY, NOTICE_MIN_S, NOTICE_MAX_S = 12, 1, 1800  # the stored notices' interval, from the batch delay


def stored_notice_s(settings: UplinkSettings) -> int:
    """At most one stored notice in this many seconds (the Box asks it of the platform in its status):
    twelve batch delays, from 1 s to 30 minutes; 60 s at the default delay, 30 minutes at a metered
    SIM's (docs/performance.md, "What the stored notice costs")."""
    return int(min(NOTICE_MAX_S, max(NOTICE_MIN_S, NOTICE_PER_DELAY * settings.batch_delay_ms / 1000)))


class Lead:
    """How long sealing and publishing a batch takes, until the broker acknowledges it: the sealing
    starts that much before the batch delay ends (pure: the caller gives the times). As TCP times
    its retransmissions (RFC 6298): the smoothed time plus four times its smoothed deviation, so
    that a batch slower than most still arrives within its delay."""

    def __init__(self) -> None:
        self.s: float | None = None  # smoothed time, s
        self.dev = 0.0  # smoothed absolute deviation from it, s

    def note(self, took_s: float) -> None:
        """A batch sealed on time was acknowledged `took_s` after its sealing started."""
        if self.s is None:
            self.s, self.dev = took_s, took_s / 2
            return
        self.dev = 0.75 * self.dev + 0.25 * abs(self.s - took_s)
        self.s = 0.875 * self.s + 0.125 * took_s

    def ms(self, delay_ms: int) -> float:
        """How early to seal, for this batch delay: at most `LEAD_SHARE` of it."""
        return min(LEAD_SHARE * delay_ms, 1000 * (self.s + 4 * self.dev)) if self.s is not None else 0.0


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
        self._urgent = False  # an urgent reading is queued: seal and send now
        self._seal_at: float | None = None  # loop time when the readings queued are sealed
        self._oldest_ms: int | None = None  # when the oldest reading not yet sealed was read (system clock)
        self.lead = Lead()
        self._sealed: dict[int, float] = {}  # seq -> monotonic time its sealing started (batches sealed on time)

    def wake(self) -> None:
        """Something may be sent: readings or an event queued, the link up or down, the time known."""
        self._wake.set()

    def read_at(self, ts_ms: int) -> None:
        """Readings read at `ts_ms` (the system clock's ms, as the buses stamp them) are being queued."""
        if self._oldest_ms is None or ts_ms < self._oldest_ms:
            self._oldest_ms = ts_ms

    def urgent(self) -> None:
        """An urgent reading is queued: it is sealed and sent now, not after the batch delay."""
        self._urgent = True
        self._wake.set()

    def on_connected(self) -> None:
        """A new session: all that was in flight is sent again."""
        self.forwarder.on_connected()
        self._wake.set()

    def on_ack(self, mid: int, ok: bool) -> None:
        """The broker acknowledged (`ok`) or refused message `mid`."""
        acked = self.forwarder.on_puback(mid, ok, time.monotonic())
        if acked is not None and acked.kind in ("batch", "held"):
            if acked.kind == "batch":
                self.queue.ack(acked.ref)
            started = self._sealed.pop(acked.ref, None)
            if started is not None:
                self.lead.note(time.monotonic() - started)
        elif acked is not None:
            self.queue.ack_event(acked.ref)
        self._wake.set()

    def on_platform(self, stores: bool) -> None:
        """The platform's time notice said whether it acknowledges stored batches."""
        if self.forwarder.platform_stores is not stores:
            log.info("the platform %s", "acknowledges stored batches: each is kept until stored" if stores
                     else "does not acknowledge stored batches: each is dropped once the broker has it")
        for seq in self.forwarder.platform_acks(stores):
            self.queue.ack(seq)
        self._wake.set()

    def on_stored(self, notice: StoredNotice) -> None:
        """The platform stored every batch up to `notice.seq` of queue epoch `notice.epoch`."""
        if notice.epoch != self.queue.epoch:
            log.info("ignoring a stored notice of queue epoch %x (this queue's is %x)", notice.epoch,
                     self.queue.epoch)
            return
        self.forwarder.platform_stores = True
        self.forwarder.on_stored(notice.seq, notice.ahead)
        self.queue.ack_through(notice.seq, notice.ahead)
        self._wake.set()

    async def run(self) -> None:
        """The ``flush`` task."""
        loop = asyncio.get_running_loop()
        while True:
            await self._woken()
            late = self.forwarder.expire(time.monotonic())  # held batches whose stored notice is overdue
            if late:
                log.warning("%d batch(es) the broker had were not stored within %.0f s: sent again", late,
                            self.forwarder.resend_s)
            if not self.link.connected():
                self._seal_at = None  # sealed once connected again
                self._sealed.clear()  # what is in flight is sent again: its time says nothing
                continue
            hold = self.forwarder.hold_s(time.monotonic())
            if hold > 0:
                await asyncio.sleep(hold)
            settings = self._settings()
            self.forwarder.resend_s = resend_after(stored_notice_s(settings))
            if self._seal_now(loop.time(), settings.batch_delay_ms):
                urgent, self._urgent, self._seal_at, self._oldest_ms = self._urgent, False, None, None
                last, started, on_time = self.queue.last_seq(), time.monotonic(), not self.queue.backlog()
                await self.queue.seal(settings.max_batch_samples, self.clock.timebase(), settings.time_slack_ms)
                if on_time:  # not behind a backlog: its time until acknowledged is the sealing's and publishing's
                    if len(self._sealed) >= SEALS_MEASURED:  # some were never acknowledged (evicted): start again
                        self._sealed.clear()
                    self._sealed.update(dict.fromkeys(range(last + 1, self.queue.last_seq() + 1), started))
                if urgent and self.queue.last_seq() > last:
                    self.forwarder.mark_urgent(self.queue.last_seq())  # the urgent readings are the newest
            elif self._seal_at is None and self.queue.unsealed():  # fresh readings share a batch until then
                self._seal_at = loop.time() + self._wait_ms(settings.batch_delay_ms) / 1000
            self.send(settings.inflight_batches)

    async def _woken(self) -> None:
        """Until something happens, or the batch delay running ends."""
        due = [t for t in (self._seal_at, self.forwarder.next_expiry()) if t is not None]  # loop time is monotonic
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(min(due) if due else None):
                await self._wake.wait()
        self._wake.clear()

    def _wait_ms(self, delay_ms: int) -> float:
        """How much of the batch delay, less the lead, is left for the oldest reading queued (all of it
        when its time is unknown; a clock stepped since it was read cannot make it more than that or
        less than 0)."""
        wait = delay_ms - self.lead.ms(delay_ms)
        if self._oldest_ms is None:
            return wait
        return min(wait, max(0.0, wait - (time.time() * 1000 - self._oldest_ms)))

    def _seal_now(self, now: float, delay_ms: int) -> bool:
        """Whether to seal the queued readings now rather than let more join them."""
        if self._urgent or not delay_ms or (self._seal_at is not None and now >= self._seal_at):
            return True
        # sealed batches wait already (a backlog): fresh readings would wait anyway, a delay only adds to it
        return self.queue.backlog() > len(self.forwarder.in_flight()) + len(self.forwarder.held())

    def send(self, window: int) -> None:
        """Publish what the forwarder says, until the link takes no more."""
        for p in self.forwarder.next_publishes(window, self.queue):
            mid = self.link.publish(Up.DATA if p.kind == "batch" else Up.EVENTS, p.payload, qos=1)
            if mid is None:
                return
            self.forwarder.on_sent(p, mid)
