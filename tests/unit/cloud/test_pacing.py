"""Issue 12, finding 2: one Box's decoding work is bounded and what goes over waits, in order, lost
never; every per-Box cache has a bound. On a real store, with the receiver's own handling."""

from __future__ import annotations

from pathlib import Path

from cloud.pacing import Budgets, Lru
from cloud.pki import Pki
from cloud.receiver import Receiver
from cloud.store import PointTable, Store
from drivers import PointInfo
from proto import wire
from tests.support.storedb import both_engines

TABLE = [PointInfo("d.x", "", "float32")]


def test_a_bucket_goes_into_debt_by_one_message_then_waits() -> None:
    b = Budgets(rate=100, burst=200)
    assert b.admit("A", 150, now=0) and b.admit("A", 500, now=0)  # the second one: any size, in debt
    assert not b.admit("A", 1, now=0) and b.wait_s("A", now=0) == 4.5
    assert b.admit("B", 150, now=0)  # another key is not concerned
    assert not b.ready("A", now=4.4) and b.ready("A", now=4.5)


def test_an_lru_keeps_its_total_weight_under_its_capacity() -> None:
    lru: Lru[int, list[int]] = Lru(10, len)
    for i in range(100):
        lru.put(i, [0] * (i % 4 + 1))
    assert lru.size <= 10 and 99 in lru and 0 not in lru
    lru.put(1000, [0] * 11)  # heavier than everything: not kept
    assert 1000 not in lru and lru.size <= 10


def _batch(seq: int) -> bytes:
    return wire.encode_batch(7, seq, wire.table_id(TABLE), 1000 + seq, [wire.encode_group(0, 0, [float(seq)], {})])


def test_a_box_over_its_budget_waits_and_loses_nothing_and_the_others_pass(tmp_path: Path, store: Store) -> None:
    for box in ("FAST", "CALM"):
        store.enroll_box(box, box, hash(box) & 0xFFFF, 2e9)
    r = Receiver(Pki(tmp_path / "pki"), store, "localhost", 1)
    r.pacer.budgets = Budgets(rate=1, burst=1)  # every Box may decode one message, then waits
    for box in ("FAST", "CALM"):
        r.handle(box, "meta", wire.encode_table(TABLE))  # spends the Box's budget
    for seq in range(1, 51):
        r.handle("FAST", "data", _batch(seq))  # all put aside, in order
    assert r.pacer.waiting("FAST") == 50 and store.samples("FAST") == []
    assert [a.kind for a in store.alerts("FAST")] == ["rate"]
    r.pacer.budgets = None  # time passes: budgets refill (as if)
    r.handle("CALM", "data", _batch(1))  # the other Box is not behind FAST's backlog
    assert len(store.samples("CALM")) == 1
    assert r.pacer.drain(r._dispatch) == 50
    assert [v for _, _, v, _ in store.samples("FAST")] == [float(s) for s in range(1, 51)]
    assert r.pacer.waiting("FAST") == 0 and store.deferred_counts() == {}


@both_engines
def test_what_was_put_aside_survives_a_restart(tmp_path: Path, store_db: Path | str) -> None:
    store = Store(store_db)
    store.enroll_box("B", "B", 1, 2e9)
    r = Receiver(Pki(tmp_path / "pki"), store, "localhost", 1)
    r.pacer.budgets = Budgets(rate=1, burst=1)
    r.handle("B", "meta", wire.encode_table(TABLE))
    r.handle("B", "data", _batch(1))
    again = Receiver(Pki(tmp_path / "pki"), Store(store_db), "localhost", 1)
    again.pacer.budgets = None
    again.pacer._waiting = again.store.deferred_counts()  # what start() does
    again.pacer.drain(again._dispatch)
    assert [v for _, _, v, _ in again.store.samples("B")] == [1.0]


def test_point_tables_are_cached_within_a_bound(store: Store) -> None:
    store._tables.capacity = 1000
    for n in range(20):  # 20 tables of 300 points: 6000 points sent, the Box's newest 2 kept
        points = [PointInfo(f"t{n}.p{i}", "", "f") for i in range(300)]
        store.put_table("B", wire.table_id(points), points)
    assert store.cached_points() == 600
    for box in range(10):  # other Boxes: 1000 points in all at most, the least recently used dropped
        points = [PointInfo(f"x.p{i}", "", "f") for i in range(300)]
        store.put_table(f"O{box}", wire.table_id(points), points)
    assert store.cached_points() <= 1000
    points = [PointInfo(f"t0.p{i}", "", "f") for i in range(300)]
    table = store.table("B", wire.table_id(points))  # evicted, read again from the database
    assert isinstance(table, PointTable) and table.names[0] == "t0.p0"
