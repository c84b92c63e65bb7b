"""The sample accounting of the loss proofs (tests/support/proofs.py), on literals: what the Box owes,
what counts as lost and as duplicated; and the simulator's served log it reads."""

from __future__ import annotations

from drivers import Value
from drivers.sim._building import BuildingState
from drivers.sim._served import Served, ServedLog
from tests.support.proofs import owed_reads, poll_numbers, tally

IN = (4, 0, 10)  # a request: function code, address, count
HOLD = (3, 0, 10)
COIL = (1, 0, 1)


def read(life: int, unit: int, key: tuple[int, int, int], **values: Value) -> Served:
    return Served(life, unit, key, tuple((f"u{unit}.{k}", v) for k, v in values.items()))


def test_a_poll_is_owed_once_the_next_poll_of_its_device_began_in_the_same_life() -> None:
    reads = [
        read(0, 1, IN, t=1), read(0, 1, HOLD, s=5), read(0, 1, IN, t=2),  # poll 2 began: poll 1 is owed
        read(0, 2, IN, t=7),  # another unit's requests say nothing about unit 1
        read(0, 1, HOLD, s=6),  # ... the last poll of unit 1 is not owed
        read(1, 1, IN, t=3),  # a new life (the Box was killed): the last poll of life 0 stays unowed
    ]
    assert poll_numbers(reads) == [0, 0, 1, 0, 1, 0]
    assert owed_reads(reads) == [True, True, False, False, False, False]


def test_a_crash_between_two_requests_of_a_poll_leaves_the_poll_before_owed_whole() -> None:
    # The bus sends the smallest request first, the counter comes last: the Box froze after the coil
    # of poll 2 was answered, before its input registers were asked for. Poll 1 was emitted (the coil
    # of poll 2 went out after that) and stored whole: nothing is lost. (Counted a request at a time,
    # poll 1's coil was owed and its counter not, so its stored values were not counted: a false loss.)
    reads = [read(0, 1, COIL, fan=True), read(0, 1, IN, reads=1),
             read(0, 1, COIL, fan=True), read(0, 1, IN, reads=2),
             read(0, 1, COIL, fan=True)]
    assert owed_reads(reads) == [True, True, True, True, False]
    stored = [("u1.fan", 10, True, 0), ("u1.reads", 10, 1, 0), ("u1.fan", 20, True, 0), ("u1.reads", 20, 2, 0)]
    assert tally(reads, stored).figures() == {"served": 5, "owed": 4, "stored": 4, "lost": 0, "duplicated": 0}
    # poll 2 lost, though only the coil of poll 3 was served: all of poll 2 is missing
    t = tally(reads, stored[:2])
    assert t.missing == {"u1.fan": [True], "u1.reads": [2]}


def test_lost_and_duplicated_are_counted_per_point_and_value() -> None:
    reads = [read(0, 1, IN, t=1, n=10), read(0, 1, IN, t=2, n=11), read(0, 1, IN, t=2, n=12),
             read(0, 1, IN, t=3, n=13)]
    stored = [("u1.t", 1, 1, 0), ("u1.n", 1, 10, 0),  # the first poll
              ("u1.t", 2, 2, 0), ("u1.n", 2, 11, 0), ("u1.n", 2, 11, 0),  # n=11 stored twice
              # the third poll (t=2, n=12) lost; the fourth (not owed) stored: fine
              ("u1.t", 4, 3, 0), ("u1.n", 4, 13, 0),
              ("u1.t", 5, None, 2)]  # a sample with a fault quality is not a value
    t = tally(reads, stored)
    assert (t.points["u1.t"].lost, t.points["u1.t"].duplicated) == (1, 0)  # one of the two 2s is missing
    assert (t.points["u1.n"].lost, t.points["u1.n"].duplicated) == (1, 1)
    assert t.missing["u1.n"] == [12] and t.extra["u1.n"] == [11]
    assert t.points["u1.t"].faults == 1
    assert t.figures() == {"served": 8, "owed": 6, "stored": 7, "lost": 2, "duplicated": 1}
    assert "u1.n: 1 lost [12], 1 duplicated [11]" in t.describe()


def test_nothing_stored_twice_and_everything_owed_stored_is_a_clean_tally() -> None:
    reads = [read(0, 1, IN, t=1), read(0, 1, IN, t=2)]
    assert tally(reads, [("u1.t", 1, 1, 0)]).figures() == {
        "served": 2, "owed": 1, "stored": 1, "lost": 0, "duplicated": 0}


def test_the_served_log_records_the_points_a_read_covers_and_the_counter_counts_reads() -> None:
    state = BuildingState(counters=True)
    log = ServedLog(state)
    at = next(p.address for name, p in state.box_points(2) if name == "meter1.reads")
    for _ in range(3):
        state.count_read(2, 4, 0, at + 2)  # the meter's input registers, the counter with them
        log.record(2, 4, 0, at + 2)
    state.count_read(2, 4, 0, 2)  # a read that does not cover the counter does not move it
    log.record(2, 4, 0, 2)
    log.new_life()
    log.record(1, 1, 0, 1)  # the AHU's coil (bits: whole words)
    reads = log.reads()
    assert [dict(r.values)["meter1.reads"] for r in reads[:3]] == [1, 2, 3]
    assert [name for name, _ in reads[3].values] == ["meter1.voltage_l1"]
    assert (reads[4].life, reads[4].values) == (1, (("ahu1.fan_running", True),))
    assert "meter1.energy_counter" in dict(reads[0].values)


def test_a_repeated_value_of_a_poll_not_owed_does_not_hide_a_lost_one() -> None:
    # three polls of a fan that is always on; the second poll is lost, the third (the last: not owed) stored
    reads = [read(0, 1, IN, reads=1, fan=True), read(0, 1, IN, reads=2, fan=True), read(0, 1, IN, reads=3, fan=True)]
    stored = [("u1.reads", 10, 1, 0), ("u1.fan", 10, True, 0), ("u1.reads", 30, 3, 0), ("u1.fan", 30, True, 0)]
    t = tally(reads, stored)
    assert t.missing == {"u1.fan": [True], "u1.reads": [2]}
    assert t.figures() == {"served": 6, "owed": 4, "stored": 4, "lost": 2, "duplicated": 0}
