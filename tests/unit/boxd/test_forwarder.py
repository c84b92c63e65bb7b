"""The forwarder's state machine on literals (no queue, no sockets, no clock): the window, the
fresh-data lane, the urgent lane, message ids to seqs, resending on reconnect, the pause after a
refusal, the cap that keeps room in the MQTT client for replies; and storage as the acknowledgement
(a batch the broker has is held until the platform's stored notice, sent again when it is late)."""

from __future__ import annotations

import random
from collections.abc import Collection

from boxd.backoff import Backoff
from boxd.forwarder import (
    EVENTS_IN_FLIGHT,
    MAX_HELD,
    MAX_IN_FLIGHT,
    REFUSED_BASE_S,
    REFUSED_MAX_S,
    URGENT_SLOTS,
    Acked,
    Forwarder,
    Publish,
    ranges,
)


class Held:
    """A queue's content as literals (`boxd.forwarder.Pending`)."""

    def __init__(self, seqs: Collection[int] = (), events: Collection[int] = ()) -> None:
        self.sealed = {s: f"b{s}".encode() for s in seqs}
        self.queued_events = {e: f"e{e}".encode() for e in events}

    def backlog(self) -> int:
        return len(self.sealed)

    def newest_batch(self) -> tuple[int, bytes] | None:
        return (max(self.sealed), self.sealed[max(self.sealed)]) if self.sealed else None

    def batches(self, after_seq: int, limit: int, skip: Collection[int] = ()) -> list[tuple[int, bytes]]:
        return [(s, self.sealed[s]) for s in sorted(self.sealed) if s > after_seq and s not in skip][:limit]

    def events(self, limit: int) -> list[tuple[int, bytes]]:
        return sorted(self.queued_events.items())[:limit]


def older_platform() -> Forwarder:
    """A forwarder whose platform said it does not acknowledge stored batches: PUBACK frees a batch."""
    fw = Forwarder()
    fw.platform_acks(False)
    return fw


def send(fw: Forwarder, held: Held, window: int, first_mid: int = 1) -> list[tuple[int, Publish]]:
    """What the sending task does: publish each, numbering message ids from `first_mid`."""
    out = []
    for mid, p in enumerate(fw.next_publishes(window, held), start=first_mid):
        fw.on_sent(p, mid)
        out.append((mid, p))
    return out


def refs(sent: list[tuple[int, Publish]], kind: str = "batch") -> list[int]:
    return [p.ref for _, p in sent if p.kind == kind]


def test_a_backlog_drains_oldest_first_with_the_newest_batch_up_front() -> None:
    fw, held = older_platform(), Held(range(1, 41))
    sent = send(fw, held, window=8)
    assert refs(sent) == [40, 1, 2, 3, 4, 5, 6, 7]  # the freshest at once, then the oldest in order
    for mid, p in sent:
        if p.ref in (1, 2, 3):
            assert fw.on_puback(mid, True, now=0.0) == Acked("batch", p.ref)
            del held.sealed[p.ref]
    held.sealed[41] = b"b41"  # fresh data during the drain
    more = send(fw, held, window=8, first_mid=100)
    assert refs(more) == [41, 8, 9]  # the new freshest jumps the backlog; the drain goes on in order
    assert sorted(fw.in_flight()) == [4, 5, 6, 7, 8, 9, 40, 41]


def test_without_a_backlog_batches_go_in_order_and_a_full_window_sends_none() -> None:
    fw, held = Forwarder(), Held([1, 2, 3])
    assert refs(send(fw, held, window=8)) == [1, 2, 3]
    assert send(fw, held, window=3, first_mid=10) == []  # all in flight: nothing twice
    fw2 = Forwarder()
    assert refs(send(fw2, Held(range(1, 10)), window=1)) == [1]  # a window of one keeps no fresh lane


def test_events_go_first_and_are_not_sent_twice_while_in_flight() -> None:
    fw, held = Forwarder(), Held([1], events=[7, 8])
    sent = send(fw, held, window=4)
    assert [(p.kind, p.ref) for _, p in sent] == [("event", 7), ("event", 8), ("batch", 1)]
    assert send(fw, held, window=4, first_mid=10) == []
    assert fw.on_puback(2, True, now=0.0) == Acked("event", 8)


