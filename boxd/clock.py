"""Time on a Box without a real-time clock (pure logic over injectable time sources).

A Box may boot with its clock in 1970 (no RTC, no NTP yet) or anywhere else. The
rules:

* The clock is *implausible* while it reads earlier than the software's build time.
* The platform tells the Box its time over the authenticated MQTT session
  (`boxes/<id>/down/time`). A Box whose clock is off by more than `MAX_SKEW_MS`
  keeps a *correction* (platform minus system) and applies it to every timestamp.
* A step of the system clock (wall-clock time moving against monotonic time by more
  than `STEP_MS`: NTP arriving, a person's `date -s`, a bad RTC read) is noticed at
  the next timestamp. Once the platform has confirmed the time, the step changes
  nothing the Box stamps: the correction takes the step back, so the Box's time goes
  on from the confirmed time by the monotonic clock, and the step is *held* (the
  heartbeat says the clock is not confirmed, so the platform answers with its time,
  which re-anchors the correction on the stepped clock); a reading stamped before the
  step and stored after it is told by its stamp (nearer the clock before the step) and
  stored on the time before it. Before any confirmation the step is taken as it is
  (there is no better time to keep).
* Readings taken while the time is not trusted are stored with their monotonic
  time and their boot id, and re-based to wall-clock time once it is trusted (see
  `boxd.queue`): nothing is published with a garbage timestamp.
* TLS: while the clock is implausible, certificate validity *dates* are not checked
  (chain, signatures, CRL and the server's name still are), so a clock fault cannot
  lock a Box out for ever; as soon as the platform's time is known, dates are
  checked again. See docs/architecture.md, "Time without a real-time clock".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from boxd.queue import TimeBase

log = logging.getLogger("boxd.clock")

BUILD_TIME_MS = 1_793_491_200_000  # 2026-11-01T00:00:00Z; the image build stamps the release's date
MAX_SKEW_MS = 2_000
STEP_MS = 2_000  # a change of wall-minus-monotonic larger than this is a step of the system clock


def boot_id() -> str:
    """This boot's id (changes at every reboot, when monotonic time restarts)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown-boot"


class Clock:
    """The Box's idea of the time. The constructor reads nothing but the boot id."""

    def __init__(
        self,
        build_time_ms: int = BUILD_TIME_MS,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        mono_ms: Callable[[], int] = lambda: time.monotonic_ns() // 1_000_000,
        boot: str | None = None,
    ) -> None:
        self.build_time_ms = build_time_ms
        self._wall, self._mono = wall_ms, mono_ms
        self.boot = boot or boot_id()
        self.correction_ms = 0
        self._confirmed = False  # the platform has told us the time
        self.held = False  # the system clock stepped since the platform confirmed the time
        self._anchor: int | None = None  # wall minus monotonic when last looked at (a step changes it)
        self._step = 0  # the last step held (ms): a reading stamped before it is still on the old clock

    def _raw_offset(self) -> int:
        return self._wall() - self._mono()

    def _check_step(self) -> None:
        raw = self._raw_offset()
        step = raw - (raw if self._anchor is None else self._anchor)
        self._anchor = raw  # from one look to the next: a slow drift (slewing) is never a step
        if abs(step) <= STEP_MS:
            return
        if self._confirmed:  # keep the confirmed time going on the monotonic clock until the platform speaks
            self.correction_ms -= step
            self.held, self._step = True, step
            log.warning("the system clock stepped %+.1f s; keeping the platform's time until it confirms",
                        step / 1000)
        elif self.correction_ms:
            log.info("the system clock stepped; dropping the platform correction of %d ms", self.correction_ms)
            self.correction_ms = 0

    def now_ms(self) -> int:
        """Wall-clock time as the Box best knows it."""
        self._check_step()
        return self._wall() + self.correction_ms

    def trusted(self) -> bool:
        """Whether timestamps can be believed now."""
        self._check_step()
        return self._confirmed or self._wall() + self.correction_ms >= self.build_time_ms

    def confirmed(self) -> bool:
        """Whether the time is trusted and no step of the system clock is held since the platform
        last confirmed it (the heartbeat's ``clock_ok``: false asks the platform for its time)."""
        return self.trusted() and not self.held

    def plausible_system_clock(self) -> bool:
        """Whether the system clock alone is plausible (not before the build)."""
        return self._wall() >= self.build_time_ms

    def platform_time(self, platform_ms: int, rtt_ms: int = 0) -> None:
        """The platform said what time it is (half the round trip added)."""
        estimate = platform_ms + rtt_ms // 2
        skew = estimate - self._wall()
        self._anchor = self._raw_offset()
        if self.held:
            log.info("the platform's time is known again after the system clock's step")
        self.held = False
        if abs(skew) > MAX_SKEW_MS:
            if skew != self.correction_ms:
                log.warning("the system clock is off by %.1f s; using the platform's time", skew / 1000)
            self.correction_ms = skew
        else:
            self.correction_ms = 0
        self._confirmed = True

    def timebase(self) -> TimeBase:
        """How stored readings of this boot map to wall-clock time now."""
        return TimeBase(self.boot, self.trusted(), self.now_ms() - self._mono())

    def stored_time(self, reading_wall_ms: int) -> int:
        """What to store for a reading stamped `reading_wall_ms` by the system clock.

        Trusted: corrected wall-clock ms. Not trusted: monotonic ms of this boot.
        """
        if self.trusted():
            wall = self._wall()
            if self._step and abs(reading_wall_ms - (wall - self._step)) < abs(reading_wall_ms - wall):
                return reading_wall_ms + self.correction_ms + self._step  # read before the step held
            return reading_wall_ms + self.correction_ms
        return reading_wall_ms - self._raw_offset()
