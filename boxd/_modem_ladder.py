"""The modem's recovery ladder: what to do when the cellular link stops working (pure: no I/O, no clock).

Rungs, cheapest first: reconnect the data bearer, register again, reset the modem, power-cycle it
(a root unit cuts its USB power or pulls its reset line), reboot the Box. `Ladder.step(evidence)`
is called every check with what the daemon knows and returns the rung to climb now, or None.

- **Trouble** is evidence from the uplink and the modem, not a ping: the uplink has owed an
  acknowledgement (or been disconnected) for `silent_s`, and the platform's host did not answer a TCP
  handshake either (`path_ok` is not True: when it answers, the network works and the fault is the
  platform's, and no rung would mend it). A modem that does not answer its port is trouble only
  with a silent uplink: an AT port that hangs while data flows is not worth cutting the link.
- Each rung has a **timeout** to bring the link back; the next rung comes after it and a **jittered
  pause** (uniform in 0..`backoff_s`, so that Boxes of one cell do not all act at once). A modem that
  does not answer skips the rungs that need it to answer (straight to the power-cycle).
- Resets, power-cycles and reboots spend a **budget** per hour and per day (`Ledger`, kept across
  reboots by the caller); reboots have their own per day. With the budget spent, only the free rungs
  are tried, at a pause that doubles each round (to an hour). A reboot is never done while another
  uplink carries the Box's link.
- A **configuration fault** (no SIM, wrong PIN, APN refused, registration denied) holds the ladder:
  no reset mends it, and a reset loop is how a wrong APN kills a router.
- Link back: the ladder records the `Recovery` (rung, why, how long) and starts from the bottom.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from boxconfig.modem import LadderSettings

RUNGS = ("reconnect", "reregister", "reset", "power_cycle", "reboot")
HARDWARE = frozenset({"reset", "power_cycle", "reboot"})
NEEDS_MODEM = frozenset({"reconnect", "reregister", "reset"})  # rungs the modem must answer for
WORDS = {"reconnect": "reconnecting the data bearer", "reregister": "registering with the network again",
         "reset": "resetting the modem", "power_cycle": "power-cycling the modem", "reboot": "rebooting the Box"}
DAY_S, HOUR_S = 86400.0, 3600.0
MAX_CYCLE_PAUSE_S = 3600.0


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the daemon knows at one check."""

    now: float  # monotonic seconds
    wall: float  # the wall clock (budgets are kept across reboots)
    link_ok: bool  # the cellular path carries the uplink (or, on standby, could)
    silent_s: float  # how long the uplink has owed an acknowledgement or been disconnected
    modem_answers: bool
    path_ok: bool | None = None  # a TCP handshake with the platform's host answered (None: not tried)
    fault: str = ""  # a configuration fault's cause
    other_wan: bool = False  # another uplink carries the Box's link


@dataclass(frozen=True, slots=True)
class Action:
    """A rung to climb now, and why."""

    rung: str
    why: str

    @property
    def words(self) -> str:
        """What is being done, for a person."""
        return f"{WORDS[self.rung]}: {self.why}"


@dataclass(frozen=True, slots=True)
class Recovery:
    """How the last trouble ended."""

    rung: str  # the last rung climbed ("" : the link came back before any)
    why: str
    wall: float  # when the trouble began
    took_s: float


@dataclass
class Ledger:
    """When the hardware rungs were used (wall clock), for the budgets."""

    hardware: list[float] = field(default_factory=list)
    reboots: list[float] = field(default_factory=list)

    def prune(self, wall: float) -> None:
        """Forget what is older than a day (and what a clock step put more than a day ahead)."""
        self.hardware = [t for t in self.hardware if wall - DAY_S < t <= wall + DAY_S]
        self.reboots = [t for t in self.reboots if wall - DAY_S < t <= wall + DAY_S]

    def refusal(self, rung: str, wall: float, s: LadderSettings) -> str:
        """Why the budget does not allow `rung` now ("" when it does)."""
        if rung not in HARDWARE:
            return ""
        self.prune(wall)
        hour = sum(1 for t in self.hardware if t > wall - HOUR_S)
        if hour >= s.resets_per_hour:
            return f"{s.resets_per_hour} reset(s) per hour already used"
        if len(self.hardware) >= s.resets_per_day:
            return f"{s.resets_per_day} reset(s) per day already used"
        if rung == "reboot" and len(self.reboots) >= s.reboots_per_day:
            return f"{s.reboots_per_day} reboot(s) per day already used"
        return ""

    def record(self, rung: str, wall: float) -> None:
        """A hardware rung was used."""
        if rung in HARDWARE:
            self.hardware.append(wall)
        if rung == "reboot":
            self.reboots.append(wall)

    def to_doc(self) -> dict[str, list[float]]:
        """For the caller's file."""
        return {"hardware": list(self.hardware), "reboots": list(self.reboots)}

    @classmethod
    def from_doc(cls, doc: object) -> Ledger:
        """From the caller's file; anything malformed is dropped (at most 1,000 entries each)."""
        if not isinstance(doc, dict):
            return cls()

        def times(key: str) -> list[float]:
            v = doc.get(key)
            return [float(t) for t in v[-1000:] if isinstance(t, int | float) and not isinstance(t, bool)] \
                if isinstance(v, list) else []

        return cls(times("hardware"), times("reboots"))


