"""ModbusTcpSource against the building simulator over real loopback sockets: values, every
fault of the simulator and what the source then reports, learned limits, restart, writes
(FC 5, 6, 15, 16 and a bit of a register), refused writes, on-demand reads, scans, the CLI."""

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
from collections.abc import Callable
from pathlib import Path

import pytest

from drivers import PointInfo, Quality, Sample
from drivers.errors import ScanError, SimulatorError, UnknownPointError, WriteError
from drivers.modbus import ModbusPoint, ModbusTcpDevice, ModbusTcpSource, parse_modbus_tcp_device
from drivers.modbus.scan import TcpTarget, points_to_toml, probe_units, scan_registers, suggest_points
from drivers.sim import building_devices
from drivers.sim._building import command_points
from drivers.sim.modbus_building import BuildingSimulator
from tests.support.running import Running
from tests.support.wait import eventually, free_port

ROOT = Path(__file__).resolve().parents[2]
PYTHON_TYPES = {
    "bool": bool, "string": str, "float32": float, "float64": float,
    "int16": int, "uint16": int, "int32": int, "uint32": int, "int64": int, "uint64": int,
}
UNITS = {
    "ahu1.supply_temp": "degC", "ahu1.fan_speed": "%", "ahu1.model": "",
    "meter1.voltage_l2": "V", "meter1.current": "A", "meter1.active_power": "kW",
    "meter1.energy": "kWh", "meter1.energy_counter": "kWh", "room1.humidity": "%RH",
    "room1.room_temp": "degC", "room1.co2": "ppm",
}
FAST = {"poll_interval_s": 0.1, "timeout_s": 0.2, "retries": 0}


def fast(device: ModbusTcpDevice, **changes: object) -> ModbusTcpDevice:
    """The device polled often, with a short timeout (for devices meant to fail)."""
    return dataclasses.replace(device, **{**FAST, **changes})  # type: ignore[arg-type]


def with_commands(device: ModbusTcpDevice, **changes: object) -> ModbusTcpDevice:
    """The AHU with its command word and boost bit, which the demo configuration leaves out."""
    return dataclasses.replace(device, points=device.points + command_points("ahu"), **changes)  # type: ignore[arg-type]


