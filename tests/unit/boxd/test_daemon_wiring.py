"""The daemon's wiring, whole, on a fake uplink (no broker): it starts, answers the platform, and a
`restart` command ends it with status 75 once its answer is acknowledged, telling the platform
"restarting" (the `Stop` raised by the downlink task, handled at the daemon's top)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from boxd.daemon import Daemon
from boxd.supervisor import RESTART_STATUS
from proto import wire
from proto.replies import decode_reply
from proto.topics import Up
from tests.support.fakeident import load_fake
from tests.support.fakeuplink import FakeUplink
from tests.support.wait import in_loop, until


def command(name: str, cmd_id: str) -> bytes:
    return wire.encode_doc({"id": cmd_id, "name": name, "expires": time.time() + 60, "args": {}})


@in_loop
async def test_a_restart_command_is_answered_then_the_daemon_exits_75(tmp_path: Path) -> None:
    load_fake(tmp_path)
    (tmp_path / "boxd.toml").write_text("")
    d = Daemon(tmp_path, tmp_path / "boxd.toml", uplink=FakeUplink)
    running = asyncio.ensure_future(d.run())
    await until(lambda: d.link.uplink is not None and d.link.connected())
    up = d.link.uplink
    assert isinstance(up, FakeUplink)
    await until(lambda: up.on(Up.HEALTH))  # a heartbeat at once on connecting
    assert up.on(Up.META)[0].retain  # the point table, retained
    assert up.on_message is not None
    up.on_message("cmd", command("logs", "c-1"))
    await until(lambda: up.on(Up.REPLIES))
    assert decode_reply(up.on(Up.REPLIES)[0].payload).status == "ok"
    up.on_message("cmd", command("restart", "c-2"))
    await until(lambda: len(up.on(Up.REPLIES)) == 2)
    answer = up.on(Up.REPLIES)[1]
    assert decode_reply(answer.payload).status == "ok"
    up.ack(answer.mid)
    await running
    assert d.exit_status == RESTART_STATUS and up.stopped == "restarting"
    assert up.history == [f"ack {answer.mid}", "stop restarting"]  # it went once the broker had the answer
    assert not (tmp_path / "run" / "status.json").exists()  # the runtime task cleaned up