def test_a_reconnect_sends_everything_in_flight_again() -> None:
    fw, held = older_platform(), Held([1, 2, 3], events=[5])
    send(fw, held, window=8)
    fw.on_connected()  # a new session: the broker may have none of it
    assert fw.in_flight() == []
    again = send(fw, held, window=8, first_mid=1)  # the new session numbers from 1 again
    assert [(p.kind, p.ref) for _, p in again] == [("event", 5), ("batch", 1), ("batch", 2), ("batch", 3)]
    assert fw.on_puback(2, True, now=0.0) == Acked("batch", 1)  # ids map to the new session's sends


def test_acknowledgements_of_unknown_or_old_ids_do_nothing() -> None:
    fw, held = older_platform(), Held([1])
    send(fw, held, window=8)
    assert fw.on_puback(99, True, now=0.0) is None
    assert fw.on_puback(1, True, now=0.0) == Acked("batch", 1)
    assert fw.on_puback(1, True, now=0.0) is None  # twice: once
    assert fw.acked_batches == 1


def test_refusals_pause_the_sending_longer_while_they_go_on_and_an_acknowledgement_ends_it() -> None:
    fw = Forwarder(Backoff(REFUSED_BASE_S, REFUSED_MAX_S, random.Random(1)))
    held = Held(range(1, 20))
    waits = []
    for n in range(8):
        ((mid, p),) = send(fw, held, window=1, first_mid=10 * n + 1)
        assert fw.on_puback(mid, False, now=100.0) is None  # refused: stays queued
        assert p.ref not in fw.in_flight()  # ... and is sent again, after the pause
        waits.append(fw.hold_s(now=100.0))
    assert all(0 <= w <= min(REFUSED_MAX_S, REFUSED_BASE_S * 2 ** n) for n, w in enumerate(waits))
    assert max(waits[4:]) > REFUSED_BASE_S * 2  # the pause grows while refusals go on
    assert fw.hold_s(now=100.0 + REFUSED_MAX_S) == 0.0  # and ends
    ((mid, _),) = send(fw, held, window=1, first_mid=500)
    fw.on_puback(mid, True, now=200.0)
    ((mid, _),) = send(fw, Held([2]), window=1, first_mid=600)
    fw.on_puback(mid, False, now=200.0)
    assert fw.hold_s(now=200.0) <= REFUSED_BASE_S  # back to the first, short pause


def test_an_urgent_batch_overtakes_a_full_window_of_backlog() -> None:
    fw, held = older_platform(), Held(range(1, 41))
    assert len(send(fw, held, window=8)) == 8  # the window is full of an outage's backlog
    held.sealed[41] = b"b41"
    assert send(fw, held, window=8, first_mid=100) == []  # an ordinary fresh batch waits for a slot
    held.sealed[42] = b"b42"
    fw.mark_urgent(42)  # an alarm: sealed at once
    assert refs(send(fw, held, window=8, first_mid=200)) == [42]  # it goes now, past the full window
    assert send(fw, held, window=8, first_mid=300) == []  # one slot beyond the window, not more
    assert fw.on_puback(200, True, now=0.0) == Acked("batch", 42)
    del held.sealed[42]
    held.sealed[43] = b"b43"
    fw.mark_urgent(43)
    assert refs(send(fw, held, window=8, first_mid=400)) == [43]  # the lane is free again


def test_urgent_batches_go_before_the_ordinary_ones_and_are_sent_once() -> None:
    fw, held = Forwarder(), Held([1, 2, 3])
    fw.mark_urgent(3)
    sent = send(fw, held, window=8)
    assert refs(sent) == [3, 1, 2]
    fw.on_connected()  # a new session: in flight again, the urgent one first
    assert refs(send(fw, held, window=8)) == [3, 1, 2]
    fw.mark_urgent(9)  # acknowledged or evicted before it was sent: its mark goes, nothing is sent for it
    assert send(fw, Held([1, 2, 3, 10]), window=8, first_mid=50) == [(50, Publish("batch", 10, b"b10"))]


def test_replies_keep_room_in_the_mqtt_client_whatever_the_window() -> None:
    fw, held = Forwarder(), Held(range(1, 300), events=range(1000, 1050))
    sent = send(fw, held, window=256)  # the largest window a configuration may ask for
    # paho's 32 less the room kept for replies, status and health, less the urgent lane's slot
    assert len(sent) == MAX_IN_FLIGHT - URGENT_SLOTS
    assert len(refs(sent, "event")) == EVENTS_IN_FLIGHT
    for seq in (300, 301):
        held.sealed[seq] = f"b{seq}".encode()
        fw.mark_urgent(seq)
    assert refs(send(fw, held, window=256, first_mid=100)) == [300]  # the lane's slot, up to the cap
    assert send(fw, held, window=256, first_mid=200) == []  # at the cap: the next alarm waits for an ack ...
    fw.on_puback(sent[-1][0], True, now=0.0)
    assert refs(send(fw, held, window=256, first_mid=300)) == [301]  # ... and takes the first slot freed
    fw2 = Forwarder()
    sent2 = send(fw2, Held(range(1, 300)), window=256)
    fw2.mark_urgent(299)
    assert 299 in refs(sent2)  # the freshest went out with the drain: no double send
    assert send(fw2, Held(range(1, 300)), window=256, first_mid=500) == []


