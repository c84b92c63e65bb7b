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
    """The broker has it: the queue may drop batch or event `ref`."""

    kind: Kind
    ref: int


class Forwarder:
    """The window of messages in flight, and the pause after a refusal."""

    def __init__(self, refused: Backoff | None = None) -> None:
        self._batches: dict[int, int] = {}  # MQTT message id -> batch seq
        self._events: dict[int, int] = {}  # MQTT message id -> event id
        self._refused = refused or Backoff(REFUSED_BASE_S, REFUSED_MAX_S)
        self._hold_until = 0.0
        self._urgent: set[int] = set()  # seqs of the urgent batches not acknowledged yet
        self.acked_batches = 0  # since start

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
        window = min(window, cap - len(out) + len(busy) - URGENT_SLOTS)  # the urgent lane stays open
        out += self._urgent_batches(window + URGENT_SLOTS - len(busy), busy, pending)
        room = window - len(busy)
        if room <= 0:
            return out
        if room >= 2 and pending.backlog() - len(busy) > room:
            newest = pending.newest_batch()  # a backlog: the freshest data must not wait behind it
            if newest is not None and newest[0] not in busy:
                out.append(Publish("batch", *newest))
                busy.add(newest[0])
                room -= 1
        out += [Publish("batch", s, p) for s, p in pending.batches(0, room, busy)]
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
            return Acked("batch", seq)
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
