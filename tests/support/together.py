"""Run a function in several threads started at once (a barrier), as several writers would.

`at_once(fn, n)` calls ``fn(i)`` for i in 0..n-1, each in its own thread, all released together,
and returns what they raised (an empty list when none failed); a thread still running after
`timeout_s` is reported as such.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


def at_once(fn: Callable[[int], None], n: int, timeout_s: float = 120.0) -> list[BaseException]:
    """Run ``fn(0)``..``fn(n-1)`` in n threads released together; what they raised."""
    start = threading.Barrier(n)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            start.wait(30)
            fn(i)
        except BaseException as e:  # reported to the caller
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s)
    errors += [TimeoutError(f"{t.name} still running after {timeout_s} s") for t in threads if t.is_alive()]
    return errors
