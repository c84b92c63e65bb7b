"""Several batches in one transaction (issue 20's group commit), on SQLite and on a real PostgreSQL:
each (Box, epoch, seq) stored once inside a group as across groups, one bad batch costing only
itself, and nothing said stored (acknowledged, or in a stored notice) before the group's commit.

The receiver's part runs without a broker here (its intake handed the messages as paho gives
them); with the real broker: tests/integration/test_receiver_groups.py.
"""

from __future__ import annotations

import random
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from cloud._intake import Intake, Taken
from cloud.errors import StoreError
from cloud.pki import Pki
from cloud.receiver import Receiver
from cloud.store import Incoming, Outcome, PointTable, Store
from proto import topics, wire
from proto.errors import WireError
from proto.points import PointInfo
from proto.topics import Up
from proto.uplink import Health, Status
from tests.support import poison
from tests.support.storedb import both_engines
from tests.support.together import at_once

TABLE = PointTable([PointInfo(f"d.p{i}", "kW", "float32") for i in range(5)])
TID = wire.table_id(TABLE)
EPOCH = 9


def payload(box: str, seq: int, base: float = 0.0) -> bytes:
    return wire.encode_batch(EPOCH, seq, TID, 1_700_000_000_000 + seq * 1000,
                             [wire.encode_group(0, 0, [base + seq * 10 + i for i in range(5)], {})])


def item(box: str, seq: int, base: float = 0.0) -> Incoming:
    p = payload(box, seq, base)
    return Incoming(box, wire.decode_batch(p), TABLE, bytes([seq, int(base)]), p)


@both_engines
def test_a_group_stores_each_batch_once_with_a_copy_inside_it_and_one_stored_before(store: Store) -> None:
    store.put_table("B1", TID, TABLE)
    assert store.store_batch("B1", item("B1", 1).batch, TABLE, item("B1", 1).digest)
    outcomes = store.store_batches([item("B1", 2), item("B1", 1), item("B2", 2), item("B1", 2), item("B1", 3),
                                    item("B1", 3, base=100)])
    assert outcomes == [Outcome.STORED, Outcome.AGAIN, Outcome.STORED, Outcome.AGAIN, Outcome.STORED,
                        Outcome.CONFLICT]  # B2's 2 is another Box's; 3 again with other content
    assert store.batch_keys("B1") == [(EPOCH, 1), (EPOCH, 2), (EPOCH, 3)] and store.conflicts("B1") == [(EPOCH, 3)]
    got = store.samples("B1")
    assert len(got) == 15  # each sample once
    assert sorted(float(str(v)) for p, _, v, _ in got if p == "d.p0") == [10, 20, 30]
    assert {p: v for p, _, v, _, _ in store.latest("B1")}["d.p4"] == 34  # the newest of the group's batches
    assert len(store.samples("B2")) == 5


@both_engines
def test_a_batch_whose_rows_cannot_be_made_is_refused_alone(store: Store) -> None:
    bad = wire.decode_batch(wire.encode_batch(EPOCH, 2, TID, 1000, [wire.encode_group(0, 3, [1.0, 2.0, 3.0], {})]))
    outcomes = store.store_batches([item("B1", 1), Incoming("B1", bad, TABLE), item("B1", 3)])
    assert outcomes[0] is Outcome.STORED and outcomes[2] is Outcome.STORED
    assert isinstance(outcomes[1], WireError) and "runs past" in str(outcomes[1])
    assert store.batch_keys("B1") == [(EPOCH, 1), (EPOCH, 3)]


@both_engines
def test_a_group_the_database_refuses_stores_nothing_and_makes_no_notice_due(store: Store,
                                                                             store_db: Path | str) -> None:
    """On PostgreSQL the refusal comes at COMMIT (a deferred trigger): every statement passed."""
    store.put_table("B1", TID, TABLE)
    store.want_acks("B1", 1)
    store.note_held("B1", EPOCH, 1)
    assert store.claim_notice("B1", now=1e10) is None  # nothing stored yet
    poison.add(store_db, 2, at_commit=poison.engine_of(store_db) == "postgresql")
    with pytest.raises(StoreError, match="poison"):
        store.store_batches([item("B1", 1), item("B1", 2), item("B1", 3)])
    assert store.batch_keys("B1") == [] and store.samples("B1") == [] and store.latest("B1") == []
    assert store.acks_due(now=2e10) == [] and store.claim_notice("B1", now=2e10) is None
    poison.remove(store_db)
    assert store.store_batches([item("B1", 1), item("B1", 2), item("B1", 3)]) == [Outcome.STORED] * 3
    assert store.claim_notice("B1", now=3e10) is not None


