"""The supervisor restarts a failing task and leaves the others alone; runs one-shot jobs it owns;
FatalError and Stop end it, raised as they are (not in a group) for the daemon's top."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from boxd.supervisor import FatalError, Stop, Supervisor


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


def test_a_fatal_error_stops_the_supervisor() -> None:
    async def doomed() -> None:
        raise FatalError("disk gone")

    async def idle() -> None:
        await asyncio.Event().wait()

    with pytest.raises(FatalError, match="disk gone"):
        asyncio.run(asyncio.wait_for(Supervisor({"doomed": doomed, "idle": idle}).run(), 10))


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


def test_jobs_run_once_and_a_failing_job_leaves_the_rest_running() -> None:
    ran: list[str] = []
    cleaned: list[str] = []

    async def job(name: str, fail: bool = False) -> None:
        ran.append(name)
        if fail:
            raise RuntimeError("a bug in a job")

    async def idle() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append("idle")

    async def main() -> None:
        sup = Supervisor({"idle": idle})
        sup.spawn("early", lambda: job("early"))  # before `run`: starts with it
        runner = asyncio.create_task(sup.run())
        while "early" not in ran:  # noqa: ASYNC110 - the job runs on the supervisor's loop
            await asyncio.sleep(0.01)
        sup.spawn("broken", lambda: job("broken", fail=True))
        sup.spawn("late", lambda: job("late"))
        while "late" not in ran:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        assert sup.names() == ["idle"]  # jobs are not restarted, and the failure touched nothing
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner

    asyncio.run(asyncio.wait_for(main(), 10))
    assert ran == ["early", "broken", "late"] and cleaned == ["idle"]


def test_a_stop_from_a_job_ends_every_task_and_comes_out_as_itself() -> None:
    cleaned: list[str] = []

    async def idle() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append("idle")

    async def switch() -> None:
        raise Stop(75, "restarting", "the update is switched to")

    async def main() -> None:
        sup = Supervisor({"idle": idle})
        sup.spawn("update", switch)
        await sup.run()

    with pytest.raises(Stop) as e:
        asyncio.run(asyncio.wait_for(main(), 10))
    assert (e.value.status, e.value.reason) == (75, "restarting") and cleaned == ["idle"]