def test_ranges() -> None:
    assert ranges([]) == []
    assert ranges([7, 1, 3, 2]) == [(1, 3), (7, 7)]


# -- storage as the acknowledgement ----------------------------------------------------------------


def test_a_batch_the_broker_has_is_held_not_sent_again_and_freed_only_by_the_stored_notice() -> None:
    fw, held = Forwarder(), Held([1, 2, 3])
    fw.platform_acks(True)
    sent = send(fw, held, window=8)
    assert [fw.on_puback(mid, True, now=10.0) for mid, _ in sent] == [Acked("held", s) for s in (1, 2, 3)]
    assert sorted(fw.held()) == [1, 2, 3] and fw.in_flight() == []
    assert send(fw, held, window=8, first_mid=10) == []  # the broker has them: not sent again
    fw.on_connected()
    assert send(fw, held, window=8, first_mid=20) == []  # nor at a reconnection (their time runs on)
    fw.on_stored(2)
    assert fw.held() == [3]
    ((_mid, p),) = send(fw, Held([3, 4]), window=8, first_mid=30)
    assert p.ref == 4


def test_a_stored_notice_past_a_hole_frees_what_is_stored_and_only_the_hole_is_sent_again() -> None:
    fw, held = Forwarder(), Held(range(1, 8))
    fw.platform_acks(True)
    for mid, _ in send(fw, held, window=8):
        fw.on_puback(mid, True, now=0.0)
    fw.on_stored(2, {4, 5, 7})  # 3 and 6 went with a killed receiver
    assert sorted(fw.held()) == [3, 6]
    fw.expire(now=fw.resend_s)
    for s in (1, 2, 4, 5, 7):
        del held.sealed[s]  # what the queue dropped
    assert refs(send(fw, held, window=8, first_mid=50)) == [3, 6]


def test_a_held_batch_whose_stored_notice_is_late_is_sent_again_once() -> None:
    fw, held = Forwarder(), Held([1, 2])
    fw.resend_s = 30.0
    sent = send(fw, held, window=8)
    for mid, _ in sent:
        fw.on_puback(mid, True, now=100.0)  # not told yet whether the platform stores: held, to be safe
    assert fw.next_expiry() == 130.0
    assert fw.expire(now=129.0) == 0
    assert fw.expire(now=130.0) == 2  # a receiver died with them, or the broker lost them
    assert refs(send(fw, held, window=8, first_mid=10)) == [1, 2]
    assert fw.resent == 2 and fw.next_expiry() is None


def test_an_older_platform_frees_what_was_held_and_puback_frees_from_then_on() -> None:
    fw, held = Forwarder(), Held([1, 2])
    ((m1, _), (m2, _)) = send(fw, held, window=8)
    assert fw.on_puback(m1, True, now=0.0) == Acked("held", 1)  # not told yet
    assert fw.platform_acks(False) == [1]  # its time notice has no "acks": the queue drops it
    assert fw.on_puback(m2, True, now=0.0) == Acked("batch", 2)


def test_a_puback_for_a_batch_already_stored_frees_it_and_held_batches_are_bounded() -> None:
    fw = Forwarder()
    fw.platform_acks(True)
    ((mid, _),) = send(fw, Held([5]), window=8)
    fw.on_stored(7)  # stored through another copy before this PUBACK came
    assert fw.on_puback(mid, True, now=0.0) == Acked("batch", 5)
    many = Held(range(10, 10 + MAX_HELD + 40))
    mid = 100
    while len(fw.held()) < MAX_HELD:
        for m, _ in send(fw, many, window=16, first_mid=mid):
            fw.on_puback(m, True, now=0.0)
            mid = m + 1
    assert send(fw, many, window=16, first_mid=mid) == []  # no more until a stored notice comes
    fw.on_stored(20)
    assert send(fw, many, window=16, first_mid=mid)
