"""Time without a real-time clock: implausible clocks, platform time, re-basing, clock steps."""

from __future__ import annotations

from boxd.clock import Clock

BUILD = 1_790_000_000_000


class FakeTime:
    def __init__(self, wall: int, mono: int = 5_000) -> None:
        self.wall, self.mono = wall, mono

    def tick(self, ms: int) -> None:
        self.wall += ms
        self.mono += ms


def clock(t: FakeTime) -> Clock:
    return Clock(BUILD, wall_ms=lambda: t.wall, mono_ms=lambda: t.mono, boot="boot-1")


def test_a_clock_before_the_build_is_not_trusted_until_the_platform_speaks() -> None:
    t = FakeTime(wall=10_000)  # 1970
    c = clock(t)
    assert not c.trusted()
    stored = c.stored_time(t.wall)  # held as monotonic time of this boot
    assert stored == t.mono
    t.tick(60_000)
    c.platform_time(BUILD + 100_000)
    assert c.trusted()
    tb = c.timebase()
    assert stored + tb.offset_ms == BUILD + 100_000 - 60_000  # re-based: read 60 s before the platform's "now"
    assert c.now_ms() == BUILD + 100_000


def test_a_plausible_clock_is_trusted_and_a_small_skew_is_not_corrected() -> None:
    t = FakeTime(wall=BUILD + 1_000_000)
    c = clock(t)
    assert c.trusted()
    c.platform_time(t.wall + 500)
    assert c.correction_ms == 0 and c.now_ms() == t.wall


def test_a_large_skew_is_corrected_and_dropped_when_the_system_clock_steps() -> None:
    t = FakeTime(wall=BUILD + 1_000_000)
    c = clock(t)
    c.platform_time(t.wall + 3_600_000)  # the Box is an hour slow
    assert c.now_ms() == t.wall + 3_600_000
    assert c.stored_time(t.wall) == t.wall + 3_600_000
    t.wall += 3_600_000  # NTP steps the system clock
    assert c.now_ms() == t.wall and c.correction_ms == 0


def test_a_confirmed_clock_stepped_forward_then_back_keeps_stamping_true_until_the_platform_speaks() -> None:
    t = FakeTime(wall=BUILD + 1_000_000)
    c = clock(t)
    c.platform_time(t.wall)  # confirmed, no correction
    true = t.wall
    assert c.confirmed()
    t.wall += 3_600_000  # someone steps the system clock an hour ahead (no NTP to set it right)
    t.tick(100)
    true += 100
    assert c.stored_time(t.wall) == true and c.now_ms() == true  # a reading's stamp: the true time, not an hour on
    assert c.trusted() and not c.confirmed()  # its heartbeat asks the platform for its time
    t.wall -= 3 * 3_600_000  # and two hours back from the truth
    t.tick(100)
    true += 100
    assert c.stored_time(t.wall) == true and c.timebase().offset_ms + t.mono == true
    c.platform_time(true)  # the platform answers: the correction is anchored on the stepped clock
    assert c.confirmed() and c.correction_ms == 2 * 3_600_000 and c.now_ms() == true
    t.tick(1_000)
    assert c.now_ms() == true + 1_000


def test_a_step_before_the_platform_confirmed_the_time_is_taken_as_it_is() -> None:
    t = FakeTime(wall=BUILD + 1_000_000)
    c = clock(t)
    assert c.now_ms() == t.wall
    t.wall += 600_000  # NTP sets a clock that was ten minutes slow: nothing better to keep
    assert c.now_ms() == t.wall and c.stored_time(t.wall) == t.wall and c.confirmed()


def test_small_drifts_are_not_steps() -> None:
    t = FakeTime(wall=BUILD + 1_000_000)
    c = clock(t)
    c.platform_time(t.wall)
    t.wall += 1_500  # slewed, or a step within STEP_MS
    assert c.now_ms() == t.wall and c.confirmed()


def test_a_reading_stamped_just_before_a_held_step_is_stored_on_the_time_before_it() -> None:
    t = FakeTime(wall=BUILD + 1_000_000)
    c = clock(t)
    c.platform_time(t.wall)
    read_at = t.wall  # the bus stamps a reading...
    t.wall += 3_600_000  # ...the clock steps before the poll is stored
    assert c.stored_time(read_at) == read_at
    assert c.stored_time(t.wall) == read_at  # and one read after the step: the same instant, truly
