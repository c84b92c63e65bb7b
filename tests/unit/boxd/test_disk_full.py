"""A queue write that fails (the disk is full) reaches the bus that emitted: its task fails and the
supervisor restarts it with backoff, the daemon goes on, and readings are written again once there
is room. The disk is a real one: a small tmpfs, grown while the daemon runs."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from boxd.daemon import Daemon
from tests.support.fakebus import FakeBus
from tests.support.wait import in_loop, until


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "state"
    mnt.mkdir(mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_fails_the_bus_task_which_comes_back_once_there_is_room(small_disk: Path) -> None:
    @in_loop
    async def scenario() -> None:
        d = Daemon(small_disk, small_disk / "unused.toml")
        d.queue.open()
        bus = FakeBus("ahu", [f"p{i}" for i in range(100)], interval_s=0.005)
        sup = d.supervisor
        sup.backoff_base, sup.backoff_cap = 0.05, 0.2
        d.buses.use(d.buses.cfg, [bus])
        runner = asyncio.create_task(sup.run())
        try:
            await until(lambda: "bus:ahu" in sup.stats and sup.stats["bus:ahu"].restarts >= 2)
            assert "QueueError" in sup.stats["bus:ahu"].last_error
            assert "database or disk is full" in sup.stats["bus:ahu"].last_error
            full = d.queue.samples
            assert full > 0
            await asyncio.to_thread(subprocess.run, ["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
            await until(lambda: d.queue.samples >= full + 2000)  # the bus writes again
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
            d.queue.close()

    scenario()


def test_a_reading_whose_write_failed_is_never_the_reference_of_an_unchanged_one(small_disk: Path) -> None:
    """Report on change: the filter took the reading as sent; the write failed, so it must forget it."""
    from boxconfig.report import Rule
    from boxd.errors import QueueError
    from boxd.onchange import OnChange
    from drivers import Sample
    from proto import wire

    @in_loop
    async def scenario() -> None:
        d = Daemon(small_disk, small_disk / "unused.toml")
        d.queue.open()
        bus = FakeBus("ahu", ["a"] + [f"p{i}" for i in range(200)])
        d.buses.use(d.buses.cfg, [bus])
        d.buses.onchange = OnChange([Rule(max_age_ms=10**9)] * 201)
        emit = d.buses.emitter(bus, first=0)
        await emit([Sample("ahu.a", 1, 1.0)])
        with pytest.raises(QueueError):  # the disk fills up (a unchanged: spans; the others change)
            for t in range(2, 10**6):
                await emit([Sample("ahu.a", t, 1.0), *(Sample(f"ahu.p{i}", t, float(t + i)) for i in range(200))])
        with pytest.raises(QueueError):
            await emit([Sample("ahu.a", 10**6, 2.0)])  # a changed: not written
        await asyncio.to_thread(subprocess.run, ["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
        await emit([Sample("ahu.a", 10**6 + 1, 2.0)])  # the same value again: sent, not "unchanged"
        await d.queue.seal(10**6)
        last = wire.decode_batch(d.queue.newest_batch()[1])  # type: ignore[index]
        newest = max(g.dt_ms for g in last.groups)  # the order of a batch's groups says nothing (format 2)
        assert [(g.first, g.values, g.unchanged) for g in last.groups if g.dt_ms == newest and g.first == 0] \
            == [(0, [2.0], 0)]
        d.queue.close()

    scenario()
