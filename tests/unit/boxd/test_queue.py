"""The durable queue: order, sealing, acknowledgement, and survival across reopen."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from boxd.queue import Queue, TimeBase
from proto import wire
from tests.support.wait import in_loop


def opened(path: Path, max_samples: int = 10_000_000) -> Queue:
    q = Queue(path, max_samples)
    q.open()
    return q


@contextlib.contextmanager
def writes_held(path: Path) -> Iterator[None]:
    """Another connection holds the database's write lock: the queue's writer waits for it (as
    for a slow disk), so what the loop sees before a write commits can be looked at."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


async def settled() -> None:
    """Let the writer's outcomes reach the loop (an acknowledgement is written without a waiter)."""
    for _ in range(100):
        await asyncio.sleep(0.01)


@in_loop
async def test_batches_keep_order_and_leave_only_when_acked(tmp_path: Path) -> None:
    q = opened(tmp_path / "q.db")
    for i in range(10):
        await q.put(7, 1000 + i, 0, [i, i + 0.5], {})
    assert q.depth() == (0, 20)
    assert await q.seal(max_samples=6) == 4  # 3 groups of 2 per batch, then the last group
    seqs = [s for s, _ in q.batches(0, 100)]
    assert seqs == sorted(seqs) and len(seqs) == 4
    first = wire.decode_batch(q.batches(0, 1)[0][1])
    assert [g.values for g in first.groups] == [[0, 0.5], [1, 1.5], [2, 2.5]]
    assert [g.dt_ms for g in first.groups] == [0, 1, 2] and first.base_ts_ms == 1000
    with writes_held(tmp_path / "q.db"):
        q.ack(seqs[0])
        # gone for the readers at once, before its removal is committed ...
        assert [s for s, _ in q.batches(0, 100)] == seqs[1:]
        assert q.depth() == (14, 0) and q.samples == 14 and q.backlog() == 3 and q.oldest_seq() == seqs[1]
    q.close()  # ... and the removal is on disk once the queue is closed
    q = opened(tmp_path / "q.db")
    assert [s for s, _ in q.batches(0, 100)] == seqs[1:] and q.samples == 14
    q.close()


@in_loop
async def test_everything_survives_a_reopen_with_the_same_epoch(tmp_path: Path) -> None:
    q = opened(tmp_path / "q.db")
    await q.put(7, 1, 0, [1], {})
    await q.seal(100)
    await q.put(7, 2, 0, [2], {0: 1})
    before = (q.epoch, q.batches(0, 10))
    q.close()  # as after a crash: nothing but the file remains
    q2 = opened(tmp_path / "q.db")
    assert (q2.epoch, q2.batches(0, 10)) == before
    assert q2.depth() == (1, 1)
    await q2.seal(100)
    seqs = [s for s, _ in q2.batches(0, 10)]
    assert seqs == [before[1][0][0], before[1][0][0] + 1]  # numbering goes on
    q2.close()


@in_loop
async def test_sequence_numbers_are_never_reused_after_acks(tmp_path: Path) -> None:
    q = opened(tmp_path / "q.db")
    await q.put(7, 1, 0, [1], {})
    await q.seal(10)
    (s1, _), = q.batches(0, 10)
    q.ack(s1)
    await q.put(7, 2, 0, [2], {})
    await q.seal(10)
    (s2, _), = q.batches(0, 10)
    assert s2 > s1
    q.close()


def test_a_new_queue_gets_a_new_epoch(tmp_path: Path) -> None:
    a, b = opened(tmp_path / "a.db"), opened(tmp_path / "b.db")
    assert a.epoch != b.epoch
    a.close()
    b.close()


@in_loop
async def test_a_table_change_starts_a_new_batch(tmp_path: Path) -> None:
    q = opened(tmp_path / "q.db")
    await q.put(1, 1, 0, [1], {})
    await q.put(2, 2, 0, [2], {})
    assert await q.seal(100) == 2
    assert [wire.decode_batch(p).table_id for _, p in q.batches(0, 10)] == [1, 2]
    q.close()


@in_loop
async def test_the_oldest_are_evicted_beyond_the_limit_never_a_batch_in_flight(tmp_path: Path) -> None:
    q = opened(tmp_path / "q.db", max_samples=10)
    for i in range(5):
        await q.put(7, i, 0, [i, i], {})
    await q.seal(4)  # batches of 2 groups: seqs 1, 2, 3 (last has 1 group)
    seqs = [s for s, _ in q.batches(0, 10)]
    for i in range(5, 8):
        await q.put(7, i, 0, [i, i], {})
    assert q.samples == 16

    def event(n: int, total: int, gone: list[int]) -> bytes:
        return wire.encode_doc({"samples": n, "total": total, "seqs": gone})

    n, gone = await q.enforce_limit(lambda: {seqs[0]}, event)
    assert n >= 6 and q.samples <= 10
    assert seqs[0] not in gone and gone == [seqs[1], seqs[2]][: len(gone)]
    assert seqs[0] in [s for s, _ in q.batches(0, 10)]
    # the counter and the event are written with the eviction
    assert q.meta("evicted_total") == n
    ((_, payload),) = q.events(10)
    assert wire.decode_doc(payload, {}) == {"samples": n, "total": n, "seqs": gone}
    q.close()
    q2 = opened(tmp_path / "q.db", max_samples=10)
    assert q2.samples == q.samples  # the count survives a restart
    q2.close()


