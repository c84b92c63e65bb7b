"""The webhooks' durable outbox in the store: the feed written with a batch, a connector's place in it
moved with its items in one transaction, deliveries grouped by count, size and time and kept across
retries, order kept behind a failing delivery, dead letters and their replay."""

from __future__ import annotations

from cloud.store import Store
from proto import wire
from proto.points import PointInfo

TABLE = [PointInfo("d.t", "degC", "float32")]


def _batch(store: Store, seq: int) -> None:
    payload = wire.encode_batch(1, seq, wire.table_id(TABLE), 1_700_000_000_000, [wire.encode_group(0, 0, [1.0], {})])
    store.store_batch("BOX-1", wire.decode_batch(payload), TABLE, b"", payload)


def test_batches_join_the_feed_only_while_a_connector_exists_and_once(store: Store) -> None:
    _batch(store, 1)
    assert store.feed_after(0, 10) == []
    cid = store.add_connector(1, "c", "webhook", service_account_id=1, config={}, sealed="")
    _batch(store, 2)
    _batch(store, 2)  # the same batch again: stored once, fed once
    assert [f.box_id for f in store.feed_after(store.connector(cid).feed_pos, 10)] == ["BOX-1"]  # type: ignore[union-attr]


def test_a_connector_moves_its_place_with_its_items_only_from_the_place_and_state_it_read(store: Store) -> None:
    cid = store.add_connector(1, "c", "webhook", service_account_id=1, config={}, sealed="")
    for s in range(1, 4):
        _batch(store, s)
    rows = store.feed_after(0, 10)
    assert store.queue_items(cid, (0, "unconfirmed"), rows[-1].id, [("BOX-1", '{"id":"a"}')])
    assert not store.queue_items(cid, (0, "unconfirmed"), rows[-1].id, [("BOX-1", '{"id":"a"}')])  # moved already
    store.update_connector(cid, state="enabled")
    assert not store.queue_items(cid, (rows[-1].id, "unconfirmed"), rows[-1].id + 1, [])  # confirmed meanwhile
    assert store.outbox_depth(cid) == {"waiting": 1, "dead": 0}


def test_enabling_moves_the_place_to_the_feeds_newest_row_never_back(store: Store) -> None:
    cid = store.add_connector(1, "c", "webhook", service_account_id=1, config={}, sealed="")
    _batch(store, 1)
    _batch(store, 2)  # stored before the endpoint proved it is its owner's
    store.update_connector(cid, state="confirming")
    assert store.enable_connector(cid, expect_state="confirming")
    row = store.connector(cid)
    assert row is not None and row.state == "enabled" and store.feed_after(row.feed_pos, 10) == []
    assert not store.enable_connector(cid, expect_state="confirming")


def test_trimming_keeps_the_newest_row_so_sqlite_never_numbers_a_new_one_below_a_place(store: Store) -> None:
    cid = store.add_connector(1, "c", "webhook", service_account_id=1, config={}, sealed="")
    _batch(store, 1)
    top = store.feed_after(0, 10)[-1].id
    store.queue_items(cid, (0, "unconfirmed"), top, [])
    store.trim_feed()
    _batch(store, 2)
    assert [f.id for f in store.feed_after(top, 10)] == [top + 1]


def test_deliveries_are_grouped_by_count_size_and_time_kept_across_retries_in_order(store: Store) -> None:
    cid = store.add_connector(1, "c", "webhook", service_account_id=1, config={}, sealed="")
    items = [("BOX-1", f'{{"id":"{i}","pad":"{"x" * 100}"}}') for i in range(10)]
    store.queue_items(cid, (0, "unconfirmed"), 0, items)
    now = 1e9
    assert store.next_delivery(cid, now - 10, 100, 10_000, 60.0) is None  # not full, not waited long enough
    d = store.next_delivery(cid, now, 4, 10_000, 60.0)  # four a delivery
    assert d is not None and d.items == 4
    store.delivery_failed(d.id, "503", now + 30, dead=False, now=now)
    assert store.next_delivery(cid, now + 10, 4, 10_000, 60.0) is None  # the failed one waits: nothing overtakes it
    again = store.next_delivery(cid, now + 30, 4, 10_000, 60.0)
    assert again is not None and again.id == d.id and again.bodies == d.bodies and again.attempts == 1
    store.delivered(d.id)
    by_size = store.next_delivery(cid, now + 30, 100, 300, 60.0)  # ~120 bytes an item: two fit in 300
    assert by_size is not None and len(by_size.bodies) == 2
    assert store.connector(cid).delivered == 4  # type: ignore[union-attr]


def test_a_dead_letter_is_skipped_listed_and_replayed_with_the_same_items(store: Store) -> None:
    cid = store.add_connector(1, "c", "webhook", service_account_id=1, config={}, sealed="")
    store.queue_items(cid, (0, "unconfirmed"), 0, [("BOX-1", '{"id":"1"}'), ("BOX-1", '{"id":"2"}')])
    d = store.next_delivery(cid, 1e9, 1, 10_000, 0.0)
    assert d is not None
    store.delivery_failed(d.id, "gone", 1e9, dead=True, now=1e9)
    nxt = store.next_delivery(cid, 1e9, 1, 10_000, 0.0)
    assert nxt is not None and nxt.bodies == ('{"id":"2"}',)  # the next one goes
    assert [x.id for x in store.deliveries(cid, "dead")] == [d.id]
    assert store.outbox_depth(cid) == {"waiting": 1, "dead": 1}
    assert store.replay(cid, None, 1e9) == 1
    assert store.deliveries(cid, "dead") == []
    store.delivered(nxt.id)
    back = store.next_delivery(cid, 1e9, 1, 10_000, 0.0)
    assert back is not None and back.id == d.id and back.bodies == ('{"id":"1"}',) and back.attempts == 0
