"""Report on change in the cloud's store: spans ("polled, unchanged") stored once, resolved when read
whatever order their batches came in, and never resolved across a batch that is missing."""

from __future__ import annotations

import json

from cloud.store import Store
from cloud.store._telemetry import samples
from proto import wire
from proto.points import PointInfo
from tests.support.storedb import both_engines

pytestmark = both_engines  # on SQLite and PostgreSQL

BOX, TID = "BOX-1", 7
TABLE = [PointInfo("d.a", "degC", "float32"), PointInfo("d.b", "", "bool")]
G = wire.encode_group


def batch(seq: int, base: int, *groups: list[object]) -> wire.Batch:
    return wire.decode_batch(wire.encode_batch(1, seq, TID, base, list(groups)))


def stored(store: Store, *batches: wire.Batch) -> None:
    store.put_table(BOX, TID, TABLE)
    for b in batches:
        store.store_batch(BOX, b, TABLE, bytes([b.seq]))


B1 = batch(1, 1000, G(0, 0, [1.0, False], {}))
B2 = batch(2, 2000, G(0, 0, 2, {}))  # both polled, unchanged
B3 = batch(3, 3000, G(0, 0, [5.0], {}), G(0, 1, 1, {}))


def history(store: Store, points: list[str] | None = None, limit: int = 100) -> list[tuple[str, int, object, int]]:
    return store.history(BOX, points or [], 0, 10_000, after=None, limit=limit)


def test_spans_resolve_to_the_value_in_force_whatever_order_the_batches_came_in(store: Store) -> None:
    stored(store, B3, B2)  # the freshest first, as a Box drains a backlog
    assert history(store) == [("d.a", 3000, 5.0, 0)]  # b's polls refer to a value not here yet: missing
    stored(store, B1, B2)  # B2 again: stored once
    assert history(store) == [("d.a", 1000, 1.0, 0), ("d.b", 1000, False, 0), ("d.a", 2000, 1.0, 0),
                              ("d.b", 2000, False, 0), ("d.a", 3000, 5.0, 0), ("d.b", 3000, False, 0)]
    assert history(store, ["d.b"]) == [("d.b", 1000, False, 0), ("d.b", 2000, False, 0), ("d.b", 3000, False, 0)]
    page = history(store, limit=3)
    assert page == history(store)[:3]
    rest = store.history(BOX, [], 0, 10_000, after=(page[-1][1], page[-1][0]), limit=100)
    assert page + rest == history(store)
    assert store.confirmed(BOX) == {"d.b": 3000}  # a's latest value is newer than its last span
    assert store.aggregates(BOX, ["d.a"], 0, 10_000, 10_000, after=None, limit=10) == [
        ("d.a", 0, 3, 1.0, 5.0, 7.0 / 3)]  # the value in force counts at each poll
    assert store.aggregates(BOX, ["d.b"], 0, 10_000, 10_000, after=None, limit=10) == [
        ("d.b", 0, 3, None, None, None)]  # a boolean: counted, no min, max or mean


def test_aggregates_of_booleans_text_and_states_are_counts_alone_on_every_database(store: Store) -> None:
    """Without spans the aggregates are SQL (the other path is Python): a value that is not a finite
    number is counted and has no min, max or mean, on SQLite as on PostgreSQL (whose CAST refuses
    "true", failing the whole query; SQLite's read it as 0.0)."""
    values: dict[str, list[object]] = {
        "num": [21.5, 22, 23.5], "flag": [True, False, True], "state": ["on", "off", "on"],
        "mixed": [1.5, "x", None, True, -3, float("nan"), float("-inf")]}
    store.enroll_box(BOX, BOX, 1, 2e9)
    with store.engine.begin() as db:
        db.execute(samples.insert(), [{"box_id": BOX, "point": p, "ts_ms": 1000 * (i + 1), "value": json.dumps(v),
                                       "quality": 0} for p, vs in values.items() for i, v in enumerate(vs)])
    assert store.aggregates(BOX, [], 0, 10_000, 5_000, after=None, limit=10) == [
        ("flag", 0, 3, None, None, None), ("mixed", 0, 4, 1.5, 1.5, 1.5), ("num", 0, 3, 21.5, 23.5, 67 / 3),
        ("state", 0, 3, None, None, None), ("mixed", 5000, 3, -3.0, -3.0, -3.0)]  # NaN, -Infinity: no numbers
    assert store.aggregates(BOX, ["num", "state"], 0, 10_000, 10_000, after=(0, "num"), limit=10) == [
        ("state", 0, 3, None, None, None)]


def test_a_span_is_never_resolved_across_a_batch_that_is_missing(store: Store) -> None:
    # batch 2, [7.0, True] at 2000, was evicted on the Box: it never arrives
    later = batch(3, 3000, G(0, 0, 2, {}))  # unchanged since 7.0 / True, which the cloud never got
    stored(store, B1, later)
    store.put_evicted(BOX, 1, [[2, 2]], 2)
    assert history(store) == [("d.a", 1000, 1.0, 0), ("d.b", 1000, False, 0)]  # 3000: missing, not 1.0
    after_gap = batch(4, 4000, G(0, 0, [7.5, True], {}))
    again = batch(5, 5000, G(0, 0, 2, {}))
    stored(store, after_gap, again)
    assert history(store)[2:] == [("d.a", 4000, 7.5, 0), ("d.b", 4000, True, 0),
                                  ("d.a", 5000, 7.5, 0), ("d.b", 5000, True, 0)]


def test_a_span_past_the_maximum_age_is_not_resolved(store: Store) -> None:
    stale = batch(2, 1000 + wire.MAX_AGE_S * 1000 + 1, G(0, 0, 2, {}))
    stored(store, B1, stale)
    assert store.history(BOX, [], 0, 2**40, after=None, limit=10) == [("d.a", 1000, 1.0, 0), ("d.b", 1000, False, 0)]


def test_a_page_is_full_when_some_polls_of_it_cannot_be_resolved(store: Store) -> None:
    only_b = batch(1, 1000, G(0, 1, [False], {}))  # a's value never came
    stored(store, only_b, *(batch(s, s * 1000, G(0, 0, 2, {})) for s in range(2, 6)))
    page = store.history(BOX, [], 0, 10_000, after=(1000, "d.b"), limit=3)
    assert page == [("d.b", 2000, False, 0), ("d.b", 3000, False, 0), ("d.b", 4000, False, 0)]
    assert store.history(BOX, ["d.b"], 0, 10_000, after=None, limit=10)[-1] == ("d.b", 5000, False, 0)
    assert store.history(BOX, ["d.a"], 0, 10_000, after=None, limit=10) == []