@in_loop
async def test_a_batch_chosen_for_eviction_is_never_handed_out_meanwhile(tmp_path: Path) -> None:
    q = opened(tmp_path / "q.db", max_samples=2)
    for i in range(3):
        await q.put(7, i, 0, [i, i], {})
    await q.seal(2)  # three batches of 2
    seqs = [s for s, _ in q.batches(0, 10)]
    with writes_held(tmp_path / "q.db"):
        eviction = asyncio.ensure_future(q.enforce_limit(lambda: {seqs[0]}))
        await asyncio.sleep(0)  # it has chosen (and hidden) its victims; its write waits for the lock
        assert not eviction.done()
        assert [s for s, _ in q.batches(0, 10)] == [seqs[0]] and q.newest_batch() == q.batches(0, 1)[0]
    n, gone = await eviction
    assert (n, gone) == (4, seqs[1:]) and q.samples == 2 and q.backlog() == 1
    q.close()


@in_loop
async def test_a_batch_being_evicted_stays_the_oldest_waiting_until_its_eviction_is_counted(tmp_path: Path) -> None:
    # a heartbeat taken meanwhile says the oldest batch waiting and the count evicted: the platform calls
    # every batch below that oldest, neither stored nor counted evicted, a gap (acknowledged, never stored)
    q = opened(tmp_path / "q.db", max_samples=2)
    for i in range(3):
        await q.put(7, i, 0, [i, i], {})
    await q.seal(2)
    seqs = [s for s, _ in q.batches(0, 10)]
    with writes_held(tmp_path / "q.db"):
        eviction = asyncio.ensure_future(q.enforce_limit(set))
        await asyncio.sleep(0)  # its victims (the two oldest) are chosen; its write waits for the lock
        assert not eviction.done()
        assert (q.oldest_seq(), q.meta("evicted_total")) == (seqs[0], 0)
    assert await eviction == (4, seqs[:2])
    assert (q.oldest_seq(), q.meta("evicted_total")) == (seqs[2], 4)
    q.close()


@in_loop
async def test_untrusted_readings_wait_then_are_rebased(tmp_path: Path) -> None:
    q = opened(tmp_path / "q.db")
    await q.put_many(7, [(5_000, 0, [1.0], {})], TimeBase("boot-1", False, 0))  # monotonic ms 5000
    assert await q.seal(100, TimeBase("boot-1", False, 0)) == 0  # time unknown yet: held
    assert await q.seal(100, TimeBase("boot-1", True, 1_790_000_000_000)) == 1
    b = wire.decode_batch(q.batches(0, 1)[0][1])
    assert b.base_ts_ms == 1_790_000_005_000
    q.close()


@in_loop
async def test_untrusted_readings_of_an_earlier_boot_go_out_with_unknown_time(tmp_path: Path) -> None:
    q = opened(tmp_path / "q.db")
    await q.put_many(7, [(5_000, 0, [1.0], {})], TimeBase("boot-0", False, 0))
    assert await q.seal(100, TimeBase("boot-1", True, 1_790_000_000_000)) == 1
    assert wire.decode_batch(q.batches(0, 1)[0][1]).base_ts_ms == 0
    q.close()


@in_loop
async def test_events_are_durable_until_acknowledged(tmp_path: Path) -> None:
    q = opened(tmp_path / "q.db")
    await q.put_event(b"one")
    q.put_event_now(b"two")
    (i1, p1), (i2, _) = q.events(10)
    assert p1 == b"one"
    q.ack_event(i1)
    assert [i for i, _ in q.events(10)] == [i2]
    await settled()
    assert [i for i, _ in q.events(10)] == [i2]
    q.close()


@in_loop
async def test_a_backlog_of_large_groups_seals_into_full_batches_in_order(tmp_path: Path) -> None:
    q = opened(tmp_path / "q.db")
    await q.put_many(7, [(1000 + i, 0, list(range(i, i + 100)), {}) for i in range(25)], TimeBase("", True, 0))
    assert await q.seal(max_samples=1000) == 3  # 10 + 10 + 5 groups of 100
    batches = [wire.decode_batch(p) for _, p in q.batches(0, 10)]
    assert [sum(len(g.values) for g in b.groups) for b in batches] == [1000, 1000, 500]
    assert [b.base_ts_ms + g.dt_ms for b in batches for g in b.groups] == [1000 + i for i in range(25)]
    assert [g.values[0] for b in batches for g in b.groups] == list(range(25))
    assert q.depth() == (2500, 0)
    q.close()


