"""The supervisor restarts a failing task and leaves the others alone; Fatal stops the daemon."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from boxd.supervisor import Fatal, Supervisor


def test_a_failing_task_is_restarted_and_the_others_keep_running() -> None:
    runs = {"flaky": 0, "steady": 0}
    done = asyncio.Event()

    async def flaky() -> None:
        runs["flaky"] += 1
        if runs["flaky"] < 3:
            raise RuntimeError("device on fire")
        done.set()
        await asyncio.Event().wait()

    async def steady() -> None:
        runs["steady"] += 1
        await asyncio.Event().wait()

    async def main() -> Supervisor:
        sup = Supervisor({"flaky": flaky, "steady": steady}, backoff_base=0.001, backoff_cap=0.01)
        task = asyncio.create_task(sup.run())
        await asyncio.wait_for(done.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return sup

    sup = asyncio.run(main())
    assert runs == {"flaky": 3, "steady": 1}
    assert sup.stats["flaky"].restarts == 2
    assert "device on fire" in sup.stats["flaky"].last_error


def test_fatal_stops_the_supervisor() -> None:
    async def doomed() -> None:
        raise Fatal("disk gone")

    async def idle() -> None:
        await asyncio.Event().wait()

    with pytest.raises(ExceptionGroup) as e:
        asyncio.run(asyncio.wait_for(Supervisor({"doomed": doomed, "idle": idle}).run(), 10))
    assert e.group_contains(Fatal)


def test_tasks_are_added_and_stopped_while_it_runs() -> None:
    cleaned: list[str] = []
    started: dict[str, asyncio.Event] = {}

    def task(name: str) -> Callable[[], Awaitable[None]]:
        started[name] = asyncio.Event()

        async def run() -> None:
            started[name].set()
            try:
                await asyncio.Event().wait()
            finally:
                cleaned.append(name)
        return run

    async def main() -> None:
        sup = Supervisor({"bus:a": task("a"), "flush": task("flush")})
        runner = asyncio.create_task(sup.run())
        await started["a"].wait()
        await started["flush"].wait()
        await sup.stop(["bus:a"])
        assert cleaned == ["a"] and sup.names() == ["flush"] and "bus:a" not in sup.stats
        sup.start("bus:b", task("b"))
        await started["b"].wait()
        assert sorted(sup.names()) == ["bus:b", "flush"]
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner

    asyncio.run(asyncio.wait_for(main(), 10))
    assert sorted(cleaned) == ["a", "b", "flush"]
