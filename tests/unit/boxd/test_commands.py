"""Commands run once, never after their expiry, only within the configuration's points, only when
their job's conditions hold and (single jobs) one at a time; the runner never raises, and the seen
ids survive a restart."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from boxd.commands import JOBS, SEEN_FILE, Buses, CommandRunner, Outcome, Renew, Updates, buses_of
from boxd.errors import CommandFailedError
from boxd.logring import LogRing
from drivers import Quality, Sample
from proto import wire
from proto.commands import Command, Update, UpdateAbort
from proto.downlink import decode_command
from proto.errors import RejectedError
from tests.support.fakebus import FakeBus


def reply_of(outcome: Outcome) -> dict[str, object]:
    doc = wire.unframe_untrusted(outcome.reply, max_payload=10**6, max_inflated=10**6, max_depth=4,
                                 max_items=10_000)
    assert isinstance(doc, dict)
    return doc


def cmd(name: str, args: dict[str, object], cmd_id: str = "c-1", ttl: float = 60) -> Command:
    doc = {"id": cmd_id, "name": name, "expires": time.time() + ttl, "args": args}
    decoded = decode_command(wire.encode_doc(doc))
    assert isinstance(decoded, Command)
    return decoded


def setup(tmp_path: Path, *, reboot_command: str = "", now: Callable[[], float] = time.time,
          time_limit_s: float = 60.0, renew: Renew | None = None,
          updates: Updates | None = None) -> tuple[CommandRunner, FakeBus, Buses, LogRing]:
    bus = FakeBus("ahu1", ["setpoint", "temp"], writable={"setpoint": (12.0, 28.0)})
    ring = LogRing(limit=50)
    runner = CommandRunner(tmp_path, ring, reboot_command, now=now, time_limit_s=time_limit_s, renew=renew,
                           updates=updates)
    runner.load()
    return runner, bus, buses_of([bus]), ring


def run(runner: CommandRunner, c: Command, buses: Buses) -> dict[str, object]:
    return reply_of(asyncio.run(runner.run(c, buses)))


def test_a_write_within_range_reaches_the_bus(tmp_path: Path) -> None:
    runner, bus, buses, _ = setup(tmp_path)
    r = run(runner, cmd("write", {"point": "ahu1.setpoint", "value": 21.5}), buses)
    assert r["status"] == "ok" and bus.writes == [("ahu1.setpoint", 21.5, None)]


def test_a_write_to_a_read_only_point_or_out_of_range_is_rejected_and_not_done(tmp_path: Path) -> None:
    runner, bus, buses, _ = setup(tmp_path)
    r = run(runner, cmd("write", {"point": "ahu1.temp", "value": 21.5}, "c-ro"), buses)
    assert r["status"] == "rejected" and "not writable" in str(r["detail"])
    r = run(runner, cmd("write", {"point": "ahu1.setpoint", "value": 99}, "c-hi"), buses)
    assert r["status"] == "rejected" and "above its max" in str(r["detail"])
    r = run(runner, cmd("write", {"point": "nope.x", "value": 1}, "c-unk"), buses)
    assert r["status"] == "rejected" and "not a point of this Box" in str(r["detail"])
    r = run(runner, cmd("write", {"point": "ahu1.setpoint", "value": 20, "priority": 8}, "c-prio"), buses)
    assert r["status"] == "rejected" and "priorities" in str(r["detail"])
    assert bus.writes == []


def test_a_bus_refusal_is_failed_with_its_reason(tmp_path: Path) -> None:
    runner, bus, buses, _ = setup(tmp_path)

    bus.fail_writes = "the device answered exception 2 (illegal address)"
    r = run(runner, cmd("write", {"point": "ahu1.setpoint", "value": 20.0}), buses)
    assert r["status"] == "failed" and "illegal address" in str(r["detail"])


def test_a_repeated_id_runs_once_even_after_a_restart(tmp_path: Path) -> None:
    runner, bus, buses, _ = setup(tmp_path)
    c = cmd("write", {"point": "ahu1.setpoint", "value": 20.0}, "c-rep")
    assert run(runner, c, buses)["status"] == "ok"
    assert run(runner, c, buses)["status"] == "duplicate"
    again, _, _, _ = setup(tmp_path)  # a new daemon: the ids were kept on disk
    assert run(again, c, buses)["status"] == "duplicate"
    assert bus.writes == [("ahu1.setpoint", 20.0, None)]


def test_an_unreadable_seen_file_starts_empty(tmp_path: Path) -> None:
    (tmp_path / SEEN_FILE).write_bytes(b"{garbage")
    runner, _, buses, _ = setup(tmp_path)
    assert len(runner.seen) == 0
    assert run(runner, cmd("logs", {}), buses)["status"] == "ok"


def test_an_expired_command_does_not_run(tmp_path: Path) -> None:
    runner, bus, buses, _ = setup(tmp_path, now=lambda: time.time() + 3600)
    r = run(runner, cmd("write", {"point": "ahu1.setpoint", "value": 20.0}), buses)
    assert r["status"] == "expired" and bus.writes == []


def test_read_gives_values_and_faults_and_refuses_unknown_points(tmp_path: Path) -> None:
    runner, bus, buses, _ = setup(tmp_path)
    bus.values["ahu1.temp"] = 19.5
    bus.quality["ahu1.setpoint"] = Quality.NO_ANSWER
    r = run(runner, cmd("read", {"points": ["ahu1.temp", "ahu1.setpoint"]}), buses)
    assert r["status"] == "ok"
    assert r["result"] == {"ahu1.temp": 19.5, "ahu1.setpoint": None}
    assert r["faults"] == {"ahu1.setpoint": int(Quality.NO_ANSWER)}
    r = run(runner, cmd("read", {"points": ["ahu1.temp", "x.y"]}, "c-2"), buses)
    assert r["status"] == "rejected" and "x.y" in str(r["detail"])


def test_logs_gives_the_last_lines(tmp_path: Path) -> None:
    runner, _, buses, ring = setup(tmp_path)
    logger = logging.getLogger("test.commands.logs")
    logger.addHandler(ring)
    try:
        for i in range(80):
            logger.warning("line %d", i)
    finally:
        logger.removeHandler(ring)
    r = run(runner, cmd("logs", {"lines": 3}), buses)
    lines = r["lines"]
    assert isinstance(lines, list) and len(lines) == 3 and lines[-1].endswith("line 79")
    assert len(ring.tail(1000)) == 50  # bounded


def test_restart_replies_first_and_asks_the_daemon_to_go(tmp_path: Path) -> None:
    runner, _, buses, _ = setup(tmp_path)
    outcome = asyncio.run(runner.run(cmd("restart", {}), buses))
    assert outcome.then == "restart" and reply_of(outcome)["status"] == "ok"


def test_reboot_runs_the_configured_command(tmp_path: Path) -> None:
    mark = tmp_path / "rebooted"
    runner, _, buses, _ = setup(tmp_path, reboot_command=f"touch {mark}")
    assert run(runner, cmd("reboot", {}), buses)["status"] == "ok"
    assert mark.exists()
    runner, _, buses, _ = setup(tmp_path, reboot_command="false")
    r = run(runner, cmd("reboot", {}, "c-2"), buses)
    assert r["status"] == "failed" and "exited with 1" in str(r["detail"])
    runner, _, buses, _ = setup(tmp_path, reboot_command="/nonexistent/reboot")
    assert run(runner, cmd("reboot", {}, "c-3"), buses)["status"] == "failed"


def test_renew_cert_is_refused_for_now(tmp_path: Path) -> None:
    runner, _, buses, _ = setup(tmp_path)
    r = run(runner, cmd("renew_cert", {}), buses)
    assert r["status"] == "rejected" and "not supported yet" in str(r["detail"])


class Broken(FakeBus):
    async def read_now(self, points: Sequence[str]) -> list[Sample]:
        raise KeyError("a bug")


def test_a_failure_inside_a_command_is_replied_as_failed(tmp_path: Path) -> None:
    runner, _, _, _ = setup(tmp_path)
    bus = Broken("ahu1", ["temp"])
    r = run(runner, cmd("read", {"points": ["ahu1.temp"]}), buses_of([bus]))
    assert r["status"] == "failed" and "KeyError" in str(r["detail"])


class Hanging(FakeBus):
    async def read_now(self, points: Sequence[str]) -> list[Sample]:
        await asyncio.Event().wait()
        return []


def test_a_command_that_hangs_fails_at_its_time_limit(tmp_path: Path) -> None:
    runner, _, _, _ = setup(tmp_path, time_limit_s=0.2)
    r = run(runner, cmd("read", {"points": ["ahu1.temp"]}), buses_of([Hanging("ahu1", ["temp"])]))
    assert r["status"] == "failed" and "no result within" in str(r["detail"])


def test_renew_cert_reports_what_the_daemon_did(tmp_path: Path) -> None:
    async def works() -> str:
        return "renewed: valid until 2027-11-24"

    async def fails() -> str:
        raise CommandFailedError("the new certificate did not connect within 45 s")

    runner, _, buses, _ = setup(tmp_path, renew=works)
    r = run(runner, cmd("renew_cert", {}), buses)
    assert r["status"] == "ok" and "2027" in str(r["detail"])
    runner, _, buses, _ = setup(tmp_path, renew=fails)
    r = run(runner, cmd("renew_cert", {}, "c-2"), buses)
    assert r["status"] == "failed" and "did not connect" in str(r["detail"])


# -- declared jobs: one table, conditions, concurrency -----------------------------------------


def test_every_command_has_a_job() -> None:
    from proto.commands import BUILDERS

    assert {c.name for c in JOBS} == set(BUILDERS)


class Switching:
    """An update agent whose update is past its point of no return."""

    past_no_return = "the update to 0.2.0 is past its point of no return (being switched to)"

    def start(self, cmd: Update) -> str:
        raise RejectedError(f"cmd {cmd.id} (update): busy")

    def abort(self, cmd: UpdateAbort) -> str:
        raise RejectedError(f"cmd {cmd.id} (update_abort): too late")


def test_restart_and_reboot_are_refused_while_an_update_is_past_its_point_of_no_return(tmp_path: Path) -> None:
    mark = tmp_path / "rebooted"
    runner, _, buses, _ = setup(tmp_path, reboot_command=f"touch {mark}", updates=Switching())
    for name in ("restart", "reboot"):
        outcome = asyncio.run(runner.run(cmd(name, {}, f"c-{name}"), buses))
        r = reply_of(outcome)
        assert r["status"] == "rejected" and "point of no return" in str(r["detail"]) and outcome.then == ""
    assert not mark.exists()
    assert run(runner, cmd("logs", {}, "c-logs"), buses)["status"] == "ok"  # other commands still run


def test_updates_are_refused_by_a_daemon_without_an_update_agent(tmp_path: Path) -> None:
    runner, _, buses, _ = setup(tmp_path)
    r = run(runner, cmd("update", {"deployment": "d-1", "target": "boxd-0.2.0.tar.gz", "version": "0.2.0"}), buses)
    assert r["status"] == "rejected" and "does not take updates" in str(r["detail"])


def test_two_renewals_never_run_at_once(tmp_path: Path) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    runs = 0

    async def slow() -> str:
        nonlocal runs
        runs += 1
        started.set()
        await release.wait()
        return "renewed"

    async def main() -> list[dict[str, object]]:
        runner, _, buses, _ = setup(tmp_path, renew=slow)
        first = asyncio.ensure_future(runner.run(cmd("renew_cert", {}, "c-1"), buses))
        await started.wait()
        second = await runner.run(cmd("renew_cert", {}, "c-2"), buses)  # while the first runs
        release.set()
        answers = [reply_of(await first), reply_of(second)]
        answers.append(reply_of(await runner.run(cmd("renew_cert", {}, "c-3"), buses)))  # once it is over
        return answers

    first, second, third = asyncio.run(asyncio.wait_for(main(), 10))
    assert first["status"] == "ok" and third["status"] == "ok" and runs == 2
    assert second["status"] == "rejected" and "another renew_cert is running" in str(second["detail"])
