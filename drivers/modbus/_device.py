"""One device's polling state: schedule, learned read limits, backoff, values (pure).

Does: keep, for one device of a bus, when each of its interval groups is next due
(anchored at the device's stagger offset, so groups that coincide are read together
and late polls skip missed slots instead of bunching), run one poll as a sequence of
requests (`Poll`: smallest request first; the first communication fault skips the
rest, so a dead device costs one request's timeout times its tries per poll), learn a lower
read limit when the device refuses a large read (exception 2, 3 or 4) or does not
answer it while smaller ones work (halving, never below what it has already answered
nor below its largest point; remembered for the device's life), back a failing
device off (its polls spaced out up to `BACKOFF_MAX_S`), and turn results into
samples and log events. Does not: do I/O (`_bus`), pick which device goes next
(`_sched`), or plan reads itself (`_plan`).

The clock is whatever the caller passes in (monotonic seconds): tests use a fake one.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from drivers._types import PointInfo, Quality, Sample, Value
from drivers.modbus._codec import PointCodec
from drivers.modbus._config import ModbusPoint
from drivers.modbus._plan import ReadPlanner, ReadRequest, fail_request, interval_groups, unpack_response

BACKOFF_MAX_S: Final = 60.0
COINCIDE_S: Final = 0.001  # groups due within this of each other are read together
SIZE_EXCEPTIONS: Final = frozenset({2, 3, 4})  # illegal address, illegal value, device failure
COMM_FAULTS: Final = frozenset({Quality.NO_ANSWER, Quality.BAD_FRAME, Quality.NOT_CONNECTED})
EXCEPTION_NAMES: Final[dict[int, str]] = {
    1: "illegal function", 2: "illegal data address", 3: "illegal data value",
    4: "device failure", 5: "acknowledge", 6: "device busy", 8: "memory parity error",
    10: "gateway path unavailable", 11: "gateway target failed to respond",
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one request came to, after its tries."""

    quality: Quality
    data: Sequence[int] | Sequence[bool] = ()
    exception_code: int | None = None
    detail: str = ""
    tries: int = 1
    timeouts: int = 0

    def describe(self) -> str:
        """The quality and what the device said, e.g. "DEVICE_EXCEPTION 2 (illegal data address)"."""
        text = self.quality.name
        if self.exception_code is not None:
            name = EXCEPTION_NAMES.get(self.exception_code, "unknown")
            text += f" {self.exception_code} ({name})"
        return f"{text}: {self.detail}" if self.detail else text


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """A device as the bus runs it (TCP and RTU devices alike)."""

    name: str
    unit_id: int
    poll_interval_s: float
    points: tuple[ModbusPoint, ...]
    codecs: tuple[PointCodec, ...]
    max_gap: int
    max_registers: int
    timeout_s: float
    retries: int
    write_multiple: bool
    where: str  # for logs, e.g. "modbus device ahu1 (10.0.0.5:502 unit 1)"


@dataclass(slots=True)
class DeviceStats:
    """Counters of one device."""

    requests: int = 0  # frames sent (every try)
    errors: int = 0  # requests that failed after their tries
    timeouts: int = 0  # tries that got no answer
    cycles: int = 0  # polls completed


@dataclass(slots=True)
class Event:
    """Something to log, once."""

    level: int
    message: str