def check_type(info: PointInfo, sample: Sample, scaled: bool) -> None:
    expected = float if scaled and info.kind not in ("bool", "string") else PYTHON_TYPES[info.kind]
    assert type(sample.value) is expected, (info, sample)


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_all_three_devices_read_with_the_right_values_types_and_units(caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> None:
        async with BuildingSimulator(port=0) as sim:
            devices = [parse_modbus_tcp_device(d) for d in tomllib.loads(sim.points_toml(0.1))["modbus_tcp"]]
            sources = [ModbusTcpSource(d) for d in devices]
            sim.pause()
            before = time.time_ns() // 1_000_000
            async with Running(sources[0]) as a, Running(sources[1]) as b, Running(sources[2]) as c:
                runs = (a, b, c)

                def all_match() -> bool:
                    latest = {k: v for r in runs for k, v in r.latest().items()}
                    return len(latest) == sum(len(d.points) for d in devices) and all(
                        s.quality is Quality.GOOD and s.value == sim.value(name) for name, s in latest.items()
                    )

                await eventually(all_match, "every point to read the simulator's value")
            for device, source, running in zip(devices, sources, runs, strict=True):
                infos = source.points()
                assert [i.name for i in infos] == [f"{device.name}.{p.name}" for p in device.points]
                latest = running.latest()
                for info, point in zip(infos, device.points, strict=True):
                    assert info.kind == point.type and before <= latest[info.name].ts_ms
                    check_type(info, latest[info.name], scaled=point.scale != 1)
                stats = source.stats()
                assert stats["cycles"] >= 1 and stats["requests"] >= stats["cycles"] and stats["errors"] == 0
            units = {i.name: i.unit for s in sources for i in s.points()}
            assert {k: units[k] for k in UNITS} == UNITS
            values = {name: s.value for r in runs for name, s in r.latest().items()}
            assert values["ahu1.model"] == "AHU-3000" and values["ahu1.status_fan"] is True
            assert values["meter1.energy_counter"] == int(values["meter1.energy"])  # type: ignore[arg-type]

    caplog.set_level(logging.INFO)
    asyncio.run(run())
    no_errors_logged(caplog)


def test_an_offline_unit_is_backed_off_and_only_its_points_say_no_answer(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    async def run() -> None:
        async with BuildingSimulator(port=0) as sim:
            ahu, _, room = building_devices(sim.host, sim.port)
            good, silent = ModbusTcpSource(fast(ahu)), ModbusTcpSource(fast(room))
            async with Running(good) as g, Running(silent) as s:
                await s.settle("room1", Quality.GOOD)
                sim.set_offline(3)
                await s.settle("room1", Quality.NO_ANSWER)
                await eventually(lambda: silent.stats()["room1.failures"] >= 3, "the unit to be backed off")
                assert g.qualities() == {Quality.GOOD}
                assert {v.value for v in s.latest().values()} == {None}
                assert silent.stats()["timeouts"] == silent.stats()["room1.failures"]  # one try per poll
                sim.set_offline(3, False)
                await s.settle("room1", Quality.GOOD)
                assert silent.stats()["room1.failures"] == 0

    asyncio.run(run())
    lines = [r.getMessage() for r in caplog.records if r.name == "drivers.modbus" and "room1" in r.getMessage()]
    states = [line.split(": ", 1)[1] for line in lines if "next try" not in line]
    assert states == ["up, 2 read(s) per full poll", "lost: NO_ANSWER", "back, 2 read(s) per full poll"]
    assert any("3 polls without an answer: next try in 0.4 s" in line for line in lines)
    no_errors_logged(caplog)


def test_a_closed_port_gives_not_connected_and_no_exception() -> None:
    async def run() -> None:
        source = ModbusTcpSource(fast(building_devices("127.0.0.1", free_port())[0]))
        async with Running(source) as r:
            await eventually(lambda: len(r.batches) >= 2, "two polls")
        assert {(s.value, s.quality) for s in r.samples} == {(None, Quality.NOT_CONNECTED)}
        assert source.stats()["requests"] == 0

    asyncio.run(run())


def test_a_device_exception_fails_only_its_request() -> None:
    async def run() -> None:
        async with BuildingSimulator(port=0) as sim:
            ahu = building_devices(sim.host, sim.port)[0]
            missing = ModbusPoint(name="missing", table="holding", address=500, type="uint16")
            source = ModbusTcpSource(fast(ahu, points=(*ahu.points, missing)))
            async with Running(source) as r:
                await eventually(lambda: "ahu1.missing" in r.latest(), "the missing point")
                await r.settle("ahu1.s", Quality.GOOD)
            latest = r.latest()
            assert latest.pop("ahu1.missing").quality is Quality.DEVICE_EXCEPTION
            assert {s.quality for s in latest.values()} == {Quality.GOOD}
            assert source.stats()["ahu1.max_registers"] == 125  # one point alone: not a size problem

    asyncio.run(run())


def test_a_slow_unit_answers_too_late_or_just_in_time() -> None:
    async def run() -> None:
        async with BuildingSimulator(port=0) as sim:
            source = ModbusTcpSource(fast(building_devices(sim.host, sim.port)[2]))
            async with Running(source) as r:
                sim.set_delay(3, 0.4)  # twice the timeout
                await r.settle("room1", Quality.NO_ANSWER)
                sim.set_delay(3, 0.05)
                await r.settle("room1", Quality.GOOD)

    asyncio.run(run())


@pytest.mark.parametrize("silent", [False, True], ids=["exception", "silence"])
def test_a_refused_large_read_teaches_the_source_a_limit(silent: bool, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    async def run() -> None:
        async with BuildingSimulator(port=0) as sim:
            ahu, meter, _ = building_devices(sim.host, sim.port)
            device, unit = (ahu, 1) if silent else (meter, 2)  # silence needs a small read that answers
            source = ModbusTcpSource(fast(device))
            sim.set_read_limit(unit, 8, silent=silent)
            async with Running(source) as r:
                await r.settle("", Quality.GOOD)
                cycles = source.stats()["cycles"]
                await eventually(lambda: source.stats()["cycles"] >= cycles + 2, "two more polls")
            assert r.qualities() == {Quality.GOOD}
            assert source.stats()[f"{device.name}.max_registers"] == 8
            assert source.stats()["errors"] == 0

    asyncio.run(run())
    learned = [r.getMessage() for r in caplog.records if "reads limited to" in r.getMessage()]
    assert len(learned) == 1, learned
    assert ("NO_ANSWER" if silent else "DEVICE_EXCEPTION 3 (illegal data value)") in learned[0]
    assert "reads limited to 8 registers" in learned[0]


def test_a_garbling_unit_gives_bad_frame_for_its_points_only(caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> None:
        async with BuildingSimulator(port=0) as sim:
            _, meter, room = building_devices(sim.host, sim.port)
            good, garbled = ModbusTcpSource(fast(meter)), ModbusTcpSource(fast(room))
            async with Running(good) as g, Running(garbled) as b:
                sim.set_garbled(3)
                await b.settle("room1", Quality.BAD_FRAME)
                await g.settle("meter1", Quality.GOOD)
                sim.set_garbled(3, False)
                await b.settle("room1", Quality.GOOD)

    caplog.set_level(logging.INFO)
    asyncio.run(run())
    no_errors_logged(caplog)


def test_after_a_device_restart_the_source_reconnects_and_reads_the_reset_values() -> None:
    async def run() -> None:
        async with BuildingSimulator(port=0) as sim:
            source = ModbusTcpSource(fast(building_devices(sim.host, sim.port)[0]))
            async with Running(source) as r:
                await r.settle("ahu1", Quality.GOOD)
                await source.write("ahu1.supply_setpoint", 19.5)
                assert r.latest()["ahu1.supply_setpoint"].value == 19.5
                sim.restart()
                await eventually(lambda: r.latest()["ahu1.supply_setpoint"].value == 18.0, "the default setpoint")
                await r.settle("ahu1", Quality.GOOD)

    asyncio.run(run())


def test_writes_use_fc_5_6_15_16_and_the_read_back_is_emitted() -> None:
    async def run() -> None:
        async with BuildingSimulator(port=0) as sim:
            ahu, _, room = building_devices(sim.host, sim.port)
            ahu = with_commands(ahu)
            sources = [ModbusTcpSource(ahu), ModbusTcpSource(room), ModbusTcpSource(
                dataclasses.replace(ahu, name="ahu1m", write_multiple=True))]
            async with Running(sources[0]) as a, Running(sources[1]) as b, Running(sources[2]) as m:
                await a.settle("ahu1", Quality.GOOD)
                await sources[0].write("ahu1.supply_setpoint", 21.5)  # float32: FC 16
                await sources[1].write("room1.setpoint", 22.5)  # int16 scale 0.1: FC 6
                await sources[0].write("ahu1.fan_running", False)  # coil: FC 5
                await sources[0].write("ahu1.cmd_boost", True)  # a bit: FC 3 then FC 6
                assert sim.value("ahu1.fan_running") is False
                await sources[2].write("ahu1m.fan_running", True)  # write_multiple: FC 15
                await sources[2].write("ahu1m.command_word", 5)  # write_multiple: FC 16
                assert a.latest()["ahu1.supply_setpoint"].value == 21.5  # read back, emitted
                assert b.latest()["room1.setpoint"].value == 22.5
                assert m.latest()["ahu1m.command_word"].value == 5
            assert sim.value("ahu1.supply_setpoint") == 21.5 and sim.value("room1.setpoint") == 22.5
            assert sim.value("ahu1.fan_running") is True and sim.value("ahu1.command_word") == 5
            assert sim.value("ahu1.cmd_boost") is False  # 5 has bit 3 clear: the last write won
            for code in (5, 6, 15, 16):
                assert sim.calls[1, code] >= 1, code
            assert sim.calls[3, 6] >= 1 and sim.calls[3, 16] == 0
            assert sources[0].stats()["writes"] == 3

    asyncio.run(run())


def test_a_bit_write_keeps_the_other_bits_of_its_register() -> None:
    async def run() -> None:
        async with BuildingSimulator(port=0) as sim:
            source = ModbusTcpSource(with_commands(building_devices(sim.host, sim.port)[0]))
            async with Running(source):
                await source.write("ahu1.command_word", 0b0001)
                await source.write("ahu1.cmd_boost", True)
                assert sim.value("ahu1.command_word") == 0b1001
                await source.write("ahu1.cmd_boost", False)
                assert sim.value("ahu1.command_word") == 0b0001

    asyncio.run(run())


def test_refused_writes_say_why_and_send_nothing_when_the_box_knows() -> None:
    async def run() -> None:
        async with BuildingSimulator(port=0) as sim:
            ahu = with_commands(building_devices(sim.host, sim.port)[0])
            damper = next(p for p in ahu.points if p.name == "damper_position")
            wrongly = dataclasses.replace(damper, writable=True)
            source = ModbusTcpSource(fast(ahu, points=tuple(wrongly if p is damper else p for p in ahu.points)))
            with pytest.raises(WriteError, match="bus ahu1 is not running; nothing was sent"):
                await source.write("ahu1.supply_setpoint", 20.0)
            async with Running(source):
                sent = sum(sim.calls.values())
                cases: list[tuple[str, object, str]] = [
                    ("ahu1.model", "X", 'point "ahu1.model" is not writable'),
                    ("ahu1.supply_setpoint", 35.0, "35.0 is above its max 28.0"),
                    ("ahu1.supply_setpoint", "20", "is not a number"),
                    ("ahu1.fan_running", 1, "is not true or false"),
                    ("ahu1.command_word", 1.5, "is not one of them"),
                ]
                for name, value, message in cases:
                    with pytest.raises(WriteError, match=message):
                        await source.write(name, value)  # type: ignore[arg-type]
                with pytest.raises(WriteError, match="no write priorities"):
                    await source.write("ahu1.supply_setpoint", 20.0, priority=8)
                with pytest.raises(UnknownPointError, match=r'no point "ahu1\.nope" on bus ahu1'):
                    await source.write("ahu1.nope", 1)
                assert sum(sim.calls.values()) - sent < 5  # only polls went out meanwhile
                with pytest.raises(WriteError, match=r'"ahu1.damper_position": the device refused the write: '
                                                     r"DEVICE_EXCEPTION 2 \(illegal data address\)"):
                    await source.write("ahu1.damper_position", 5)
                sim.set_offline(1)
                with pytest.raises(WriteError, match="the write may not have been done: NO_ANSWER"):
                    await source.write("ahu1.supply_setpoint", 20.0)
                sim.set_offline(1, False)
            assert source.stats()["write_errors"] == 2

    asyncio.run(run())


def test_a_write_in_flight_when_the_bus_stops_fails_instead_of_hanging() -> None:
    async def run() -> None:
        async with BuildingSimulator(port=0) as sim:
            source = ModbusTcpSource(dataclasses.replace(building_devices(sim.host, sim.port)[2], timeout_s=5.0))
            async with Running(source):
                sim.set_delay(3, 10.0)
                write = asyncio.create_task(source.write("room1.setpoint", 20.0))
                await eventually(lambda: sim.calls[3, 6], "the write to reach the device")
            with pytest.raises(WriteError, match="bus room1 stopped during the job"):
                await write

    asyncio.run(run())


def test_read_now_reads_at_once() -> None:
    async def run() -> None:
        async with BuildingSimulator(port=0) as sim:
            source = ModbusTcpSource(dataclasses.replace(building_devices(sim.host, sim.port)[1], poll_interval_s=3600))
            names = ["meter1.energy", "meter1.voltage_l1"]
            assert {s.quality for s in await source.read_now(names)} == {Quality.NOT_CONNECTED}
            async with Running(source):
                sim.pause()
                samples = await source.read_now(names)
                assert [s.point for s in samples] == names
                assert [s.value for s in samples] == [sim.value(n) for n in names]
                with pytest.raises(UnknownPointError):
                    await source.read_now(["meter1.energy", "ahu1.supply_temp"])

    asyncio.run(run())


def test_scan_finds_the_units_and_their_registers() -> None:
    async def run() -> None:
        async with BuildingSimulator(port=0) as sim:
            target = TcpTarget(sim.host, sim.port, timeout_s=0.2)
            progress: list[tuple[int, int]] = []
            assert await probe_units(target, range(1, 6), on_progress=lambda *a: progress.append(a)) == [1, 2, 3]
            assert progress == [(n, 5) for n in range(1, 6)]
            sim.pause()
            found = await scan_registers(target, 3, "holding", 0, 199)
            assert [a for a, _ in found] == [0, 1, 2, 3]
            assert found[2] == (2, 210)  # room1.setpoint 21.0 at scale 0.1
            coils = await scan_registers(target, 1, "coil", 0, 99)
            assert coils[0] == (0, 1) and len(coils) == 16  # pymodbus's simulator keeps bits 16 to a register
            points = suggest_points(found)
            text = points_to_toml("room1", points)
            raw = tomllib.loads(f'[[modbus_tcp]]\nname = "room1"\nhost = "{sim.host}"\nport = {sim.port}\n'
                                f"unit_id = 3\npoll_interval_s = 1\n{text}")
            device = parse_modbus_tcp_device(raw["modbus_tcp"][0])
            async with Running(ModbusTcpSource(device)) as r:
                await r.settle("room1", Quality.GOOD)
            assert r.latest()["room1.hr_40003"].value == 210
            with pytest.raises(ScanError, match="no answer from unit 9 on"):
                await scan_registers(target, 9, "holding", 0, 10)

    asyncio.run(run())


def test_scan_errors_are_in_the_installers_words() -> None:
    async def run() -> None:
        port = free_port()
        with pytest.raises(ScanError, match=f"connection refused by 127.0.0.1:{port}: nothing listens"):
            await probe_units(TcpTarget("127.0.0.1", port, timeout_s=0.5), [1])

    asyncio.run(run())


class Garbler(asyncio.Protocol):
    """Answers every request with `reply(request)`: a stand-in for a broken device."""

    def __init__(self, reply: Callable[[bytes], bytes]) -> None:
        self.reply = reply
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(self.reply(data))


@pytest.mark.parametrize(
    "body",
    [
        bytes.fromhex("0007 01 03 06 0000 0000"),  # byte count 6, only 4 bytes follow
        bytes.fromhex("0003 01 07 00"),  # a function code we never asked for
        bytes.fromhex("0005 01 03 02 0000"),  # well framed, but one register for two
    ],
    ids=["byte-count", "function", "short"],
)
def test_a_garbled_answer_gives_bad_frame(body: bytes, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    def reply(request: bytes) -> bytes:
        return request[:2] + b"\x00\x00" + body  # echo the transaction id

    async def run() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: Garbler(reply), "127.0.0.1", 0)
        port = int(server.sockets[0].getsockname()[1])
        async with server:
            point = ModbusPoint(name="t", table="holding", address=0, type="float32")
            device = ModbusTcpDevice(name="broken", host="127.0.0.1", port=port, points=(point,), **FAST)  # type: ignore[arg-type]
            source = ModbusTcpSource(device)
            async with Running(source) as r:
                await eventually(lambda: len(r.samples) >= 2, "two polls")
            assert {(s.value, s.quality) for s in r.samples} == {(None, Quality.BAD_FRAME)}

    asyncio.run(run())
    no_errors_logged(caplog)


def test_the_cli_runs_until_interrupted() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "drivers.sim.modbus_building", "--port", "0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "the simulator printed nothing"
        line = proc.stdout.readline()
        assert "building simulator on 127.0.0.1:" in line
        assert int(line.split("127.0.0.1:")[1].split()[0]) > 0
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "stopped" in out


def test_the_cli_prints_the_box_configuration() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "drivers.sim.modbus_building", "--port", "15020", "--print-toml"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        check=True, timeout=30,
    ).stdout
    devices = [parse_modbus_tcp_device(d) for d in tomllib.loads(out)["modbus_tcp"]]
    assert [(d.name, d.port, d.unit_id) for d in devices] == [
        ("ahu1", 15020, 1), ("meter1", 15020, 2), ("room1", 15020, 3),
    ]


def test_a_busy_port_is_a_simulator_error() -> None:
    async def run() -> None:
        async with BuildingSimulator(port=0) as sim:
            with pytest.raises(SimulatorError, match=f"cannot listen on 127.0.0.1:{sim.port}"):
                await BuildingSimulator(port=sim.port).start()
            assert set(sim.values()) >= set(UNITS)

    asyncio.run(run())


