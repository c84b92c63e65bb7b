"""A `PointSource` running in a task, with everything it emitted (driver tests on simulators)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import TracebackType

from drivers import PointSource, Quality, Sample
from tests.support.wait import eventually


class Running:
    """`async with Running(source)`: its `run()` in a task, cancelled at the end (it must not have
    ended on its own); `batches` is what it emitted, one list per emission (a device poll)."""

    def __init__(self, source: PointSource, *, first_poll: bool = True) -> None:
        self.source = source
        self.batches: list[list[Sample]] = []
        self.task: asyncio.Task[None] | None = None
        self._first_poll = first_poll  # wait for the first emission on entering

    @property
    def samples(self) -> list[Sample]:
        """Every sample emitted, in order."""
        return [s for batch in self.batches for s in batch]

    def latest(self) -> dict[str, Sample]:
        """The last sample of each point."""
        return {s.point: s for s in self.samples}

    def qualities(self, prefix: str = "") -> set[Quality]:
        """The qualities of the latest samples of the points named `prefix`..."""
        return {s.quality for name, s in self.latest().items() if name.startswith(prefix)}

    def all(self, device: str, quality: Quality) -> bool:
        """Whether every point of `device` has been read and its latest sample has `quality`."""
        mine = [s for p, s in self.latest().items() if p.startswith(device + ".")]
        declared = sum(1 for p in self.source.points() if p.name.startswith(device + "."))
        return bool(mine) and len(mine) == declared and all(s.quality is quality for s in mine)

    async def settle(self, prefix: str, quality: Quality, within: float = 10.0) -> None:
        """Wait for a poll, from now on, in which every point of `prefix` read has `quality`."""
        mark = len(self.batches)

        def done() -> bool:
            for batch in self.batches[mark:]:
                mine = {s.quality for s in batch if s.point.startswith(prefix)}
                if mine == {quality}:
                    return True
            return False

        await eventually(done, f"{prefix or 'every point'} to be {quality.name}", within)

    async def emit(self, samples: Sequence[Sample]) -> None:
        """The source's `emit`."""
        self.batches.append(list(samples))

    async def __aenter__(self) -> Running:
        self.task = asyncio.create_task(self.source.run(self.emit))
        if self._first_poll:
            await eventually(lambda: self.batches, "the first poll")
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        assert self.task is not None
        assert not self.task.done(), "run() ended on its own"
        self.task.cancel()
        (outcome,) = await asyncio.gather(self.task, return_exceptions=True)
        assert isinstance(outcome, asyncio.CancelledError), outcome