class DeviceRuntime:
    """The polling state of one device, `index` of `count` on its bus.

    Its polls start `(index + phase) / count` of an interval into the bus's schedule: the
    devices of a line are spread over the interval, and `phase` (0..1) spreads buses of one
    device each (Modbus TCP) against each other.
    """

    def __init__(self, spec: DeviceSpec, index: int, count: int, start: float = 0.0, phase: float = 0.0) -> None:
        self.spec = spec
        self.infos = tuple(PointInfo(f"{spec.name}.{p.name}", p.unit, p.type) for p in spec.points)
        self.planner = ReadPlanner(spec.points, max_gap=spec.max_gap, max_registers=spec.max_registers)
        self.groups = interval_groups(spec.points, spec.poll_interval_s)
        self.fastest_s = min(self.groups) / 1000
        self.offset_s = spec.poll_interval_s * (index + phase) / max(count, 1)
        self.anchor = start + self.offset_s
        self._slot = dict.fromkeys(self.groups, 0)  # next slot of each group
        self.values: list[Value] = [None] * len(spec.points)
        self.qualities: list[Quality] = [Quality.NOT_CONNECTED] * len(spec.points)
        self.proven = {False: 0, True: 0}  # the largest register / bit read answered
        self.failures = 0  # polls in a row in which nothing answered
        self.retry_at: float | None = None
        self.stats = DeviceStats()
        self.events: list[Event] = []
        self._status: dict[tuple[str, int, int], str] = {}  # failing requests and why
        self._logged: tuple[str, ...] | None = None
        self._lowered: list[str] = []  # limits learned during the poll under way

    # -- schedule ---------------------------------------------------------------------

    def restart(self, start: float) -> None:
        """Start the schedule again from `start` (the bus runs again); learned limits stay."""
        self.anchor = start + self.offset_s
        self._slot = dict.fromkeys(self.groups, 0)
        self.failures = 0
        self.retry_at = None

    def due_of(self, group_ms: int) -> float:
        """When a group is next due."""
        return self.anchor + self._slot[group_ms] * group_ms / 1000

    def due_at(self) -> float:
        """When the device next wants the bus."""
        if self.retry_at is not None:
            return self.retry_at
        return min(self.due_of(ms) for ms in self.groups)

    def begin(self, now: float) -> Poll:
        """Start a poll of every group due at `now` (all of them when retrying after faults)."""
        if self.retry_at is not None:
            due = tuple(self.groups)
        else:
            due = tuple(ms for ms in self.groups if self.due_of(ms) <= now + COINCIDE_S)
        indexes = sorted({i for ms in due for i in self.groups[ms]})
        return Poll(self, due, indexes)

    def reschedule(self, groups: Sequence[int], now: float, failed: bool) -> None:
        """After a poll of `groups`: their next slots after `now`, and backoff if it failed."""
        for ms in groups if self.retry_at is None else self.groups:
            self._slot[ms] = max(self._slot[ms], math.floor((now - self.anchor) * 1000 / ms) + 1)
        self.failures = self.failures + 1 if failed else 0
        self.retry_at = None
        if self.failures >= 2:
            delay = max(self.fastest_s, min(BACKOFF_MAX_S, self.fastest_s * 2 ** (self.failures - 1)))
            self.retry_at = now + delay
            if delay > self.fastest_s:
                self.events.append(Event(logging.INFO, (
                    f"{self.spec.where}: {self.failures} polls without an answer: "
                    f"next try in {delay:g} s"
                )))

    # -- learning the read limit ------------------------------------------------------

    def size_suspect(self, request: ReadRequest, outcome: Outcome, answered: bool) -> bool:
        """Whether a failed read may have failed for its size alone."""
        if request.slots < 2 or request.count <= self.proven[request.bits]:
            return False
        if outcome.quality is Quality.DEVICE_EXCEPTION:
            return outcome.exception_code in SIZE_EXCEPTIONS
        alive = answered or (self.failures == 0 and self.proven[request.bits] > 0)
        return outcome.quality is Quality.NO_ANSWER and alive

    def learn_limit(self, request: ReadRequest, outcome: Outcome) -> bool:
        """Halve the limit after a refused large read; True if it went down (logged once,
        at the end of the poll, with every step)."""
        bits = request.bits
        if not self.planner.lower(bits, max(request.count // 2, self.proven[bits])):
            return False
        self._status.clear()  # the requests changed
        self._lowered.append(f"{request.count} ({outcome.describe()})")
        return True

    def _log_limits(self) -> None:
        if not self._lowered:
            return
        self.events.append(Event(logging.WARNING, (
            f"{self.spec.where}: refused reads of {', '.join(self._lowered)}: reads limited to "
            f"{self.planner.max_registers} registers and {self.planner.max_bits} bits from now on"
        )))
        self._lowered.clear()

    # -- results ----------------------------------------------------------------------

    def note(self, request: ReadRequest, outcome: Outcome) -> None:
        """Remember how a request went, for the state log."""
        key = (request.table, request.start, request.count)
        if outcome.quality is Quality.GOOD:
            self._status.pop(key, None)
            self.proven[request.bits] = max(self.proven[request.bits], request.count)
        else:
            self._status[key] = outcome.describe()

    def log_state(self) -> None:
        """One event when the set of failing requests (or why they fail) changes, and one
        when the poll taught us a lower read limit."""
        self._log_limits()
        state = tuple(sorted(f"{t} {s}+{c}: {why}" for (t, s, c), why in self._status.items()))
        if state == self._logged:
            return
        first = self._logged is None
        self._logged = state
        where = self.spec.where
        if not state:
            count = len(self.planner.plan(range(len(self.spec.points))))
            word = "up" if first else "back"
            self.events.append(Event(logging.INFO, f"{where}: {word}, {count} read(s) per full poll"))
            return
        whys = {s.split(": ", 1)[1] for s in state}
        reasons = {why.split(":")[0] for why in whys}
        if self.failures and len(reasons) == 1 and reasons <= {q.name for q in COMM_FAULTS}:
            detail = min(whys).partition(": ")[2]
            self.events.append(Event(logging.WARNING, (
                f"{where}: lost: {reasons.pop()}" + (f" ({detail})" if detail else "")
            )))
            return
        more = f"; and {len(state) - 4} more" if len(state) > 4 else ""
        self.events.append(Event(logging.WARNING, (
            f"{where}: {len(state)} read(s) failing: {'; '.join(state[:4])}{more}"
        )))


@dataclass(slots=True)
class Poll:
    """One poll of one device: its requests, run one at a time by the bus."""

    device: DeviceRuntime
    groups: tuple[int, ...]
    indexes: list[int]
    pending: deque[ReadRequest] = field(default_factory=deque)
    answered: bool = False  # some request of this poll was answered (even by an exception)
    sent: int = 0  # requests recorded
    ts_ms: int | None = None

    def __post_init__(self) -> None:
        plan = self.device.planner.plan(self.indexes)
        self.pending.extend(sorted(plan, key=lambda r: r.count))

    def next_request(self) -> ReadRequest | None:
        """The next request to send, or None when the poll is over."""
        return self.pending[0] if self.pending else None

    def record(self, outcome: Outcome, wall_ms: int) -> None:
        """The outcome of the request `next_request` returned."""
        d = self.device
        request = self.pending.popleft()
        self.sent += 1
        if self.ts_ms is None:
            self.ts_ms = wall_ms
        d.stats.requests += outcome.tries
        d.stats.timeouts += outcome.timeouts
        if outcome.quality is Quality.GOOD:
            unpack_response(request, outcome.data, d.spec.codecs, d.values, d.qualities)
            self.answered = True
            d.note(request, outcome)
            return
        if d.size_suspect(request, outcome, self.answered) and d.learn_limit(request, outcome):
            indexes = [i for r in (request, *self.pending) for i, _ in r.members]
            self.pending = deque(sorted(d.planner.plan(indexes), key=lambda r: r.count))
            return
        d.stats.errors += 1
        d.note(request, outcome)
        fail_request(request, outcome.quality, d.values, d.qualities)
        if outcome.quality not in COMM_FAULTS:
            self.answered = True
            return
        while self.pending:  # the device does not talk: do not spend more time on it now
            rest = self.pending.popleft()
            fail_request(rest, outcome.quality, d.values, d.qualities)
            d.note(rest, outcome)

    def finish(self, now: float, wall_ms: int) -> list[Sample]:
        """Close the poll: reschedule the device and return one sample per point read."""
        d = self.device
        d.reschedule(self.groups, now, failed=self.sent > 0 and not self.answered)
        d.stats.cycles += 1
        d.log_state()
        ts = self.ts_ms if self.ts_ms is not None else wall_ms
        return [Sample(d.infos[i].name, ts, d.values[i], d.qualities[i]) for i in self.indexes]
