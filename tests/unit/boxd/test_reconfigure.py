"""The daemon's side of a configuration push, on fake buses: applied without a restart, refused
with its reasons, rolled back when none of its devices works, ignored when handled before."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

import boxconfig as config
from boxd import fieldbus, reconfig
from boxd.daemon import Daemon
from drivers import PointSource, Quality
from proto import wire
from proto.replies import ON_PROBATION, decode_reply
from proto.topics import Up
from tests.support.fakebus import FakeBus
from tests.support.fakeident import load_fake
from tests.support.fakeuplink import FakeUplink
from tests.support.wait import until

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


def push(version: int, text: str) -> bytes:
    return wire.encode_doc({"version": version, "toml": text})


class Replies:
    """What the daemon replied to the platform so far (read from the fake uplink, decoded)."""

    def __init__(self, up: FakeUplink) -> None:
        self.up = up

    def all(self) -> list[dict[str, Any]]:
        return [decode_reply(s.payload).to_doc() for s in self.up.on(Up.REPLIES)]

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.all()[i]

    def __len__(self) -> int:
        return len(self.up.on(Up.REPLIES))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.all())


def run_daemon(tmp_path: Path, first: str, body: Callable[[Daemon, Replies], Coroutine[Any, Any, None]],
               probation_s: float = 0.5) -> None:
    path = tmp_path / "boxd.toml"
    path.write_text(first)

    async def main() -> None:
        d = Daemon(tmp_path, path, probation_s=probation_s, uplink=FakeUplink)
        d.queue.open()
        await d.link.start(load_fake(tmp_path))
        assert isinstance(d.link.uplink, FakeUplink)
        cfg, d.files.running = reconfig.load_at_start(path, tmp_path)
        d.buses.use(cfg)
        runner = asyncio.create_task(d.supervisor.run())
        try:
            await until(lambda: d.buses.good > 0)
            await body(d, Replies(d.link.uplink))
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
            d.queue.close()

    asyncio.run(asyncio.wait_for(main(), 30))


@pytest.fixture(autouse=True)
def fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fieldbus, "make_sources", fake_sources)


def test_a_push_replaces_the_buses_and_the_table_without_a_restart(tmp_path: Path) -> None:
    first = device("a")

    async def body(d: Daemon, replies: Replies) -> None:
        table = d.buses.table_id
        await d.config.on_push(push(1, first + device("b", points=("x", "y"))))
        assert replies[-1]["status"] == "applied"
        assert sorted(d.supervisor.names()) == ["bus:a", "bus:b"]
        assert set(d.buses.points.source_of) == {"a.t", "b.x", "b.y"} and d.buses.table_id != table
        assert (tmp_path / "boxd.toml").read_text() == first + device("b", points=("x", "y"))
        assert (tmp_path / "config.last-good.toml").read_text() == first
        assert replies[-1]["reasons"][0].startswith(ON_PROBATION)  # the platform waits for the outcome
        await until(lambda: replies[-1]["status"] == "kept")  # a good reading came: the final answer
        assert [r["status"] for r in replies] == ["applied", "kept"]
        assert d.health.status()["config_version"] == 1 and d.health.status()["points"] == 3
        await d.config.on_push(push(1, first))  # the retained push again: ignored
        assert len(replies) == 2

    run_daemon(tmp_path, first, body)


def test_a_refused_push_changes_nothing(tmp_path: Path) -> None:
    first = device("a")

    async def body(d: Daemon, replies: Replies) -> None:
        await d.config.on_push(push(3, device("a") + device("a")))
        assert replies[-1]["status"] == "rejected" and replies[-1]["version"] == 3
        assert any("used twice" in r for r in replies[-1]["reasons"])
        await d.config.on_push(b"\x00garbage")
        assert replies[-1] == {"kind": "config", "version": 0, "status": "rejected", "reasons": replies[-1]["reasons"]}
        assert d.supervisor.names() == ["bus:a"]
        assert (tmp_path / "boxd.toml").read_text() == first

    run_daemon(tmp_path, first, body)


def test_a_push_whose_devices_all_fail_is_rolled_back(tmp_path: Path) -> None:
    first = device("a")

    async def body(d: Daemon, replies: Replies) -> None:
        await d.config.on_push(push(5, device("dead", DEAD_HOST)))
        assert replies[-1]["status"] == "applied"
        await until(lambda: replies[-1]["status"] == "rolled_back")
        assert replies[-1]["version"] == 5 and "not_connected" in replies[-1]["reasons"][0]
        assert d.supervisor.names() == ["bus:a"]
        assert (tmp_path / "boxd.toml").read_text() == first
        assert d.files.handled_version() == 5

    run_daemon(tmp_path, first, body)


def test_a_push_during_a_probation_keeps_the_proven_configuration_as_the_last_good(tmp_path: Path) -> None:
    first = device("a")

    async def body(d: Daemon, replies: Replies) -> None:
        await d.config.on_push(push(1, device("dead", DEAD_HOST)))
        await d.config.on_push(push(2, device("dead2", DEAD_HOST)))  # before the first proved anything
        assert (tmp_path / "config.last-good.toml").read_text() == first
        await until(lambda: replies[-1]["status"] == "rolled_back")
        assert replies[-1]["version"] == 2 and d.supervisor.names() == ["bus:a"]
        assert [r["status"] for r in replies] == ["applied", "applied", "rolled_back"]

    run_daemon(tmp_path, first, body)


def test_a_push_whose_buses_cannot_be_built_is_refused_and_the_old_ones_run_again(tmp_path: Path) -> None:
    first = device("a")

    async def body(d: Daemon, replies: Replies) -> None:
        await d.config.on_push(push(2, device("boom")))
        assert replies[-1]["status"] == "rejected" and "no such serial port" in replies[-1]["reasons"][0]
        assert d.supervisor.names() == ["bus:a"]
        assert (tmp_path / "boxd.toml").read_text() == first
        good = d.buses.good
        await until(lambda: d.buses.good > good)

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

    async def body(d: Daemon, replies: Replies) -> None:
        for leaf, payload in hostile_payloads():
            if leaf == "config":
                await d.config.on_push(payload)
            else:
                await d.inbox.on_command(payload)
        assert replies  # refusals were answered (decode_reply checked each)
        assert all(r["status"] in ("rejected", "ok", "failed", "applied", "duplicate") for r in replies)
        assert any(n.startswith("bus:") for n in d.supervisor.names())
        good = d.buses.good
        await until(lambda: d.buses.good > good)  # the buses still run

    run_daemon(tmp_path, first, body)


def test_a_failure_inside_a_handler_is_answered_and_the_loop_goes_on(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    async def body(d: Daemon, replies: Replies) -> None:
        async def boom(_payload: bytes) -> None:
            raise KeyError("a bug")

        monkeypatch.setattr(d.inbox, "on_command", boom)
        runner = asyncio.create_task(d.inbox.run())
        cmd = wire.encode_doc({"id": "c-7", "name": "logs", "expires": 4e9, "args": {}})
        d.inbox.receive("cmd", cmd)
        d.inbox.receive("cmd", cmd)
        await until(lambda: len(replies) == 2)
        runner.cancel()
        assert replies[0]["status"] == "failed" and "KeyError" in replies[0]["detail"]

    run_daemon(tmp_path, device("a"), body)
