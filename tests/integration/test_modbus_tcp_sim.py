"""ModbusTcpSource against the building simulator over real loopback sockets."""

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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from pymodbus.client import AsyncModbusTcpClient

from drivers import PointInfo, Quality, Sample
from drivers.errors import SimulatorError
from drivers.modbus import (
    ModbusPoint,
    ModbusTcpDevice,
    ModbusTcpSource,
    encode,
    parse_modbus_tcp_device,
)
from drivers.sim import building_devices
from drivers.sim.modbus_building import BuildingSimulator
from tests.support.wait import free_port

T = TypeVar("T")
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


def fast(device: ModbusTcpDevice) -> ModbusTcpDevice:
    """The same device with a short timeout, for a device that is meant to fail."""
    return dataclasses.replace(device, timeout_s=0.2, retries=0)


async def eventually(probe: Callable[[], Awaitable[T]], what: str, within: float = 10.0) -> T:
    """Await `probe` until it returns something truthy, or fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)


def by_name(samples: list[Sample]) -> dict[str, Sample]:
    return {s.point: s for s in samples}


def check_type(info: PointInfo, sample: Sample, scaled: bool) -> None:
    expected = float if scaled and info.kind not in ("bool", "string") else PYTHON_TYPES[info.kind]
    assert type(sample.value) is expected, (info, sample)


def test_all_three_devices_read_with_the_right_values_types_and_units() -> None:
    async def run() -> None:
        async with BuildingSimulator(port=0) as sim:
            raw = tomllib.loads(sim.points_toml())["modbus_tcp"]
            devices = [parse_modbus_tcp_device(d) for d in raw]
            sources = [ModbusTcpSource(d) for d in devices]
            for source in sources:
                await source.start()
            sim.pause()
            try:
                for device, source in zip(devices, sources, strict=True):
                    before = time.time_ns() // 1_000_000
                    samples = await source.read()
                    after = time.time_ns() // 1_000_000
                    infos = source.points()
                    assert [s.point for s in samples] == [i.name for i in infos]
                    assert len(samples) == len(device.points)
                    for info, point, sample in zip(infos, device.points, samples, strict=True):
                        assert sample.quality is Quality.GOOD, sample
                        assert sample.value == sim.value(sample.point), sample
                        assert before <= sample.ts_ms <= after
                        assert info.kind == point.type
                        check_type(info, sample, scaled=point.scale != 1)
                units = {i.name: i.unit for s in sources for i in s.points()}
                assert {k: units[k] for k in UNITS} == UNITS
                values = {s.point: s.value for src in sources for s in await src.read()}
                assert values["ahu1.model"] == "AHU-3000"
                assert values["ahu1.status_fan"] is True and values["ahu1.fan_running"] is True
                assert values["meter1.energy_counter"] == int(values["meter1.energy"])  # type: ignore[arg-type]
                assert 200 < values["meter1.voltage_l1"] < 260  # type: ignore[operator]
            finally:
                for source in sources:
                    await source.stop()

    asyncio.run(run())


def test_values_move_over_time() -> None:
    async def run() -> None:
        async with BuildingSimulator(port=0, update_interval_s=0.05) as sim:
            ahu, _, _ = building_devices(sim.host, sim.port)
            source = ModbusTcpSource(ahu)
            await source.start()
            try:
                first = by_name(await source.read())["ahu1.supply_temp"].value

                async def moved() -> bool:
                    return by_name(await source.read())["ahu1.supply_temp"].value != first

                await eventually(moved, "the supply temperature to change")
            finally:
                await source.stop()
            energy_before = sim.value("meter1.energy")

            async def grew() -> bool:
                return sim.value("meter1.energy") > energy_before  # type: ignore[operator]

            await eventually(grew, "the energy counter to grow")

    asyncio.run(run())


def test_an_offline_unit_gives_no_answer_for_its_points_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    async def run() -> None:
        async with BuildingSimulator(port=0) as sim:
            ahu, meter, room = building_devices(sim.host, sim.port)
            sources = [ModbusTcpSource(ahu), ModbusTcpSource(meter), ModbusTcpSource(fast(room))]
            for source in sources:
                await source.start()
            try:
                sim.set_offline(3)
                for _ in range(3):
                    good, metered, silent = [await s.read() for s in sources]
                    assert {s.quality for s in good + metered} == {Quality.GOOD}
                    assert {s.quality for s in silent} == {Quality.NO_ANSWER}
                    assert {s.value for s in silent} == {None}
                sim.set_offline(3, False)
                assert {s.quality for s in await sources[2].read()} == {Quality.GOOD}
            finally:
                for source in sources:
                    await source.stop()

    asyncio.run(run())
    lines = [r.getMessage() for r in caplog.records if r.name == "drivers.modbus" and "room1" in r.getMessage()]
    assert [line.split(": ", 1)[1] for line in lines] == [
        "lost: NO_ANSWER", "back, 2 read(s) per poll",
    ]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_closed_port_gives_not_connected_and_no_exception() -> None:
    async def run() -> None:
        device = fast(building_devices("127.0.0.1", free_port())[0])
        source = ModbusTcpSource(device)
        assert {s.quality for s in await source.read()} == {Quality.NOT_CONNECTED}  # not started
        await source.start()
        try:
            for _ in range(2):
                samples = await source.read()
                assert len(samples) == len(device.points)
                assert {s.quality for s in samples} == {Quality.NOT_CONNECTED}
                assert {s.value for s in samples} == {None}
        finally:
            await source.stop()

    asyncio.run(run())


def test_a_device_exception_fails_only_its_request() -> None:
    async def run() -> None:
        async with BuildingSimulator(port=0) as sim:
            ahu = building_devices(sim.host, sim.port)[0]
            missing = ModbusPoint(name="missing", table="holding", address=500, type="uint16")
            source = ModbusTcpSource(dataclasses.replace(ahu, points=(*ahu.points, missing)))
            await source.start()
            try:
                samples = by_name(await source.read())
            finally:
                await source.stop()
            assert samples.pop("ahu1.missing").quality is Quality.DEVICE_EXCEPTION
            assert {s.quality for s in samples.values()} == {Quality.GOOD}

    asyncio.run(run())


def test_writes_reach_only_the_writable_setpoints() -> None:
    async def run() -> None:
        async with BuildingSimulator(port=0) as sim:
            client = AsyncModbusTcpClient(sim.host, port=sim.port, timeout=1, retries=0)
            await client.connect()
            try:
                written = await client.write_registers(8, encode(19.5, "float32"), device_id=1)
                assert not written.isError()
                refused = await client.write_register(0, 5, device_id=1)
                assert refused.isError() and refused.exception_code == 2
                assert not (await client.write_register(2, 225, device_id=3)).isError()
            finally:
                client.close()
            assert sim.value("ahu1.supply_setpoint") == 19.5
            assert sim.value("room1.setpoint") == 22.5
            assert sim.value("ahu1.damper_position") != 5  # refused: the model's 10..50 stays

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
            device = ModbusTcpDevice(name="broken", host="127.0.0.1", port=port, poll_interval_s=1,
                                     timeout_s=0.2, retries=0, points=(point,))
            source = ModbusTcpSource(device)
            await source.start()
            try:
                for _ in range(2):
                    (sample,) = await source.read()
                    assert (sample.value, sample.quality) == (None, Quality.BAD_FRAME)
            finally:
                await source.stop()

    asyncio.run(run())
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


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
        port = int(line.split("127.0.0.1:")[1].split()[0])
        assert port > 0
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
