"""`ModbusBus`: the async shell that runs one bus's schedule over one link.

Does: implement the `PointSource` interface for a set of devices behind one `Link`
(a TCP connection, or a serial line): `run(emit)` loops over the `BusScheduler`'s
steps (send one read and record it, run one urgent job, or sleep until the next poll
is due or a job arrives), emits each finished device poll, and logs the devices'
events; `write` and `read_now` validate at once and queue a job ahead of the polls,
which the loop runs between two requests; `stats` adds up the devices' counters.
Learned read limits belong to the bus object and survive a restart of `run()`. Does
not: decide anything (`_sched`, `_device`, `_plan`, `_write` are pure), or know
pymodbus (`_link`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from drivers._types import Emit, PointInfo, Quality, Sample, Value
from drivers.errors import UnknownPointError, WriteError, WriteRefusedError
from drivers.modbus._device import DeviceRuntime, DeviceSpec, Outcome
from drivers.modbus._link import Link
from drivers.modbus._plan import fail_request, unpack_response
from drivers.modbus._sched import BusScheduler, Idle, Read, Urgent
from drivers.modbus._write import WritePlan, plan_write

log = logging.getLogger("drivers.modbus")


@dataclass(eq=False)
class _Job:
    """A write or an on-demand read, waiting for its turn on the bus."""

    future: asyncio.Future[list[Sample]]
    points: list[tuple[int, int]]  # (device, point) indexes
    plan: WritePlan | None = None  # a write; None for a read
    name: str = ""
    samples: list[Sample] = field(default_factory=list)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class ModbusBus:
    """One bus: its devices, their schedule and one link; see the module docstring."""

    def __init__(self, name: str, specs: Sequence[DeviceSpec], link: Link, phase: float = 0.0) -> None:
        self.name = name
        self._link = link
        self._devices = tuple(DeviceRuntime(spec, k, len(specs), phase=phase) for k, spec in enumerate(specs))
        self._infos = tuple(info for d in self._devices for info in d.infos)
        self._index = {
            info.name: (k, i) for k, d in enumerate(self._devices) for i, info in enumerate(d.infos)
        }
        self._sched: BusScheduler[_Job] | None = None
        self._wake: asyncio.Event | None = None
        self._emit: Emit | None = None
        self._writes = self._write_errors = 0

    # -- PointSource ------------------------------------------------------------------

    def points(self) -> Sequence[PointInfo]:
        """Every point of the bus, device by device, in configuration order."""
        return self._infos

    async def run(self, emit: Emit) -> None:
        """Poll until cancelled; see the module docstring. Never raises for a device fault.

        Raises:
            RuntimeError: `run()` is already running.
        """
        if self._sched is not None:
            raise RuntimeError(f"bus {self.name} is already running")
        start = time.monotonic()
        for device in self._devices:
            device.restart(start)
        sched: BusScheduler[_Job] = BusScheduler(self._devices)
        self._sched, self._wake, self._emit = sched, asyncio.Event(), emit
        task = asyncio.current_task()
        try:
            while True:
                if task is not None and task.cancelling():
                    # a cancellation swallowed below us (Python 3.11's wait_for, which pymodbus uses, loses
                    # one that lands as its answer arrives): honour it, or the daemon would never stop
                    raise asyncio.CancelledError
                step = sched.next(time.monotonic())
                if isinstance(step, Idle):
                    await self._idle(step.until)
                elif isinstance(step, Urgent):
                    try:
                        await self._urgent(step.job)
                    finally:
                        sched.job_done()
                else:
                    await self._poll_read(sched, step, emit)
        finally:
            self._sched = self._wake = self._emit = None
            for job in sched.drain():
                if not job.future.done():
                    job.future.set_exception(WriteError(f"bus {self.name} stopped before the job ran"))
            self._link.close()

    async def _poll_read(self, sched: BusScheduler[_Job], step: Read, emit: Emit) -> None:
        spec, request = step.device.spec, step.request
        outcome = await self._link.read(spec.unit_id, request.table, request.start, request.count,
                                        timeout_s=spec.timeout_s, retries=spec.retries)
        done = sched.record(outcome, time.monotonic(), _wall_ms())
        self._log_events(step.device)
        if done is not None:
            await emit(done[1])  # on disk before the bus's next request
            self._poll_done(done[0])

    async def _urgent(self, job: _Job) -> None:
        try:
            await self._run_job(job)
        except asyncio.CancelledError:
            if not job.future.done():
                job.future.set_exception(WriteError(
                    f"bus {self.name} stopped during the job: a write may or may not have been done"
                ))
            raise

    async def read_now(self, points: Sequence[str]) -> list[Sample]:
        """Read these points ahead of the schedule; NOT_CONNECTED samples if not running.

        Raises:
            UnknownPointError: a name is not a point of this bus.
        """
        where = [self._lookup(name) for name in points]
        if self._sched is None:
            ts = _wall_ms()
            return [Sample(name, ts, None, Quality.NOT_CONNECTED) for name in points]
        return await self._submit(_Job(asyncio.get_running_loop().create_future(), where))

    async def write(self, point: str, value: Value, priority: int | None = None) -> None:
        """Write a value to a writable point (queued ahead of polls), then read it back.

        Raises:
            UnknownPointError: not a point of this bus.
            WriteRefusedError: not writable, wrong kind or out of range, or a priority was
                given (Modbus has none): nothing sent.
            WriteError: the bus is not running, or the device refused
                or did not answer; the message says which.
        """
        k, i, plan = self._plan(point, value, priority)
        if self._sched is None:
            raise WriteError(f'point "{point}": bus {self.name} is not running; nothing was sent')
        loop = asyncio.get_running_loop()
        await self._submit(_Job(loop.create_future(), [(k, i)], plan, point))

    def check_write(self, point: str, value: Value, priority: int | None = None) -> None:
        """Whether `write` would take this value (nothing is sent).

        Raises:
            UnknownPointError: not a point of this bus.
            WriteRefusedError: not writable, wrong kind, out of range, or a priority (Modbus has none).
        """
        self._plan(point, value, priority)

    def _plan(self, point: str, value: Value, priority: int | None) -> tuple[int, int, WritePlan]:
        k, i = self._lookup(point)
        if priority is not None:
            raise WriteRefusedError(f'point "{point}": Modbus has no write priorities (got {priority})')
        spec = self._devices[k].spec
        return k, i, plan_write(point, spec.points[i], spec.codecs[i], value, write_multiple=spec.write_multiple)

    def stats(self) -> Mapping[str, int]:
        """Bus totals ("requests", "errors", "timeouts", "cycles", "writes", "write_errors")
        and the same per device ("<device>.requests", ...), with "<device>.max_registers"
        (the learned limit) and "<device>.failures" (polls in a row without an answer)."""
        out = {"requests": 0, "errors": 0, "timeouts": 0, "cycles": 0}
        for d in self._devices:
            s = d.stats
            for key, value in (("requests", s.requests), ("errors", s.errors),
                               ("timeouts", s.timeouts), ("cycles", s.cycles)):
                out[key] += value
                out[f"{d.spec.name}.{key}"] = value
            out[f"{d.spec.name}.max_registers"] = d.planner.max_registers
            out[f"{d.spec.name}.failures"] = d.failures
        out["writes"] = self._writes
        out["write_errors"] = self._write_errors
        return out

    # -- internals --------------------------------------------------------------------

    def _lookup(self, name: str) -> tuple[int, int]:
        try:
            return self._index[name]
        except KeyError:
            raise UnknownPointError(f'no point "{name}" on bus {self.name}') from None

    async def _submit(self, job: _Job) -> list[Sample]:
        assert self._sched is not None and self._wake is not None
        self._sched.submit(job)
        self._wake.set()
        return await job.future

    async def _idle(self, until: float) -> None:
        assert self._wake is not None
        delay = until - time.monotonic()
        if delay <= 0:
            return
        self._wake.clear()
        try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation (a stop that hangs)
            async with asyncio.timeout(delay):
                await self._wake.wait()
        except TimeoutError:
            pass

    def _poll_done(self, device: DeviceRuntime) -> None:
        """A device's poll is over (a hook for the TCP source)."""

    def _log_events(self, device: DeviceRuntime) -> None:
        for event in device.events:
            log.log(event.level, "%s", event.message)
        device.events.clear()

    async def _read(self, k: int, indexes: list[int]) -> list[Sample]:
        """Read some points of one device now (for jobs), without touching its schedule."""
        d = self._devices[k]
        spec = d.spec
        values: list[Value] = [None] * len(spec.points)
        qualities = [Quality.NOT_CONNECTED] * len(spec.points)
        ts = _wall_ms()
        for request in d.planner.plan(indexes):
            outcome = await self._link.read(spec.unit_id, request.table, request.start,
                                            request.count, timeout_s=spec.timeout_s,
                                            retries=spec.retries)
            self._count(d, outcome)
            if outcome.quality is Quality.GOOD:
                unpack_response(request, outcome.data, spec.codecs, values, qualities)
            else:
                fail_request(request, outcome.quality, values, qualities)
        return [Sample(d.infos[i].name, ts, values[i], qualities[i]) for i in indexes]

    def _count(self, device: DeviceRuntime, outcome: Outcome) -> None:
        device.stats.requests += outcome.tries
        device.stats.timeouts += outcome.timeouts
        if outcome.quality is not Quality.GOOD:
            device.stats.errors += 1

    async def _run_job(self, job: _Job) -> None:
        if job.future.done():  # the caller gave up waiting
            return
        try:
            if job.plan is None:
                result: list[Sample] = []
                by_device: dict[int, list[int]] = {}
                for k, i in job.points:
                    by_device.setdefault(k, []).append(i)
                got = {s.point: s for k, indexes in by_device.items() for s in await self._read(k, indexes)}
                result = [got[self._devices[k].infos[i].name] for k, i in job.points]
            else:
                result = await self._write(job, job.plan)
        except WriteError as e:
            self._write_errors += 1
            if not job.future.done():
                job.future.set_exception(e)
            return
        if not job.future.done():
            job.future.set_result(result)

    async def _write(self, job: _Job, plan: WritePlan) -> list[Sample]:
        (k, i), = job.points
        d = self._devices[k]
        spec = d.spec
        values = plan.values
        if plan.mask is not None:  # a bit of a register: read, merge, write
            got = await self._link.read(spec.unit_id, plan.table, plan.address, 1,
                                        timeout_s=spec.timeout_s, retries=spec.retries)
            self._count(d, got)
            if got.quality is not Quality.GOOD:
                raise WriteError(f'point "{job.name}": reading its register before the write '
                                 f"failed: {got.describe()}; nothing was written")
            values = plan.merge(int(got.data[0]))
        outcome = await self._link.write(spec.unit_id, plan, values, timeout_s=spec.timeout_s,
                                         retries=spec.retries)
        self._count(d, outcome)
        self._writes += 1
        if outcome.quality is not Quality.GOOD:
            whose = "the device refused the write" if outcome.exception_code is not None else \
                "the write may not have been done"
            raise WriteError(f'point "{job.name}": {whose}: {outcome.describe()}')
        samples = await self._read(k, [i])
        if self._emit is not None:
            await self._emit(samples)
        return samples
