"""The forwarder: which queued batches and events go to the broker next (a pure state machine).

In the shape of h11: it does no I/O and keeps no clock. The sending task (`boxd.sender`) tells it
what happened and asks what to do:

- `on_connected()`: a new MQTT session; whatever was in flight is forgotten, so it is sent
  again (the durable queue is the truth; the broker may never have had it);
- `mark_urgent(seq)`: batch `seq` carries an urgent reading (sealed at once for it);
- `next_publishes(window, pending)`: the messages to publish now, given what the queue holds
  (`Pending`, read-only: the daemon's `Queue`, or literals in a test). Events first (up to
  `EVENTS_IN_FLIGHT`); then the urgent batches, which may take one slot beyond `window` (an
  alarm overtakes a full window of backlog); then batches, oldest first, up to `window` in
  flight, with one slot kept for the freshest batch while a backlog drains (fresh data must
  not wait behind an outage's worth of old data). Never more than `MAX_IN_FLIGHT` messages in
  all: beyond the MQTT client's own limit it would queue them in order, where an urgent batch
  or a command reply published later could not overtake them;
- `on_sent(publish, mid)`: the uplink gave it MQTT message id `mid`;
- `on_puback(mid, ok, now)`: the broker acknowledged (`ok`) or refused `mid`; returns what the
  queue may now drop (`Acked`), or None. A refusal keeps it queued and holds all sending for a
  pause that grows while refusals go on (`hold_s(now)`), not a resend in a loop.

Storage as the acknowledgement (docs/architecture.md, "Storage is the acknowledgement"): the broker's
PUBACK frees a batch only when the platform said it does not acknowledge stored batches
(`platform_acks(False)`, its time notice without "acks": an older platform). Otherwise a batch the
broker has is *held*: kept in the queue, not sent again, until the platform's "stored up to"
notice covers it (`on_stored`), or sent again once `resend_s` passed without it (`expire`): a
receiver killed with it, or a broker that crashed before persisting it, lost it. At most
`MAX_HELD` batches are held: beyond, no batch is sent until a notice comes (the window of a drain
is then the notices' pace, never an unbounded memory).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from boxd.backoff import Backoff

REFUSED_BASE_S, REFUSED_MAX_S = 1.0, 60.0  # pause before resending what the broker refused
EVENTS_IN_FLIGHT = 8  # events sent and not acknowledged yet, at most
URGENT_SLOTS = 1  # batches in flight beyond the window, for urgent batches only
# boxd.uplink lets paho keep 32 QoS 1 messages in flight and queues the rest in order: the
# forwarder keeps under it, leaving room for the messages that go around it (command and
# configuration replies, status, the point table, health), so they never queue behind a backlog
MQTT_IN_FLIGHT, RESERVED = 32, 4
MAX_IN_FLIGHT = MQTT_IN_FLIGHT - RESERVED
MAX_HELD = 4096  # batches the broker has, waiting for the platform's stored notice, at most
RESEND_S = 60.0  # a held batch not covered by a stored notice after this long is sent again (`resend_after`)

Kind = Literal["batch", "event"]


class Pending(Protocol):
    """What the queue holds, as the forwarder reads it (`boxd.queue.Queue` is one)."""

    def backlog(self) -> int:
        """Sealed batches waiting for an acknowledgement."""
        ...

    def newest_batch(self) -> tuple[int, bytes] | None:
        """The freshest sealed batch."""
        ...

    def batches(self, after_seq: int, limit: int, skip: Collection[int] = ()) -> list[tuple[int, bytes]]:
        """Up to `limit` sealed batches after `after_seq`, oldest first, but those in `skip`."""
        ...

    def events(self, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` queued events, oldest first."""
        ...


@dataclass(frozen=True, slots=True)
class Publish:
    """A message to publish (QoS 1): a batch (`ref` its seq) or an event (`ref` its id)."""

    kind: Kind
    ref: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Acked:
    """The broker has it: the queue may drop batch or event `ref` ("held": the batch stays queued
    until the platform says it is stored)."""

    kind: Literal["batch", "event", "held"]
    ref: int


def resend_after(acks_s: float) -> float:
    """How long a held batch waits for a stored notice before it is sent again: the notices' interval
    three times over (one lost, one late), and never less than 10 s."""
    return max(10.0, 3 * acks_s)


