"""A fake field bus implementing `PointSource` (for daemon tests that are not about a protocol)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from drivers import Emit, PointInfo, Quality, Sample, Value
from drivers.errors import UnknownPointError, WriteError, WriteRefusedError


class FakeBus:
    """Points whose values the test sets; `run()` emits them every `interval_s`."""

    def __init__(self, name: str, points: Sequence[str], interval_s: float = 0.1,
                 writable: Mapping[str, tuple[float | None, float | None]] | None = None) -> None:
        self.name = name
        self.writable = {f"{name}.{p}": bounds for p, bounds in (writable or {}).items()}  # point: (min, max)
        self.fail_writes = ""  # set: the "device" refuses every write with this reason
        self._points = [PointInfo(f"{name}.{p}", "", "float64") for p in points]
        self.values: dict[str, Value] = {p.name: 0.0 for p in self._points}
        self.quality: dict[str, Quality] = {}
        self.interval_s = interval_s
        self.writes: list[tuple[str, Value, int | None]] = []
        self.cycles = 0

    def points(self) -> Sequence[PointInfo]:
        return self._points

    def _samples(self, names: Sequence[str], ts: int) -> list[Sample]:
        out = []
        for n in names:
            q = self.quality.get(n, Quality.GOOD)
            out.append(Sample(n, ts, self.values[n] if q == Quality.GOOD else None, q))
        return out

    async def run(self, emit: Emit) -> None:
        ts = 1_700_000_000_000
        while True:
            await emit(self._samples([p.name for p in self._points], ts))
            self.cycles += 1
            ts += int(self.interval_s * 1000)
            await asyncio.sleep(self.interval_s)

    async def read_now(self, points: Sequence[str]) -> list[Sample]:
        for p in points:
            if p not in self.values:
                raise UnknownPointError(p)
        return self._samples(points, 0)

    def check_write(self, point: str, value: Value, priority: int | None = None) -> None:
        if point not in self.values:
            raise UnknownPointError(point)
        if point not in self.writable:
            raise WriteRefusedError(f'point "{point}" is not writable (its configuration has no writable = true)')
        if priority is not None:
            raise WriteRefusedError(f'point "{point}": this bus has no write priorities (got {priority})')
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise WriteRefusedError(f'point "{point}": {value!r} is not a number')
        low, high = self.writable[point]
        if low is not None and value < low:
            raise WriteRefusedError(f'point "{point}": {value!r} is below its min {low!r}')
        if high is not None and value > high:
            raise WriteRefusedError(f'point "{point}": {value!r} is above its max {high!r}')

    async def write(self, point: str, value: Value, priority: int | None = None) -> None:
        self.check_write(point, value, priority)
        if self.fail_writes:
            raise WriteError(f"{point}: {self.fail_writes}")
        assert isinstance(value, int | float)
        self.writes.append((point, value, priority))
        self.values[point] = float(value)

    def stats(self) -> Mapping[str, int]:
        return {"requests": self.cycles, "errors": 0, "cycles": self.cycles}
