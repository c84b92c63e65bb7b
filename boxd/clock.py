"""Time on a Box without a real-time clock (pure logic over injectable time sources).

A Box may boot with its clock in 1970 (no RTC, no NTP yet) or anywhere else. The
rules:

* The clock is *implausible* while it reads earlier than the software's build time.
* The platform tells the Box its time over the authenticated MQTT session
  (`boxes/<id>/down/time`). A Box whose clock is off by more than `MAX_SKEW_MS`
  keeps a *correction* (platform minus system) and applies it to every timestamp;
  the correction is dropped if the system clock itself steps later (NTP arrived).
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
        self._raw_offset_at_correction = 0

    def _raw_offset(self) -> int:
        return self._wall() - self._mono()

    def _check_step(self) -> None:
        if self.correction_ms and abs(self._raw_offset() - self._raw_offset_at_correction) > STEP_MS:
            log.info("the system clock stepped; dropping the platform correction of %d ms", self.correction_ms)
            self.correction_ms = 0
            self._confirmed = False

    def now_ms(self) -> int:
        """Wall-clock time as the Box best knows it."""
        self._check_step()
        return self._wall() + self.correction_ms

    def trusted(self) -> bool:
        """Whether timestamps can be believed now."""
        self._check_step()
        return self._confirmed or self._wall() + self.correction_ms >= self.build_time_ms

    def plausible_system_clock(self) -> bool:
        """Whether the system clock alone is plausible (not before the build)."""
        return self._wall() >= self.build_time_ms

    def platform_time(self, platform_ms: int, rtt_ms: int = 0) -> None:
        """The platform said what time it is (half the round trip added)."""
        estimate = platform_ms + rtt_ms // 2
        skew = estimate - self._wall()
        self._raw_offset_at_correction = self._raw_offset()
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
            return reading_wall_ms + self.correction_ms
        return reading_wall_ms - self._raw_offset()