@in_loop
async def test_a_long_backlog_is_sealed_in_steps_with_readings_written_between(tmp_path: Path) -> None:
    from boxd.queue import SEAL_STEP

    q = opened(tmp_path / "q.db")
    await q.put_many(7, [(1000 + i, 0, [i], {}) for i in range(3 * SEAL_STEP + 5)], TimeBase("", True, 0))
    assert await q.seal(max_samples=1) == 3 * SEAL_STEP + 5
    assert [s for s, _ in q.batches(0, 1000)] == list(range(1, 3 * SEAL_STEP + 6))
    q.close()


@in_loop
async def test_evicting_readings_not_yet_batched_skips_a_batch_number_said_evicted(tmp_path: Path) -> None:
    """A span still queued may refer to a value evicted: the gap in batch numbers tells the cloud never to
    resolve it past the gap (report on change, proto.wire)."""
    q = opened(tmp_path / "q.db", max_samples=5)
    await q.put(7, 1, 0, [1.0, 2.0], {})
    await q.seal(10)  # batch 1
    await q.put(7, 2, 0, [3.0, 4.0], {})
    await q.put(7, 3, 0, [5.0, 6.0], {})
    await q.put_many(7, [(4, 0, 2, {})], TimeBase("", True, 0))  # a span: counted one

    def event(n: int, total: int, gone: list[int]) -> bytes:
        return wire.encode_doc({"samples": n, "seqs": gone})

    n, gone = await q.enforce_limit(lambda: {1}, event)  # batch 1 in flight: pending groups go
    assert n == 2 and gone == []
    ((_, payload),) = q.events(10)
    assert wire.decode_doc(payload, {}) == {"samples": 2, "seqs": [2]}  # number 2 skipped, said evicted
    await q.seal(10)
    assert [s for s, _ in q.batches(0, 10)] == [1, 3]
    b = wire.decode_batch(q.batches(1, 1)[0][1])
    assert [(g.first, g.values, g.unchanged) for g in b.groups] == [(0, [5.0, 6.0], 0), (0, [], 2)]
    q.close()


@in_loop
async def test_evictions_while_no_event_was_handed_out_are_one_event(tmp_path: Path) -> None:
    """An outage evicts after every poll: one eviction event for all of it (not one message per poll
    for the broker's per-Box rate once the link is back), the batch numbers of each said; once handed
    out (perhaps to the broker) an event is never changed: the next eviction is a new one."""
    from boxd.fieldbus import merge_evictions
    from proto.uplink import Evicted, decode_event

    q = opened(tmp_path / "q.db", max_samples=4)

    def event(n: int, total: int, gone: list[int]) -> bytes:
        return Evicted(0, n, total, [(s, s) for s in gone], 7).encode()

    async def overflow(i: int) -> None:
        await q.put(7, i, 0, [i, i, i], {})
        await q.enforce_limit(set, event, merge_evictions)

    for i in range(4):
        await overflow(i)
    ((_, payload),) = q.events(10)
    ev = decode_event(payload)
    assert isinstance(ev, Evicted) and ev.total == ev.samples == 9 and ev.seqs == [(1, 3)], ev
    await overflow(4)  # handed out above: a new event
    events = [decode_event(p) for _, p in q.events(10)]
    assert len(events) == 2 and events[1].total == 12 and events[1].seqs == [(4, 4)], events  # type: ignore[union-attr]
    q.close()


def test_eviction_events_merge_only_within_one_epoch_and_a_bounded_size() -> None:
    from boxd.fieldbus import MERGED_RANGES, merge_evictions
    from proto.uplink import Evicted, decode_event

    a, b = Evicted(1, 5, 5, [(1, 2)], 7), Evicted(2, 3, 8, [(3, 3), (9, 9)], 7)
    merged = decode_event(merge_evictions(a.encode(), b.encode()) or b"")
    assert merged == Evicted(2, 8, 8, [(1, 3), (9, 9)], 7)
    assert merge_evictions(a.encode(), Evicted(2, 3, 8, [(3, 3)], 8).encode()) is None  # another epoch
    many = Evicted(1, 5, 5, [(2 * k, 2 * k) for k in range(MERGED_RANGES)], 7)
    assert merge_evictions(many.encode(), Evicted(2, 1, 6, [(999, 999)], 7).encode()) is None
    assert merge_evictions(b"junk", b.encode()) is None