@both_engines
def test_writers_storing_groups_at_once_store_each_batch_once(store_db: Path | str) -> None:
    """Three writers (receivers in three processes) store the same 60 batches of four Boxes at once,
    each in its own order and groups of its own: no deadlock, each batch and sample once."""
    every = [item(f"B{n % 4}", n // 4 + 1) for n in range(60)]
    stored: list[tuple[str, int, int]] = []

    def writer(n: int) -> None:
        s, mine, rng = Store(store_db), list(every), random.Random(n)
        rng.shuffle(mine)
        while mine:
            k = rng.randint(1, 12)
            group, mine = mine[:k], mine[k:]
            for it, o in zip(group, s.store_batches(group), strict=True):
                if o is Outcome.STORED:
                    stored.append(it.key)

    errors = at_once(writer, 3)
    assert not errors, errors
    assert sorted(stored) == sorted(it.key for it in every)  # stored once: STORED once, AGAIN for the others
    s = Store(store_db)
    assert sum(len(s.samples(f"B{b}")) for b in range(4)) == 60 * 5


def message(box: str, leaf: Up, body: bytes, mid: int) -> mqtt.MQTTMessage:
    """A message as paho hands it to the receiver."""
    msg = mqtt.MQTTMessage(mid, topics.up(box, leaf).encode())
    msg.payload, msg.qos = body, 1
    return msg


@both_engines
def test_a_poison_batch_in_a_group_costs_only_itself_and_acknowledgements_stop_before_it(
        tmp_path: Path, store: Store, store_db: Path | str) -> None:
    store.enroll_box("B1", "B1", 1, 2e9)
    r = Receiver(Pki(tmp_path / "pki"), store, "localhost", 1)
    r.handle("B1", "meta", wire.encode_table(list(TABLE)))
    acks: list[int] = []
    held: list[bool] = []
    intake = Intake(r._take_all, lambda mid, _qos: acks.append(mid), lambda: held.append(True))
    poison.add(store_db, 3)
    msgs = [message("B1", Up.DATA, payload("B1", s), mid=s) for s in (1, 2, 3, 4, 2)]
    msgs.insert(1, message("B1", Up.DATA, b"\x01\xff", mid=10))  # malformed: rejected, acknowledged
    intake.run([Taken(m, 0) for m in msgs])
    assert acks == [1, 10, 2] and held == [True]  # in order, up to the batch the database refused
    assert store.batch_keys("B1") == [(EPOCH, 1), (EPOCH, 2), (EPOCH, 4)]  # its neighbours stored
    assert r.counters.group_failures == 1 and r.counters.rejected == 1
    poison.remove(store_db)
    acks.clear()
    intake.new_connection()  # the broker sends again what was not acknowledged
    intake.run([Taken(message("B1", Up.DATA, payload("B1", s), mid=s), 1) for s in (3, 4, 2)])
    assert acks == [3, 4, 2]
    assert len(store.samples("B1")) == 4 * 5  # each sample once


@both_engines
def test_nothing_is_acknowledged_or_said_stored_before_the_groups_commit(tmp_path: Path, store: Store,
                                                                       store_db: Path | str) -> None:
    """The database refuses the group (on PostgreSQL at its COMMIT): no PUBACK, no stored notice due;
    sent again once it takes it: stored, acknowledged, said."""
    store.enroll_box("B1", "B1", 1, 2e9)
    r = Receiver(Pki(tmp_path / "pki"), store, "localhost", 1)
    r.handle("B1", "meta", wire.encode_table(list(TABLE)))
    r.handle("B1", "status", Status(True, 1_700_000_000_000, "1.0", acks_s=1).encode())
    r.handle("B1", "health", Health(1_700_000_000_000, EPOCH, 2, oldest_seq=1).encode())
    acks: list[int] = []
    intake = Intake(r._take_all, lambda mid, _qos: acks.append(mid), lambda: None)
    poison.add(store_db, 1, at_commit=poison.engine_of(store_db) == "postgresql")
    intake.run([Taken(message("B1", Up.DATA, payload("B1", s), mid=s), 0) for s in (1, 2)])
    assert acks == []  # 2 is stored (alone, after the group was refused), but comes after 1
    assert store.batch_keys("B1") == [(EPOCH, 2)]
    notice = store.claim_notice("B1", now=1e10)
    assert notice is not None and notice.seq < 1 and 1 not in notice.ahead and 2 in notice.ahead  # 1 not said
    poison.remove(store_db)
    intake.new_connection()
    intake.run([Taken(message("B1", Up.DATA, payload("B1", s), mid=s), 1) for s in (1, 2)])
    assert acks == [1, 2] and store.batch_keys("B1") == [(EPOCH, 1), (EPOCH, 2)]
    notice = store.claim_notice("B1", now=2e10)
    assert notice is not None and notice.seq == 2


@both_engines
def test_a_heartbeat_behind_its_boxs_batches_in_a_group_finds_them_stored(tmp_path: Path, store: Store) -> None:
    """A Box that frees its batches at the broker's PUBACK (an older Box) may say so in a heartbeat
    that arrives with them in one group: it is handled after they are stored, or a gap alert would
    open for batches that were on their way."""
    store.enroll_box("B1", "B1", 1, 2e9)
    r = Receiver(Pki(tmp_path / "pki"), store, "localhost", 1)
    r.handle("B1", "meta", wire.encode_table(list(TABLE)))
    acks: list[int] = []
    intake = Intake(r._take_all, lambda mid, _qos: acks.append(mid), lambda: None)
    intake.run([Taken(message("B1", Up.DATA, payload("B1", 1), 1), 0)])
    beat = Health(1_700_000_000_000, EPOCH, 3, oldest_seq=0).encode()  # it holds nothing: 2 and 3 went out
    msgs = [message("B2", Up.DATA, payload("B2", 1), 2), message("B1", Up.DATA, payload("B1", 2), 3),
            message("B1", Up.DATA, payload("B1", 3), 4), message("B1", Up.HEALTH, beat, 5),
            message("B1", Up.DATA, payload("B1", 4), 6)]
    intake.run([Taken(m, 0) for m in msgs])
    assert acks == [1, 2, 3, 4, 5, 6]
    assert store.batch_keys("B1") == [(EPOCH, 1), (EPOCH, 2), (EPOCH, 3), (EPOCH, 4)]
    assert [a.kind for a in store.alerts("B1", include_closed=True)] == []  # no gap, not even for a moment
