"""The bus scheduler: which request goes on a bus next (pure).

Does: for one bus (a serial line, or one TCP connection) decide, each time the bus is
free, what to do: an urgent job first (writes and on-demand reads, in the order they
came), else the next request of the device poll under way, else a new poll of the
device due first (ties: the device listed first), else wait until the next one is
due. One thing at a time: `next` refuses to hand out work while a request or job is
in flight, so the shell cannot put two requests on the bus. Devices are staggered
across their interval (device k of n starts k/n of its interval late); a failing
device is backed off by its `DeviceRuntime`, and a poll skips the rest of its
requests after a communication fault, so a dead device delays the others by at most
its own timeout times its tries. Does not: do I/O or know about pymodbus (`_bus` is the
shell), or keep any clock of its own: every method takes ``now`` (monotonic seconds).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from drivers._types import Sample
from drivers.modbus._device import DeviceRuntime, Outcome, Poll
from drivers.modbus._plan import ReadRequest

J = TypeVar("J")


@dataclass(frozen=True, slots=True)
class Urgent(Generic[J]):
    """Run this job now (it may use the bus for several requests); then `job_done()`."""

    job: J


@dataclass(frozen=True, slots=True)
class Read:
    """Send this read to this device now; then `record()` its outcome."""

    device: DeviceRuntime
    request: ReadRequest


@dataclass(frozen=True, slots=True)
class Idle:
    """Nothing to do before `until` (or before an urgent job is submitted)."""

    until: float


Step = Urgent[J] | Read | Idle


class BusScheduler(Generic[J]):
    """Decides the order of everything on one bus; see the module docstring."""

    def __init__(self, devices: Sequence[DeviceRuntime]) -> None:
        self.devices = tuple(devices)
        self._urgent: deque[J] = deque()
        self._poll: Poll | None = None
        self._busy = False
        self.cycles = 0

    @property
    def busy(self) -> bool:
        """A request or an urgent job is in flight."""
        return self._busy

    def submit(self, job: J) -> None:
        """Queue an urgent job: it goes before any further poll request."""
        self._urgent.append(job)

    def drain(self) -> list[J]:
        """Take every queued urgent job away (when the bus stops)."""
        jobs = list(self._urgent)
        self._urgent.clear()
        return jobs

    def next(self, now: float) -> Step[J]:
        """What to do now.

        Raises:
            RuntimeError: something is still in flight (a bug in the shell).
        """
        if self._busy:
            raise RuntimeError("the bus is busy: one request at a time")
        if self._urgent:
            self._busy = True
            return Urgent(self._urgent.popleft())
        if self._poll is None:
            device = min(self.devices, key=lambda d: d.due_at(), default=None)
            if device is None:
                return Idle(float("inf"))
            due = device.due_at()
            if due > now:
                return Idle(due)
            self._poll = device.begin(now)
        request = self._poll.next_request()
        if request is None:  # an empty poll: nothing due after all
            self._poll = None
            return Idle(now)
        self._busy = True
        return Read(self._poll.device, request)

    def job_done(self) -> None:
        """The urgent job handed out by `next` is over."""
        self._busy = False

    def record(self, outcome: Outcome, now: float, wall_ms: int) -> tuple[DeviceRuntime, list[Sample]] | None:
        """The outcome of the read handed out by `next`.

        Returns:
            When that ends the device's poll: the device and its samples to emit.
        """
        poll = self._poll
        if poll is None or not self._busy:
            raise RuntimeError("no read is in flight")
        self._busy = False
        poll.record(outcome, wall_ms)
        if poll.next_request() is not None:
            return None
        self._poll = None
        self.cycles += 1
        return poll.device, poll.finish(now, wall_ms)
