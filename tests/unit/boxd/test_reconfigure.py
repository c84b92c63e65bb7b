"""The daemon's side of a configuration push, on fake buses: applied without a restart, refused
with its reasons, rolled back when none of its devices works, ignored when handled before."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

import boxconfig as config
from boxd import daemon
from boxd.daemon import Daemon
from boxd.supervisor import Supervisor
from drivers import PointSource, Quality
from proto import wire
from proto.replies import ON_PROBATION, decode_reply
from tests.support.fakebus import FakeBus

DEAD_HOST = "10.0.0.99"  # the fake buses of a device at this host never answer


def device(name: str, host: str = "127.0.0.1", points: tuple[str, ...] = ("t",)) -> str:
    pts = "".join(f'[[modbus_tcp.points]]\nname = "{p}"\ntable = "holding"\naddress = {i}\ntype = "uint16"\n'
                  for i, p in enumerate(points))
    return f'[[modbus_tcp]]\nname = "{name}"\nhost = "{host}"\npoll_interval_s = 1.0\n{pts}\n'


def fake_sources(cfg: config.BoxConfig) -> list[PointSource]:
    out: list[PointSource] = []
    for d in cfg.modbus_tcp:
        if d.name == "boom":
            raise RuntimeError("no such serial port")
        bus = FakeBus(d.name, [p.name for p in d.points], interval_s=0.02)
        if d.host == DEAD_HOST:
            bus.quality = {p.name: Quality.NOT_CONNECTED for p in bus.points()}
        out.append(bus)
    return out


async def eventually(cond: Callable[[], bool]) -> None:
    """Poll `cond` on the loop (the caller's `wait_for` bounds the whole test)."""
    while True:
        if cond():
            return
        await asyncio.sleep(0.01)


def push(version: int, text: str) -> bytes:
    return wire.encode_doc({"version": version, "toml": text})


def run_daemon(tmp_path: Path, first: str, body: Callable[[Daemon, list[dict[str, Any]]], Coroutine[Any, Any, None]],
               probation_s: float = 0.5) -> None:
    path = tmp_path / "boxd.toml"
    path.write_text(first)

    async def main() -> None:
        d = Daemon(tmp_path, path, probation_s=probation_s)
        replies: list[dict[str, Any]] = []
        d._reply = lambda payload: replies.append(decode_reply(payload).to_doc()) or None  # type: ignore[method-assign]
        d.queue.open()
        d._cfg, d.files.running = daemon.reconfig.load_at_start(path, tmp_path)
        d._supervisor = Supervisor(d._use_sources(daemon.make_sources(d._cfg)))
        runner = asyncio.create_task(d._supervisor.run())
        try:
            await eventually(lambda: d._good > 0)
            await body(d, replies)
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
            d.queue.close()

    asyncio.run(asyncio.wait_for(main(), 30))


@pytest.fixture(autouse=True)
def fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon, "make_sources", fake_sources)


def test_a_push_replaces_the_buses_and_the_table_without_a_restart(tmp_path: Path) -> None:
    first = device("a")

    async def body(d: Daemon, replies: list[dict[str, Any]]) -> None:
        table = d._table_id
        await d._on_config(push(1, first + device("b", points=("x", "y"))))
        assert replies[-1]["status"] == "applied"
        assert sorted(d._supervisor.names()) == ["bus:a", "bus:b"]  # type: ignore[union-attr]
        assert set(d._buses.source_of) == {"a.t", "b.x", "b.y"} and d._table_id != table
        assert (tmp_path / "boxd.toml").read_text() == first + device("b", points=("x", "y"))
        assert (tmp_path / "config.last-good.toml").read_text() == first
        assert replies[-1]["reasons"][0].startswith(ON_PROBATION)  # the platform waits for the outcome
        await eventually(lambda: replies[-1]["status"] == "kept")  # a good reading came: the final answer
        assert [r["status"] for r in replies] == ["applied", "kept"]
        assert d.status()["config_version"] == 1 and d.status()["points"] == 3
        await d._on_config(push(1, first))  # the retained push again: ignored
        assert len(replies) == 2

    run_daemon(tmp_path, first, body)


def test_a_refused_push_changes_nothing(tmp_path: Path) -> None:
    first = device("a")

    async def body(d: Daemon, replies: list[dict[str, Any]]) -> None:
        await d._on_config(push(3, device("a") + device("a")))
        assert replies[-1]["status"] == "rejected" and replies[-1]["version"] == 3
        assert any("used twice" in r for r in replies[-1]["reasons"])
        await d._on_config(b"\x00garbage")
        assert replies[-1] == {"kind": "config", "version": 0, "status": "rejected", "reasons": replies[-1]["reasons"]}
        assert d._supervisor.names() == ["bus:a"]  # type: ignore[union-attr]
        assert (tmp_path / "boxd.toml").read_text() == first

    run_daemon(tmp_path, first, body)