class Forwarder:
    """The window of messages in flight, and the pause after a refusal."""

    def __init__(self, refused: Backoff | None = None) -> None:
        self._batches: dict[int, int] = {}  # MQTT message id -> batch seq
        self._events: dict[int, int] = {}  # MQTT message id -> event id
        self._refused = refused or Backoff(REFUSED_BASE_S, REFUSED_MAX_S)
        self._hold_until = 0.0
        self._urgent: set[int] = set()  # seqs of the urgent batches not acknowledged yet
        self.acked_batches = 0  # since start
        self.platform_stores: bool | None = None  # the platform acknowledges stored batches (None: not told yet)
        self._held: dict[int, float] = {}  # batch seq -> when the broker had it (waiting for the stored notice)
        self._stored = 0  # the highest seq the platform said is stored (this queue epoch)
        self.resend_s = RESEND_S
        self.resent = 0  # held batches sent again for want of a stored notice, since start

    # -- storage as the acknowledgement ---------------------------------------------------

    def held(self) -> list[int]:
        """The seqs of the batches the broker has, waiting for the platform's stored notice."""
        return list(self._held)

    def platform_acks(self, stores: bool) -> list[int]:
        """The platform said (its time notice) whether it acknowledges stored batches; the batches
        the queue may drop now (all held ones, when it does not)."""
        self.platform_stores = stores
        if stores:
            return []
        freed, self._held = list(self._held), {}
        return freed

    def on_stored(self, seq: int, ahead: Collection[int] = ()) -> None:
        """The platform stored every batch up to `seq`, and those of `ahead` (of this queue's epoch;
        the caller checked)."""
        self._stored = max(self._stored, seq)
        self._held = {s: t for s, t in self._held.items() if s > seq and s not in ahead}

    def expire(self, now: float) -> int:
        """Held batches whose stored notice is overdue become sendable again; how many."""
        late = [s for s, t in self._held.items() if now - t >= self.resend_s]
        for s in late:
            del self._held[s]
        self.resent += len(late)
        return len(late)

    def next_expiry(self) -> float | None:
        """When the oldest held batch is due to be sent again (None when none is held)."""
        return min(self._held.values()) + self.resend_s if self._held else None

    def on_connected(self) -> None:
        """A new session: nothing is in flight any more (all of it is sent again)."""
        self._batches.clear()
        self._events.clear()

    def in_flight(self) -> list[int]:
        """The seqs of the batches in flight (not to be evicted under them)."""
        return list(self._batches.values())

    def messages_in_flight(self) -> int:
        """Batches and events sent and not acknowledged yet."""
        return len(self._batches) + len(self._events)

    def hold_s(self, now: float) -> float:
        """How long to wait before publishing again (after a refusal); 0 for not at all."""
        return max(0.0, self._hold_until - now)

    def mark_urgent(self, seq: int) -> None:
        """Batch `seq` carries an urgent reading: it goes before any other batch, even past a full window."""
        self._urgent.add(seq)

    def next_publishes(self, window: int, pending: Pending) -> list[Publish]:
        """What to publish now: events not in flight, the urgent batches, then batches to fill the window."""
        out: list[Publish] = []
        cap = MAX_IN_FLIGHT - self.messages_in_flight()
        busy_events = set(self._events.values())
        if len(busy_events) < EVENTS_IN_FLIGHT:
            fresh = [(i, p) for i, p in pending.events(EVENTS_IN_FLIGHT) if i not in busy_events]
            out += [Publish("event", i, p) for i, p in fresh[:min(EVENTS_IN_FLIGHT - len(busy_events), cap)]]
        busy = set(self._batches.values())
        if len(self._held) >= MAX_HELD:
            return out  # the platform's stored notices pace the sending now
        window = min(window, cap - len(out) + len(busy) - URGENT_SLOTS)  # the urgent lane stays open
        room = window - len(busy)
        skip = busy | self._held.keys()  # in flight, or held by the broker: not sent again
        out += self._urgent_batches(room + URGENT_SLOTS, skip, pending)
        room = window - len(busy) - sum(1 for p in out if p.kind == "batch")
        if room <= 0:
            return out
        if room >= 2 and pending.backlog() - len(skip) > room:
            newest = pending.newest_batch()  # a backlog: the freshest data must not wait behind it
            if newest is not None and newest[0] not in skip:
                out.append(Publish("batch", *newest))
                skip.add(newest[0])
                room -= 1
        out += [Publish("batch", s, p) for s, p in pending.batches(0, room, skip)]
        return out

    def _urgent_batches(self, room: int, busy: set[int], pending: Pending) -> list[Publish]:
        """Up to `room` urgent batches not in flight (added to `busy`); marks of batches gone are dropped."""
        out: list[Publish] = []
        for seq in sorted(self._urgent - busy):
            if len(out) >= room:
                break
            got = pending.batches(seq - 1, 1, busy)
            if not got or got[0][0] != seq:  # acknowledged meanwhile, or evicted
                self._urgent.discard(seq)
                continue
            out.append(Publish("batch", *got[0]))
            busy.add(seq)
        return out

    def on_sent(self, publish: Publish, mid: int) -> None:
        """`publish` went out as MQTT message `mid`."""
        (self._batches if publish.kind == "batch" else self._events)[mid] = publish.ref

    def on_puback(self, mid: int, ok: bool, now: float) -> Acked | None:
        """The broker acknowledged (`ok`) or refused message `mid`; what the queue may drop."""
        if ok:
            self._refused.reset()
        elif mid in self._batches or mid in self._events:
            # refused (over the Box's rate at the broker, or not allowed): it stays queued and is sent
            # again after a pause that grows while refusals go on
            self._hold_until = now + self._refused.next()
        seq = self._batches.pop(mid, None)
        if seq is not None:
            if not ok:
                return None
            self._urgent.discard(seq)
            self.acked_batches += 1
            if self.platform_stores is False or seq <= self._stored:
                return Acked("batch", seq)
            self._held[seq] = now  # the platform's stored notice frees it (`on_stored`)
            return Acked("held", seq)
        event = self._events.pop(mid, None)
        return Acked("event", event) if event is not None and ok else None


def ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Consecutive numbers as (first, last) ranges: [1, 2, 3, 7] -> [(1, 3), (7, 7)]."""
    out: list[list[int]] = []
    for s in sorted(seqs):
        if out and out[-1][1] + 1 == s:
            out[-1][1] = s
        else:
            out.append([s, s])
    return [(a, b) for a, b in out]
