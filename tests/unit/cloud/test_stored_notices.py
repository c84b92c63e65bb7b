"""The platform's "stored up to" notices (`cloud.store._acks`, `cloud._acker`), through the receiver's
handling of real messages, without a broker: what a Box is told, when, and never more than is stored."""

from __future__ import annotations

from pathlib import Path

from cloud._acker import Acker
from cloud.pki import Pki
from cloud.receiver import Receiver
from cloud.store import Store
from drivers import PointInfo
from proto import wire
from proto.downlink import StoredNotice, decode_stored
from proto.topics import Down
from proto.uplink import Evicted, Health, Status
from tests.support.storedb import both_engines

TABLE = [PointInfo("m.x", "", "float32")]
EPOCH = 0x5EED


class Sent:
    """What the acker published, decoded."""

    def __init__(self) -> None:
        self.notices: list[tuple[str, StoredNotice]] = []

    def __call__(self, box_id: str, leaf: Down, payload: bytes) -> bool:
        assert leaf == Down.STORED
        self.notices.append((box_id, decode_stored(payload)))
        return True


def batch(seq: int) -> bytes:
    return wire.encode_batch(EPOCH, seq, wire.table_id(TABLE), 1_700_000_000_000 + seq, [wire.encode_group(0, 0,
                                                                                                        [float(seq)],
                                                                                                        {})])


def heartbeat(oldest: int, last: int) -> bytes:
    return Health(1_700_000_000_000, EPOCH, last, oldest_seq=oldest).encode()


def online(acks_s: int) -> bytes:
    return Status(True, 1_700_000_000_000, "1.0", acks_s=acks_s).encode()


def rig(tmp_path: Path, store: Store, acks_s: int = 30) -> tuple[Receiver, Acker, Sent]:
    store.enroll_box("B1", "B1", 1, 2e9)
    r = Receiver(Pki(tmp_path / "pki"), store, "localhost", 1)
    sent = Sent()
    acker = Acker(store, sent)
    r.handle("B1", "meta", wire.encode_table(TABLE))
    r.handle("B1", "status", online(acks_s))
    return r, acker, sent


@both_engines
def test_the_notice_says_the_end_of_the_run_stored_from_the_oldest_batch_the_box_holds(tmp_path: Path,
                                                                                      store: Store) -> None:
    r, acker, sent = rig(tmp_path, store)
    r.handle("B1", "health", heartbeat(oldest=3, last=6))  # it freed 1 and 2 long ago
    for seq in (3, 4, 6):  # 5 went with a killed receiver
        r.handle("B1", "data", batch(seq))
    assert acker.send_due() == 1
    assert sent.notices == [("B1", StoredNotice(EPOCH, 4, frozenset({6})))]  # never past the hole; what is past it
    r.handle("B1", "data", batch(7))
    assert acker.send_due() == 0  # at most one notice in the Box's 30 s
    assert store.claim_notice("B1", now=9e9) == StoredNotice(EPOCH, 4, frozenset({6, 7}))
    r.handle("B1", "data", batch(5))  # the Box sent it again
    assert store.claim_notice("B1", now=9e9 + 60) == StoredNotice(EPOCH, 7)
    assert store.claim_notice("B1", now=9e9 + 120) is None  # nothing new: nothing said (4G bytes)


@both_engines
def test_nothing_is_said_before_a_heartbeat_and_a_missed_notice_is_said_again(tmp_path: Path, store: Store) -> None:
    r, acker, _sent = rig(tmp_path, store, acks_s=1)
    r.handle("B1", "data", batch(1))
    assert acker.send_due() == 0  # where its batches start is not known yet
    r.handle("B1", "health", heartbeat(oldest=1, last=1))
    assert store.claim_notice("B1", now=1e10) == StoredNotice(EPOCH, 1)
    assert store.claim_notice("B1", now=1e10 + 5) is None  # nothing new: nothing said (4G bytes)
    r.handle("B1", "data", batch(1))  # the Box sends it again: it missed the notice
    assert store.claim_notice("B1", now=1e10 + 10) == StoredNotice(EPOCH, 1)


@both_engines
def test_evicted_batches_do_not_stop_the_notice_and_a_box_without_notices_gets_none(tmp_path: Path,
                                                                                    store: Store) -> None:
    r, _acker, _sent = rig(tmp_path, store)
    r.handle("B1", "health", heartbeat(oldest=1, last=5))
    r.handle("B1", "events", Evicted(1, 10, 10, [(2, 3)], EPOCH).encode())
    for seq in (1, 4):
        r.handle("B1", "data", batch(seq))
    assert store.claim_notice("B1", now=1e10) == StoredNotice(EPOCH, 4)
    r.handle("B1", "status", online(0))  # an older Box (or one that stopped asking)
    r.handle("B1", "data", batch(5))
    assert store.acks_due(now=2e10) == [] and store.claim_notice("B1", now=2e10) is None


@both_engines
def test_two_receivers_never_both_send_a_notice(tmp_path: Path, store: Store) -> None:
    r, acker, sent = rig(tmp_path, store)
    other = Acker(store, sent)
    r.handle("B1", "health", heartbeat(oldest=1, last=1))
    r.handle("B1", "data", batch(1))
    assert acker.send_due() + other.send_due() == 1 and len(sent.notices) == 1