def test_a_push_whose_devices_all_fail_is_rolled_back(tmp_path: Path) -> None:
    first = device("a")

    async def body(d: Daemon, replies: list[dict[str, Any]]) -> None:
        await d._on_config(push(5, device("dead", DEAD_HOST)))
        assert replies[-1]["status"] == "applied"
        await eventually(lambda: replies[-1]["status"] == "rolled_back")
        assert replies[-1]["version"] == 5 and "not_connected" in replies[-1]["reasons"][0]
        assert d._supervisor.names() == ["bus:a"]  # type: ignore[union-attr]
        assert (tmp_path / "boxd.toml").read_text() == first
        assert d.files.handled_version() == 5

    run_daemon(tmp_path, first, body)


def test_a_push_during_a_probation_keeps_the_proven_configuration_as_the_last_good(tmp_path: Path) -> None:
    first = device("a")

    async def body(d: Daemon, replies: list[dict[str, Any]]) -> None:
        await d._on_config(push(1, device("dead", DEAD_HOST)))
        await d._on_config(push(2, device("dead2", DEAD_HOST)))  # before the first proved anything
        assert (tmp_path / "config.last-good.toml").read_text() == first
        await eventually(lambda: replies[-1]["status"] == "rolled_back")
        assert replies[-1]["version"] == 2 and d._supervisor.names() == ["bus:a"]  # type: ignore[union-attr]
        assert [r["status"] for r in replies] == ["applied", "applied", "rolled_back"]

    run_daemon(tmp_path, first, body)


def test_a_push_whose_buses_cannot_be_built_is_refused_and_the_old_ones_run_again(tmp_path: Path) -> None:
    first = device("a")

    async def body(d: Daemon, replies: list[dict[str, Any]]) -> None:
        await d._on_config(push(2, device("boom")))
        assert replies[-1]["status"] == "rejected" and "no such serial port" in replies[-1]["reasons"][0]
        assert d._supervisor.names() == ["bus:a"]  # type: ignore[union-attr]
        assert (tmp_path / "boxd.toml").read_text() == first
        d._good = 0
        await eventually(lambda: d._good > 0)

    run_daemon(tmp_path, first, body)


def hostile_payloads(seed: int = 6) -> list[tuple[str, bytes]]:
    """Garbage, and valid messages cut short, bit-flipped or with wrong fields."""
    import random

    rng = random.Random(seed)
    good_cfg = push(9, device("a") + device("b"))
    good_cmd = wire.encode_doc({"id": "c-9", "name": "write", "expires": 4e9, "args": {"point": "a.t", "value": 1}})
    out: list[tuple[str, bytes]] = []
    for leaf, good in (("config", good_cfg), ("cmd", good_cmd)):
        out += [(leaf, b""), (leaf, b"\x00"), (leaf, b"\x01" + b"\x9f" * 5000), (leaf, rng.randbytes(300_000))]
        for _ in range(60):
            b = bytearray(good)
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            out.append((leaf, bytes(b)))
            out.append((leaf, good[: rng.randrange(len(good))]))
    for doc in ({"id": "c-1", "name": "write", "expires": 4e9, "args": {"point": "a.t", "value": [1] * 5}},
                {"id": "c-2", "name": "read", "expires": 4e9, "args": {"points": ["x"] * 1000}},
                {"id": "c-3", "name": "write", "expires": 4e9, "args": {"point": "a.t", "value": 1, "extra": 1}},
                {"id": "c-4", "name": "rm -rf", "expires": 4e9, "args": {}},
                {"version": True, "toml": ""}, {"version": 10, "toml": "x" * 10}):
        out.append(("cmd" if "id" in doc else "config", wire.encode_doc(doc)))
    return out


def test_hostile_messages_never_break_the_daemon(tmp_path: Path) -> None:
    first = device("a")

    async def body(d: Daemon, replies: list[dict[str, Any]]) -> None:
        for leaf, payload in hostile_payloads():
            if leaf == "config":
                await d._on_config(payload)
            else:
                await d._on_command(payload)
        assert replies  # refusals were answered (decode_reply checked each)
        assert all(r["status"] in ("rejected", "ok", "failed", "applied", "duplicate") for r in replies)
        assert any(n.startswith("bus:") for n in d._supervisor.names())  # type: ignore[union-attr]
        d._good = 0
        await eventually(lambda: d._good > 0)  # the buses still run

    run_daemon(tmp_path, first, body)


def test_a_failure_inside_a_handler_is_answered_and_the_loop_goes_on(tmp_path: Path) -> None:
    async def body(d: Daemon, replies: list[dict[str, Any]]) -> None:
        async def boom(_payload: bytes) -> None:
            raise KeyError("a bug")

        d._on_command = boom  # type: ignore[method-assign]
        runner = asyncio.create_task(d._downlink_loop())
        cmd = wire.encode_doc({"id": "c-7", "name": "logs", "expires": 4e9, "args": {}})
        d._downlink("cmd", cmd)
        d._downlink("cmd", cmd)
        await eventually(lambda: len(replies) == 2)
        runner.cancel()
        assert replies[0]["status"] == "failed" and "KeyError" in replies[0]["detail"]

    run_daemon(tmp_path, device("a"), body)
