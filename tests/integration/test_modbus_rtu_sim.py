"""ModbusRtuSource against the RS-485 line simulator on a real pseudo-terminal pair: values and
inter-frame timing, every fault of the simulator and what the source then reports (the other
units staying good), learned limits, restart, writes, wrong line settings, scans, the CLI."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import select
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from drivers import Quality
from drivers.errors import ScanError, WriteError
from drivers.modbus import ModbusRtuLine, ModbusRtuSource, parse_modbus_rtu_line
from drivers.modbus.scan import RtuTarget, probe_units, scan_registers
from drivers.sim.modbus_rtu_building import RtuBuildingSimulator
from tests.support.running import Running
from tests.support.wait import eventually

ROOT = Path(__file__).resolve().parents[2]


def fast(sim: RtuBuildingSimulator, **changes: object) -> ModbusRtuLine:
    """The simulator's line polled every 0.1 s, 0.2 s timeout, no retries."""
    line = sim.line(0.1, timeout_s=0.2)
    return dataclasses.replace(line, retries=0, **changes)  # type: ignore[arg-type]


def test_every_unit_reads_the_simulators_values_and_the_line_keeps_t35(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    async def run() -> None:
        async with RtuBuildingSimulator() as sim:
            assert sim.path.startswith("/dev/")
            line = parse_modbus_rtu_line(tomllib.loads(sim.points_toml(0.1))["modbus_rtu"][0])
            source = ModbusRtuSource(line)
            assert source.silence_s == pytest.approx(3.5 * 10 / 9600)
            sim.pause()
            async with Running(source) as r:
                await eventually(lambda: all(
                    s.quality is Quality.GOOD and s.value == sim.value(name) for name, s in r.latest().items()
                ) and len(r.latest()) == len(sim.values()), "every point to read the simulator's value")
                await eventually(lambda: source.stats()["cycles"] >= 12, "a few rounds of the line")
            stats = source.stats()
            assert stats["errors"] == stats["timeouts"] == 0
            assert {stats[f"{d}.cycles"] >= 3 for d in ("meter2", "meter3", "room2")} == {True}
            assert sim.stats()["early_frames"] == 0  # never sooner than t3.5 after an answer
            assert sim.stats()["crc_errors"] == 0 and sim.stats()["frames"] == stats["requests"]

    asyncio.run(run())
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_an_offline_unit_is_backed_off_and_the_others_stay_good() -> None:
    async def run() -> None:
        async with RtuBuildingSimulator() as sim:
            source = ModbusRtuSource(fast(sim))
            async with Running(source) as r:
                sim.set_offline(8)
                await r.settle("meter3", Quality.NO_ANSWER)
                await eventually(lambda: source.stats()["meter3.failures"] >= 3, "meter3 to be backed off")
                await r.settle("meter2", Quality.GOOD)
                await r.settle("room2", Quality.GOOD)
                polls = source.stats()
                assert polls["meter3.cycles"] < polls["meter2.cycles"]
                sim.set_offline(8, False)
                await r.settle("meter3", Quality.GOOD)

    asyncio.run(run())


def test_a_slow_unit_times_out_and_its_late_answers_do_not_upset_the_others() -> None:
    async def run() -> None:
        async with RtuBuildingSimulator() as sim:
            source = ModbusRtuSource(fast(sim))
            async with Running(source) as r:
                sim.set_delay(7, 0.3)
                await r.settle("meter2", Quality.NO_ANSWER)
                await r.settle("meter3", Quality.GOOD)
                await r.settle("room2", Quality.GOOD)
                sim.set_delay(7, 0.0)
                await r.settle("meter2", Quality.GOOD)

    asyncio.run(run())


def test_a_refused_large_read_teaches_the_source_a_limit() -> None:
    async def run() -> None:
        async with RtuBuildingSimulator() as sim:
            sim.set_read_limit(7, 8)
            source = ModbusRtuSource(fast(sim))
            async with Running(source) as r:
                await r.settle("meter2", Quality.GOOD)
            assert source.stats()["meter2.max_registers"] == 8
            assert source.stats()["meter3.max_registers"] == 125

    asyncio.run(run())


def test_a_garbling_unit_gives_bad_frame_and_the_others_stay_good() -> None:
    async def run() -> None:
        async with RtuBuildingSimulator() as sim:
            source = ModbusRtuSource(fast(sim))
            async with Running(source) as r:
                sim.set_garbled(9)
                await r.settle("room2", Quality.BAD_FRAME)
                await r.settle("meter2", Quality.GOOD)
                sim.set_garbled(9, False)
                await r.settle("room2", Quality.GOOD)

    asyncio.run(run())


def test_writes_and_a_restart_of_the_unit() -> None:
    async def run() -> None:
        async with RtuBuildingSimulator() as sim:
            multiple = fast(sim)
            room = dataclasses.replace(multiple.devices[2], write_multiple=True)
            source = ModbusRtuSource(dataclasses.replace(multiple, devices=(*multiple.devices[:2], room)))
            plain = ModbusRtuSource(fast(sim))
            async with Running(plain) as r:
                await plain.write("room2.setpoint", 23.5)
                assert r.latest()["room2.setpoint"].value == 23.5
                assert sim.calls[9, 6] == 1
                with pytest.raises(WriteError, match=r"below its min 15\.0"):
                    await plain.write("room2.setpoint", 10)
                with pytest.raises(WriteError, match=r'"meter2\.energy" is not writable'):
                    await plain.write("meter2.energy", 1.0)
                sim.restart(9, down_s=0.3)
                await r.settle("room2", Quality.NO_ANSWER)
                await r.settle("room2", Quality.GOOD)
                assert r.latest()["room2.setpoint"].value == 21.0  # back to its default
            async with Running(source):
                await source.write("room2.setpoint", 24.0)
            assert sim.calls[9, 16] == 1 and sim.value("room2.setpoint") == 24.0

    asyncio.run(run())


def test_wrong_line_settings_give_bad_frames_and_the_scan_says_so() -> None:
    async def run() -> None:
        async with RtuBuildingSimulator(baudrate=19200) as sim:
            source = ModbusRtuSource(dataclasses.replace(fast(sim), baudrate=9600))
            async with Running(source) as r:
                await r.settle("", Quality.BAD_FRAME)
            with pytest.raises(ScanError, match=(
                f"no answer from units 6..9 on {sim.path} at 9600 8N1: wrong baud rate or parity suspected"
            )):
                await probe_units(RtuTarget(sim.path, 9600, timeout_s=0.1), range(6, 10))
            assert await probe_units(RtuTarget(sim.path, 19200, timeout_s=0.1), range(6, 10)) == [7, 8, 9]

    asyncio.run(run())


def test_scan_finds_the_units_and_their_registers() -> None:
    async def run() -> None:
        async with RtuBuildingSimulator(baudrate=115200) as sim:  # a fast line: a scan is many requests
            sim.pause()
            target = RtuTarget(sim.path, 115200, timeout_s=0.1)
            seen: list[tuple[int, int]] = []
            assert await probe_units(target, [1, 7, 8, 9, 10], on_progress=lambda *a: seen.append(a)) == [7, 8, 9]
            assert seen[-1] == (5, 5)
            found = await scan_registers(target, 9, "holding", 0, 63, on_progress=lambda *a: seen.append(a))
            assert [a for a, _ in found] == [0, 1, 2, 3] and found[2] == (2, 210)
            assert seen[-1] == (64, 64)
            inputs = await scan_registers(target, 7, "input", 0, 20)
            assert [a for a, _ in inputs] == list(range(17))
            with pytest.raises(ScanError, match=f"no answer from unit 12 on {sim.path} at 115200 8N1: nothing on"):
                await scan_registers(target, 12, "holding", 0, 9)

    asyncio.run(run())


def test_a_missing_port_is_not_connected_and_the_scan_says_which(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    async def run() -> None:
        async with RtuBuildingSimulator() as sim:
            line = dataclasses.replace(fast(sim), port="/dev/no-such-tty")
        source = ModbusRtuSource(line)
        async with Running(source) as r:
            await eventually(lambda: len(r.batches) >= 3, "three polls")
        assert r.qualities() == {Quality.NOT_CONNECTED}
        with pytest.raises(ScanError, match="serial port /dev/no-such-tty not found: is the adapter plugged in"):
            await probe_units(RtuTarget("/dev/no-such-tty"), [1])

    asyncio.run(run())
    assert "modbus device meter2 (/dev/no-such-tty unit 7): lost: NOT_CONNECTED (serial port " \
           "/dev/no-such-tty not found: is the adapter plugged in?)" in caplog.messages


def test_the_line_going_away_and_coming_back_is_survived() -> None:
    async def run() -> None:
        sim = RtuBuildingSimulator()
        await sim.start()
        source = ModbusRtuSource(fast(sim))
        async with Running(source) as r:
            await r.settle("", Quality.GOOD)
            await sim.stop()
            await r.settle("", Quality.NOT_CONNECTED)
        assert source.stats()["errors"] > 0

    asyncio.run(run())


def test_the_cli_prints_the_pty_and_the_box_configuration_until_interrupted() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "drivers.sim.modbus_rtu_building"], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        printed = b""
        deadline = time.monotonic() + 20
        while not printed.endswith(b'name = "occupancy"\ntable = "discrete"\naddress = 0\ntype = "bool"\n'):
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"the simulator printed only {printed!r}"
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, f"the simulator ended after {printed!r}"
            printed += chunk
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    first = printed.decode().splitlines()[0]
    assert first.startswith("# building RTU simulator on /dev/")
    line = parse_modbus_rtu_line(tomllib.loads(printed.decode())["modbus_rtu"][0])
    assert line.port == first.split(" on ")[1].split()[0]
    assert [(d.name, d.unit_id) for d in line.devices] == [("meter2", 7), ("meter3", 8), ("room2", 9)]
    assert proc.returncode == 0, err
    assert b"Traceback" not in err and b"stopped" in out
