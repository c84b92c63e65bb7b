"""Wait for a condition with a deadline (the suite never sleeps as synchronisation)."""

from __future__ import annotations

import asyncio
import functools
import os
import random
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(cond: Callable[[], T | None], timeout: float = 15.0, what: str = "condition", step: float = 0.05) -> T:
    """Poll `cond` until it returns something truthy (returned); fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = cond()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)
        last = cond()
    assert last is not None
    return last


def in_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in a fresh event loop, bounded by 30 s (the suite has no asyncio plugin)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 30))

    return run


async def until(cond: Callable[[], object], step: float = 0.01) -> None:
    """Poll `cond` on the loop until it is truthy (the caller's deadline, e.g. `in_loop`'s, bounds it)."""
    while not cond():  # noqa: ASYNC110 - a condition over state of several owners, polled
        await asyncio.sleep(step)


async def eventually(cond: Callable[[], T | None], what: str, within: float = 10.0) -> T:
    """Poll `cond` on the loop until it returns something truthy (returned); fail the test after `within` s."""
    deadline = time.monotonic() + within
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)
    assert value is not None
    return value


# free_port's ports: below Linux's ephemeral range (32768-60999 by default), so neither a bind to port 0
# nor an outgoing connection's source port ever takes one between the test picking it and a server
# binding it; one slice per pytest-xdist worker (gw0, gw1, ...; a run without xdist takes slice 0), so
# two workers never hand out the same port. Within a slice a process starts at a random place (a
# subprocess of a worker, e.g. a bench, shares its slice) and goes round.
PORTS_LOW, PORTS_HIGH, PORT_SLICES = 24000, 32768, 8
_next_port: list[int] = []


def free_port() -> int:
    """A TCP port nobody listens on right now, from this pytest worker's own range (see above)."""
    size = (PORTS_HIGH - PORTS_LOW) // PORT_SLICES
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    low = PORTS_LOW + (int(worker) % PORT_SLICES if worker.isdigit() else 0) * size
    if not _next_port:
        _next_port.append(random.randrange(size))
    for _ in range(size):
        port = low + _next_port[0] % size
        _next_port[0] += 1
        with socket.socket() as s:
            try:
                s.bind(("", port))  # every address: a server may bind any of them
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free TCP port in {low}..{low + size - 1}")
