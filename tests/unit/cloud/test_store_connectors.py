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
    assert store.outbox_depth(cid) == {"waiting": 1, "dead": 0, "bytes": 10, "evicted": 0, "evicting_since": None}


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
    depth = store.outbox_depth(cid)
    assert (depth["waiting"], depth["dead"], depth["evicted"]) == (1, 1, 0)
    assert store.replay(cid, None, 1e9) == 1
    assert store.deliveries(cid, "dead") == []
    store.delivered(nxt.id)
    back = store.next_delivery(cid, 1e9, 1, 10_000, 0.0)
    assert back is not None and back.id == d.id and back.bodies == ('{"id":"1"}',) and back.attempts == 0


def _items(store: Store, cid: int, n: int, first: int = 0) -> None:
    row = store.connector(cid)
    assert row is not None
    assert store.queue_items(cid, (row.feed_pos, row.state), row.feed_pos,
                             [("BOX-1", f'{{"id":"i{first + k:04d}"}}') for k in range(n)])


def _left(store: Store, cid: int) -> list[str]:
    import sqlalchemy as sa

    from cloud.store._connectors import hook_items

    with store._read() as db:
        return [b[7:12] for b in db.execute(sa.select(hook_items.c.body).where(hook_items.c.connector_id == cid)
                                           .order_by(hook_items.c.id)).scalars()]


def test_past_its_cap_an_outbox_loses_its_oldest_items_a_delivery_whole_counted(store: Store) -> None:
    cid = store.add_connector(1, "c", "webhook", service_account_id=1, config={}, sealed="")
    store.update_connector(cid, state="disabled")
    _items(store, cid, 3)
    d = store.next_delivery(cid, 0.0, 3, 10**6, 0.0)  # the oldest three grouped (a delivery in flight)
    assert d is not None and d.items == 3
    _items(store, cid, 7, first=3)
    assert store.evict(cid, 10, 10**6, 100.0) == (0, False)  # within the cap
    assert store.evict(cid, 8, 10**6, 100.0) == (3, True)  # 2 over: the oldest delivery goes, whole
    assert _left(store, cid) == [f"i{k:04d}" for k in range(3, 10)]
    store.delivered(d.id)  # its answer came after it was evicted: nothing counted twice
    depth = store.outbox_depth(cid)
    assert depth["waiting"] == 7 and depth["bytes"] == 7 * 14 and depth["evicted"] == 3
    assert depth["evicting_since"] == 100.0
    assert store.evict(cid, 7, 6 * 14, 200.0) == (1, False)  # by bytes too; the eviction was on already
    assert _left(store, cid)[0] == "i0004"
    assert store.evicting_over(cid) and not store.evicting_over(cid)
    assert store.outbox_depth(cid)["evicting_since"] is None


def test_the_outbox_counters_follow_every_change_and_the_breaker_is_kept_with_each_attempt(store: Store) -> None:
    import sqlalchemy as sa

    from cloud.store._connectors import hook_items

    cid = store.add_connector(1, "c", "webhook", service_account_id=1, config={}, sealed="")
    store.update_connector(cid, state="enabled")
    _items(store, cid, 5)
    d = store.next_delivery(cid, 0.0, 2, 10**6, 0.0)
    assert d is not None
    store.delivery_failed(d.id, "503", 10.0, dead=False, now=1.0, breaker=(5, 31.0, 30.0))
    assert store.connector(cid).breaker == (5, 31.0, 30.0)  # type: ignore[union-attr]
    store.delivered(d.id)
    row = store.connector(cid)
    assert row is not None and row.breaker == (0, 0.0, 0.0)
    with store._read() as db:
        n, size = db.execute(sa.select(sa.func.count(), sa.func.sum(sa.func.length(hook_items.c.body)))
                             .where(hook_items.c.connector_id == cid)).one()
    assert (row.outbox_items, row.outbox_bytes) == (n, size) == (3, 3 * 14)
