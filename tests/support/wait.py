"""Wait for a condition with a deadline (the suite never sleeps as synchronisation)."""

from __future__ import annotations

import asyncio
import functools
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


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