class Ladder:
    """The ladder's state. No I/O: the caller does what `step` returns."""

    def __init__(self, settings: LadderSettings, ledger: Ledger | None = None,
                 rng: random.Random | None = None) -> None:
        self.settings = settings
        self.ledger = ledger or Ledger()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.level = 0  # rungs climbed in this trouble (0: none)
        self.trouble_since: float | None = None
        self.trouble_wall = 0.0
        self.next_at = 0.0
        self.cycles = 0  # rounds of the whole ladder in this trouble
        self.last: Action | None = None
        self.recovered: Recovery | None = None
        self.held = ""  # why a rung is not climbed (budget spent, configuration fault)

    def timeout(self, rung: str) -> float:
        """The rung's time to bring the link back."""
        s = self.settings
        return float({"reconnect": s.bearer_timeout_s, "reregister": s.register_timeout_s, "reset": s.reset_timeout_s,
                      "power_cycle": s.power_timeout_s, "reboot": s.power_timeout_s}[rung])

    def in_trouble(self, ev: Evidence) -> bool:
        """Whether the evidence says the cellular link is down (and the platform is not to blame)."""
        return not ev.link_ok and ev.silent_s >= self.settings.silent_s and ev.path_ok is not True

    def wants_probe(self, ev: Evidence) -> bool:
        """Whether a TCP handshake with the platform should be tried (the uplink is silent long enough)."""
        return not ev.fault and not ev.link_ok and ev.silent_s >= self.settings.silent_s

    def step(self, ev: Evidence) -> Action | None:
        """The rung to climb now, or None (all is well, waiting for a rung to work, or held)."""
        if ev.fault:
            self._end(ev, "")
            self.held = f"configuration fault ({ev.fault}): no reset would mend it"
            return None
        if not self.in_trouble(ev):
            if self.trouble_since is not None and ev.link_ok:
                self._end(ev, self.last.rung if self.last else "")
            self.held = ""
            return None
        if self.trouble_since is None:
            self.trouble_since, self.trouble_wall, self.level, self.cycles = ev.now, ev.wall, 0, 0
            self.next_at, self.last, self.held = ev.now, None, ""
        if ev.now < self.next_at:
            return None
        return self._climb(ev)

    def _climb(self, ev: Evidence) -> Action | None:
        s = self.settings
        for index in range(self.level, len(RUNGS)):
            rung = RUNGS[index]
            if rung in NEEDS_MODEM and not ev.modem_answers:
                continue
            if rung == "reboot" and ev.other_wan:
                continue
            refusal = self.ledger.refusal(rung, ev.wall, s)
            if refusal:
                self.held = f"{WORDS[rung]} is held back: {refusal}"
                break
            self.level = index + 1
            self.ledger.record(rung, ev.wall)
            self.next_at = ev.now + self.timeout(rung) + self._rng.uniform(0, s.backoff_s)
            self.held = ""
            why = ("the modem does not answer" if not ev.modem_answers
                   else f"no acknowledgement from the platform for {ev.silent_s:.0f} s")
            self.last = Action(rung, why)
            return self.last
        # the top of the ladder, or a rung the budget holds back: start again from the bottom, after a pause
        self.cycles += 1
        self.level = 0
        pause = min(MAX_CYCLE_PAUSE_S, s.backoff_s * 2 ** min(self.cycles, 12))
        self.next_at = ev.now + self._rng.uniform(pause / 2, pause)
        return None

    def _end(self, ev: Evidence, rung: str) -> None:
        if self.trouble_since is not None and not ev.fault:
            why = self.last.why if self.last else "the link came back by itself"
            self.recovered = Recovery(rung, why, self.trouble_wall, ev.now - self.trouble_since)
        self.trouble_since, self.level, self.cycles, self.last = None, 0, 0, None

    def state(self, now: float | None = None) -> dict[str, object]:
        """For the status file and `boxctl modem status`."""
        now = time.monotonic() if now is None else now
        out: dict[str, object] = {"level": self.level, "held": self.held}
        if self.trouble_since is not None:
            out["trouble_s"] = round(now - self.trouble_since, 1)
            out["doing"] = self.last.words if self.last else ""
        if self.recovered is not None:
            r = self.recovered
            out["last_recovery"] = {"rung": r.rung, "why": r.why, "at": r.wall, "took_s": round(r.took_s, 1)}
        return out
