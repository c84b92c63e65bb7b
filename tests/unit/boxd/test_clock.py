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
