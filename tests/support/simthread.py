"""The building simulator on an event loop of its own thread, for tests that run boxd as a process."""

from __future__ import annotations

import asyncio
import ctypes
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from drivers.sim._served import ServedLog
from drivers.sim.modbus_building import BuildingSimulator
from tests.support.wait import wait_for

T = TypeVar("T")


class SimThread:
    """Owns a `BuildingSimulator` and the thread whose loop runs it."""

    def __init__(self, *, netns: str | None = None, sim: Any = None, **kwargs: Any) -> None:
        """A `BuildingSimulator(**kwargs)`, or `sim` (any simulator with async start/stop).

        With `netns`, the simulator's thread enters that network namespace first (its sockets live there).
        """
        self.loop = asyncio.new_event_loop()
        self.sim = sim if sim is not None else BuildingSimulator(**kwargs)
        self._netns = netns
        self._thread = threading.Thread(target=self._main, name="sim", daemon=True)

    def _main(self) -> None:
        if self._netns is not None:
            fd = os.open(f"/run/netns/{self._netns}", os.O_RDONLY)
            try:
                if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
                    raise OSError(ctypes.get_errno(), "setns failed")
            finally:
                os.close(fd)
        self.loop.run_forever()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(15)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the simulator's loop and return its result."""
        async def call() -> T:
            return fn(*args)
        return self._run(call())

    def end_life(self, timeout: float = 15.0) -> None:
        """The Box process that polled the simulator is dead: once its connections are closed and
        every request it had sent is answered, what is served next belongs to its next life."""
        wait_for(lambda: self.call(self.sim.connections) == 0, timeout, "the dead Box's connections to close")

        async def answered() -> None:  # pymodbus answers a request a few loop iterations after reading it
            for _ in range(8):
                await asyncio.sleep(0)

        self._run(answered())
        self.served.new_life()

    @property
    def served(self) -> ServedLog:
        """What the simulator served (it must record: `record=True`)."""
        assert self.sim.served is not None, "the simulator does not record what it serves"
        return self.sim.served

    def __enter__(self) -> SimThread:
        self._thread.start()
        self._run(self.sim.start())
        return self

    def __exit__(self, *_exc: object) -> None:
        self._run(self.sim.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()
