"""boxd with a loop-lag probe: the real daemon, plus one task on its event loop that measures stalls.

Run by `bench.loop_stall` as a script, not a module, so that the boxd it starts is the one on
``PYTHONPATH`` (this tree, or an older one to compare with)::

    BOXD_BENCH_LAG_FILE=<file> PYTHONPATH=<tree> python bench/_loop_probe.py <boxd arguments>

The probe sleeps 10 ms again and again and notes how late each wake-up came: a task that
wanted to run then (a bus's next request, a PUBACK, a heartbeat) waited as long. It writes
``<wall time s> <lateness ms>`` lines to the file once a second (outside the measured file
system). Nothing of this is in the daemon: it wraps `Daemon.run` and calls boxd's own entry point.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

PERIOD_S = 0.010


async def probe(path: Path, period_s: float = PERIOD_S) -> None:
    """Measure the loop's lateness until cancelled, writing it to `path` every second."""
    lines: list[str] = []
    flushed = time.monotonic()
    with path.open("a") as out:
        try:
            while True:
                before = time.monotonic()
                await asyncio.sleep(period_s)
                now = time.monotonic()
                lines.append(f"{time.time():.3f} {(now - before - period_s) * 1000:.2f}\n")
                if now - flushed >= 1.0:
                    out.writelines(lines)
                    out.flush()
                    lines.clear()
                    flushed = now
        finally:
            out.writelines(lines)


def main() -> int:
    path = Path(os.environ["BOXD_BENCH_LAG_FILE"])
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        del sys.path[0]  # run as a script: bench/ is not a place to import from (bench/ota.py is not `ota`)
    from boxd import daemon

    run: Callable[[daemon.Daemon], Coroutine[Any, Any, None]] = daemon.Daemon.run

    async def probed(self: daemon.Daemon) -> None:
        task = asyncio.create_task(probe(path), name="loop probe")
        try:
            await run(self)
        finally:
            task.cancel()

    daemon.Daemon.run = probed  # type: ignore[method-assign]
    from boxd.cli import main as boxd_main

    return boxd_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
