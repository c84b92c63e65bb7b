"""The durable queue: order, sealing, acknowledgement, and survival across reopen."""

from __future__ import annotations

from pathlib import Path

from boxd.queue import Queue, TimeBase
from proto import wire


def opened(path: Path) -> Queue:
    q = Queue(path)
    q.open()
    return q


def test_batches_keep_order_and_leave_only_when_acked(tmp_path: Path) -> None:
    q = opened(tmp_path / "q.db")
    for i in range(10):
        q.put(7, 1000 + i, 0, [i, i + 0.5], {})
    assert q.depth() == (0, 20)
    assert q.seal(max_samples=6) == 4  # 3 groups of 2 per batch, then the last group
    seqs = [s for s, _ in q.batches(0, 100)]
    assert seqs == sorted(seqs) and len(seqs) == 4
    first = wire.decode_batch(q.batches(0, 1)[0][1])
    assert [g.values for g in first.groups] == [[0, 0.5], [1, 1.5], [2, 2.5]]
    assert [g.dt_ms for g in first.groups] == [0, 1, 2] and first.base_ts_ms == 1000
    q.ack(seqs[0])
    assert [s for s, _ in q.batches(0, 100)] == seqs[1:]
    assert q.depth() == (14, 0)


def test_everything_survives_a_reopen_with_the_same_epoch(tmp_path: Path) -> None:
    q = opened(tmp_path / "q.db")
    q.put(7, 1, 0, [1], {})
    q.seal(100)
    q.put(7, 2, 0, [2], {0: 1})
    before = (q.epoch, q.batches(0, 10))
    q.close()  # as after a crash: nothing but the file remains
    q2 = opened(tmp_path / "q.db")
    assert (q2.epoch, q2.batches(0, 10)) == before
    assert q2.depth() == (1, 1)
    q2.seal(100)
    seqs = [s for s, _ in q2.batches(0, 10)]
    assert seqs == [before[1][0][0], before[1][0][0] + 1]  # numbering goes on


def test_sequence_numbers_are_never_reused_after_acks(tmp_path: Path) -> None:
    q = opened(tmp_path / "q.db")
    q.put(7, 1, 0, [1], {})
    q.seal(10)
    (s1, _), = q.batches(0, 10)
    q.ack(s1)
    q.put(7, 2, 0, [2], {})
    q.seal(10)
    (s2, _), = q.batches(0, 10)
    assert s2 > s1


def test_a_new_queue_gets_a_new_epoch(tmp_path: Path) -> None:
    assert opened(tmp_path / "a.db").epoch != opened(tmp_path / "b.db").epoch


def test_a_table_change_starts_a_new_batch(tmp_path: Path) -> None:
    q = opened(tmp_path / "q.db")
    q.put(1, 1, 0, [1], {})
    q.put(2, 2, 0, [2], {})
    assert q.seal(100) == 2
    assert [wire.decode_batch(p).table_id for _, p in q.batches(0, 10)] == [1, 2]


def test_the_oldest_are_evicted_beyond_the_limit_never_a_batch_in_flight(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q.db", max_samples=10)
    q.open()
    for i in range(5):
        q.put(7, i, 0, [i, i], {})
    q.seal(4)  # batches of 2 groups: seqs 1, 2, 3 (last has 1 group)
    seqs = [s for s, _ in q.batches(0, 10)]
    for i in range(5, 8):
        q.put(7, i, 0, [i, i], {})
    assert q.samples == 16
    n, gone = q.enforce_limit(in_flight={seqs[0]})
    assert n >= 6 and q.samples <= 10
    assert seqs[0] not in gone and gone == [seqs[1], seqs[2]][: len(gone)]
    assert seqs[0] in [s for s, _ in q.batches(0, 10)]
    q.close()
    q2 = Queue(tmp_path / "q.db", max_samples=10)
    q2.open()
    assert q2.samples == q.samples  # the count survives a restart


def test_untrusted_readings_wait_then_are_rebased(tmp_path: Path) -> None:
    from boxd.queue import TimeBase

    q = opened(tmp_path / "q.db")
    q.put_many(7, [(5_000, 0, [1.0], {})], TimeBase("boot-1", False, 0))  # monotonic ms 5000
    assert q.seal(100, TimeBase("boot-1", False, 0)) == 0  # time unknown yet: held
    assert q.seal(100, TimeBase("boot-1", True, 1_790_000_000_000)) == 1
    b = wire.decode_batch(q.batches(0, 1)[0][1])
    assert b.base_ts_ms == 1_790_000_005_000


def test_untrusted_readings_of_an_earlier_boot_go_out_with_unknown_time(tmp_path: Path) -> None:
    from boxd.queue import TimeBase

    q = opened(tmp_path / "q.db")
    q.put_many(7, [(5_000, 0, [1.0], {})], TimeBase("boot-0", False, 0))
    assert q.seal(100, TimeBase("boot-1", True, 1_790_000_000_000)) == 1
    assert wire.decode_batch(q.batches(0, 1)[0][1]).base_ts_ms == 0


def test_events_are_durable_until_acknowledged(tmp_path: Path) -> None:
    q = opened(tmp_path / "q.db")
    q.put_event(b"one")
    q.put_event(b"two")
    (i1, p1), (i2, _) = q.events(10)
    assert p1 == b"one"
    q.ack_event(i1)
    assert [i for i, _ in q.events(10)] == [i2]


def test_a_backlog_of_large_groups_seals_into_full_batches_in_order(tmp_path: Path) -> None:
    q = opened(tmp_path / "q.db")
    q.put_many(7, [(1000 + i, 0, list(range(i, i + 100)), {}) for i in range(25)], TimeBase("", True, 0))
    assert q.seal(max_samples=1000) == 3  # 10 + 10 + 5 groups of 100
    batches = [wire.decode_batch(p) for _, p in q.batches(0, 10)]
    assert [sum(len(g.values) for g in b.groups) for b in batches] == [1000, 1000, 500]
    assert [b.base_ts_ms + g.dt_ms for b in batches for g in b.groups] == [1000 + i for i in range(25)]
    assert [g.values[0] for b in batches for g in b.groups] == list(range(25))
    assert q.depth() == (2500, 0)
