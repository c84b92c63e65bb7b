"""Configurations and commands from the platform, end to end: the reference cloud pushes, a real
boxd process (Modbus TCP simulator behind it) applies, rolls back, runs commands and answers."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from cloud.platform import Cloud
from drivers import Quality
from proto import wire
from proto.topics import Down
from tests.support.boxproc import BoxProcess
from tests.support.cloudkit import provision
from tests.support.simthread import SimThread
from tests.support.wait import free_port, wait_for

POLL_S = 0.5
PROBATION_S = 3.0
HEAD = "[uplink]\nbatch_delay_ms = 100\nreconnect_max_s = 2\nheartbeat_s = 5\n\n"


@pytest.fixture(scope="module")
def building() -> Iterator[SimThread]:
    with SimThread(update_interval_s=0.2) as s:
        yield s


def full_config(sim: SimThread) -> str:
    return HEAD + sim.sim.points_toml(POLL_S)


def without_point(text: str, device: str, point: str) -> str:
    """`text` without the point `device.point` (its [[modbus_tcp.points]] block)."""
    start = text.index(f'name = "{device}"')
    block = f'[[modbus_tcp.points]]\nname = "{point}"\n'
    at = text.index(block, start)
    end = text.find("\n\n", at)
    return text[:at] + text[end + 2:]


def _doc(value: object) -> dict[str, object]:
    """A reply's field that is a document."""
    assert isinstance(value, dict), value
    return value


def _strings(value: object) -> list[str]:
    """A reply's field that is a list of strings."""
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), value
    return value


class Box:
    """A provisioned boxd process and its id in the cloud."""

    def __init__(self, cloud: Cloud, tmp: Path, serial: str, text: str, env: dict[str, str] | None = None) -> None:
        self.cloud = cloud
        self.box_id = provision(cloud, tmp, serial).box_id
        self.config = tmp / "boxd.toml"
        self.config.write_text(text)
        self.env = {"BOXD_PROBATION_S": str(PROBATION_S), **(env or {})}
        self.proc = BoxProcess.start(tmp, self.config, env=self.env)

    def restart(self) -> None:
        self.proc.stop()
        self.proc = BoxProcess.start(self.proc.state, self.config, env=self.env)

    def latest(self) -> dict[str, tuple[int, object, int]]:
        return {p: (t, v, q) for p, t, v, q, _ in self.cloud.store.latest(self.box_id)}

    def good_after(self, point: str, ts_ms: float) -> bool:
        t, _, q = self.latest().get(point, (0, None, -1))
        return q == Quality.GOOD and t > ts_ms

    def config_answer(self, version: int, timeout: float = 30) -> tuple[str, list[str]]:
        def answered() -> tuple[str, list[str]] | None:
            row = next((r for r in self.cloud.store.configs(self.box_id, 50) if r.version == version), None)
            return (row.status, row.reasons) if row is not None and row.status else None
        return wait_for(answered, timeout, f"the Box's answer to configuration {version}")

    def command_answer(self, cmd_id: str, timeout: float = 30) -> dict[str, object]:
        def answered() -> dict[str, object] | None:
            row = self.cloud.store.command(cmd_id)
            return row.reply if row is not None and row.status else None
        return wait_for(answered, timeout, f"the Box's answer to command {cmd_id}")

    def log(self) -> str:
        return self.proc.log.read_text()


class MakeBox(Protocol):
    """The `make_box` fixture: a new `Box` of the test, with this configuration and extra environment."""

    def __call__(self, text: str, env: dict[str, str] | None = None) -> Box: ...


@pytest.fixture
def make_box(cloud: Cloud, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[MakeBox]:
    made: list[Box] = []
    counter = iter(range(100))

    def make(text: str, env: dict[str, str] | None = None) -> Box:
        n = next(counter)
        serial = f"DL-{request.node.name[5:28].replace('_', '-')}-{n}"
        box = Box(cloud, tmp_path / f"box{n}", serial, text, env)
        made.append(box)
        return box

    try:
        yield make
    finally:
        for b in made:
            b.proc.stop()


def test_a_new_configuration_adds_a_point_without_a_restart(building: SimThread, make_box: MakeBox) -> None:
    full = full_config(building)
    old = without_point(full, "ahu1", "outdoor_temp")
    box = make_box(old)
    box.proc.wait_connected()
    wait_for(lambda: box.good_after("ahu1.supply_temp", 0), 30, "data of the first configuration")
    assert "ahu1.outdoor_temp" not in box.latest()
    pid = box.proc.proc.pid

    version = box.cloud.push_config(box.box_id, full)
    status, reasons = box.config_answer(version)  # "applied, on probation", or already "kept"
    assert status == "kept" or (status == "applied" and reasons[0].startswith("on probation")), (status, reasons)
    wait_for(lambda: box.config_answer(version)[0] == "kept", 30, "the Box to keep it (a good reading came)")
    wait_for(lambda: box.good_after("ahu1.outdoor_temp", 0), 30, "the new point's data")
    assert box.proc.proc.poll() is None and box.proc.proc.pid == pid
    assert box.config.read_text() == full
    assert (box.proc.state / "config.last-good.toml").read_text() == old
    assert (box.proc.state / "config.version").read_text().strip() == str(version)
    # the old points go on, under the new table
    since = time.time() * 1000
    wait_for(lambda: box.good_after("ahu1.supply_temp", since), 30, "the old points' data after the change")

    # the retained push comes again at the next connection: handled once, not applied again
    box.restart()
    box.proc.wait_connected()
    wait_for(lambda: f"configuration {version} was handled before" in box.proc.log.read_text(), 30,
             "the retained push to be recognised")
    since = time.time() * 1000
    wait_for(lambda: box.good_after("ahu1.outdoor_temp", since), 30, "data after the restart")
    state = box.cloud.store.config_state(box.box_id)
    assert state is not None and state.status == "kept"


def test_a_broken_configuration_is_rejected_with_its_reasons_and_the_old_one_runs(
    building: SimThread, make_box: MakeBox
) -> None:
    good = full_config(building)
    box = make_box(good)
    box.proc.wait_connected()
    wait_for(lambda: box.good_after("ahu1.supply_temp", 0), 30, "data")
    broken = good.replace('type = "float32"', 'type = "float99"', 1).replace('name = "meter1"', 'name = "room1"', 1)
    version = box.cloud.push_config(box.box_id, broken, check=False)
    status, reasons = box.config_answer(version)
    assert status == "rejected"
    assert any("float99" in r for r in reasons), reasons
    assert any('"room1" is used twice' in r for r in reasons), reasons
    assert box.config.read_text() == good
    since = time.time() * 1000
    wait_for(lambda: box.good_after("meter1.energy", since) or box.good_after("ahu1.supply_temp", since), 30,
             "data after the rejection")
    # not TOML at all, and a garbage payload on the topic: refused, the daemon goes on
    version = box.cloud.push_config(box.box_id, "[[modbus_tcp]\nname = ", check=False)
    status, reasons = box.config_answer(version)
    assert status == "rejected" and "not valid TOML" in reasons[0]
    assert box.cloud.receiver is not None
    box.cloud.receiver.publish_down(box.box_id, Down.CONFIG, b"\x00garbage")
    box.cloud.receiver.publish_down(box.box_id, Down.CMD, wire.encode_doc({"id": "x1", "name": "format_disk"}))
    wait_for(lambda: "garbage" in box.log() or "rejected" in box.log(), 30, "the garbage to be refused")
    since = time.time() * 1000
    wait_for(lambda: box.good_after("ahu1.supply_temp", since), 30, "data after the garbage")
    assert box.proc.proc.poll() is None


def test_a_configuration_whose_devices_all_fail_is_rolled_back_by_the_box(
    building: SimThread, make_box: MakeBox
) -> None:
    good = full_config(building)
    box = make_box(good)
    box.proc.wait_connected()
    wait_for(lambda: box.good_after("ahu1.supply_temp", 0), 30, "data")
    dead = re.sub(r"port = \d+", f"port = {free_port()}", good)  # valid, but nobody answers there
    version = box.cloud.push_config(box.box_id, dead)
    status, reasons = box.config_answer(version)
    assert status == "applied"

    def rolled_back() -> tuple[str, list[str]] | None:
        s = box.config_answer(version)
        return s if s and s[0] == "rolled_back" else None

    status, reasons = wait_for(rolled_back, PROBATION_S + 30, "the rollback")
    assert "no device of configuration" in reasons[0] and "not_connected" in reasons[0], reasons
    assert box.config.read_text() == good
    # the operator hears of it without asking: an alert (the receiver raises it after it stores the answer)
    (alert,) = wait_for(lambda: [a for a in box.cloud.store.alerts(box.box_id) if a.kind == "config"], 30,
                        "the rollback's alert")
    assert alert.subject == str(version) and "rolled back" in alert.message
    since = time.time() * 1000
    wait_for(lambda: box.good_after("ahu1.supply_temp", since), 30, "data after the rollback")
    assert box.proc.proc.poll() is None
    # the rolled back version is not applied again when it comes back (retained) after a restart
    box.restart()
    box.proc.wait_connected()
    wait_for(lambda: f"configuration {version} was handled before" in box.proc.log.read_text(), 30,
             "the retained push to be recognised")
    assert box.config.read_text() == good


def test_write_commands_run_once_within_the_configuration(building: SimThread, make_box: MakeBox) -> None:
    box = make_box(full_config(building))
    box.proc.wait_connected()
    cloud = box.cloud
    setpoint = "ahu1.supply_setpoint"

    first = cloud.send_command(box.box_id, "write", {"point": setpoint, "value": 21.5})
    assert box.command_answer(first)["status"] == "ok"
    assert building.call(building.sim.value, setpoint) == 21.5

    refused = cloud.send_command(box.box_id, "write", {"point": "ahu1.supply_temp", "value": 20.0})
    answer = box.command_answer(refused)
    assert answer["status"] == "rejected" and "not writable" in str(answer["detail"])
    refused = cloud.send_command(box.box_id, "write", {"point": setpoint, "value": 40.0})
    answer = box.command_answer(refused)
    assert answer["status"] == "rejected" and "above its max" in str(answer["detail"])

    second = cloud.send_command(box.box_id, "write", {"point": setpoint, "value": 19.0})
    assert box.command_answer(second)["status"] == "ok"
    assert building.call(building.sim.value, setpoint) == 19.0
    # the first command again, same id: answered "duplicate", not run (the value stays 19.0)
    row = cloud.store.command(first)
    assert row is not None and cloud.receiver is not None
    doc = {"id": row.id, "name": row.name, "expires": row.expires, "args": row.args}
    assert cloud.receiver.publish_down(box.box_id, Down.CMD, wire.encode_doc(doc))
    wait_for(lambda: f"command {first} (write): a repeated id" in box.log(), 30, "the repeat to be refused")
    assert building.call(building.sim.value, setpoint) == 19.0

    read = cloud.send_command(box.box_id, "read", {"points": [setpoint, "ahu1.supply_temp"]})
    answer = box.command_answer(read)
    assert answer["status"] == "ok" and _doc(answer["result"])[setpoint] == 19.0

    # a command that waits at the broker while the Box is down, past its expiry: not run
    box.proc.stop()
    late = cloud.send_command(box.box_id, "write", {"point": setpoint, "value": 25.0}, ttl_s=1.5)
    wait_for(lambda: (r := cloud.store.command(late)) is not None and r.published, 10, "the command sent")

    def expired() -> bool:
        row = cloud.store.command(late)
        assert row is not None
        return time.time() > row.expires + 0.5

    wait_for(expired, 10, "its expiry")
    box.restart()
    answer = box.command_answer(late)
    assert answer["status"] == "expired"
    assert building.call(building.sim.value, setpoint) == 19.0


def test_renew_cert_switches_to_a_new_certificate_that_works(building: SimThread, make_box: MakeBox) -> None:
    box = make_box(full_config(building))
    box.proc.wait_connected()
    ident_dir = box.proc.state / "identity"
    old_pem = (ident_dir / "box.crt").read_bytes()
    renew = box.cloud.send_command(box.box_id, "renew_cert", {})
    answer = box.command_answer(renew, 90)
    assert answer["status"] == "ok" and "renewed" in str(answer["detail"]), answer
    assert (ident_dir / "box.crt").read_bytes() != old_pem
    assert not (box.proc.state / "identity.prev").exists()  # the new one worked: the old one is dropped
    since = time.time() * 1000
    wait_for(lambda: box.good_after("ahu1.supply_temp", since), 30, "data over the renewed certificate")
    logs = box.cloud.send_command(box.box_id, "logs", {"lines": 50})
    lines = box.command_answer(logs)["lines"]
    assert any("renewed certificate works" in line for line in _strings(lines))
    assert box.proc.proc.poll() is None


def test_logs_reboot_and_restart_commands(building: SimThread, make_box: MakeBox, tmp_path: Path) -> None:
    mark = tmp_path / "rebooted"
    box = make_box(full_config(building), env={"BOXD_REBOOT_COMMAND": f"touch {mark}"})
    box.proc.wait_connected()
    cloud = box.cloud
    logs = cloud.send_command(box.box_id, "logs", {"lines": 5})
    answer = box.command_answer(logs)
    assert answer["status"] == "ok" and len(_strings(answer["lines"])) == 5
    reboot = cloud.send_command(box.box_id, "reboot", {})
    assert box.command_answer(reboot)["status"] == "ok" and mark.exists()
    restart = cloud.send_command(box.box_id, "restart", {})
    assert box.command_answer(restart)["status"] == "ok"
    wait_for(lambda: box.proc.proc.poll() is not None, 30, "boxd to exit")
    assert box.proc.proc.returncode == 75  # non-zero: systemd (Restart=always) starts it again


def test_urgent_readings_events_and_replies_are_not_held_by_the_batch_delay(
    building: SimThread, make_box: MakeBox
) -> None:
    """With the longest batch delay there is (60 s): box A, nothing urgent, ordinary readings are held
    (sealed a minute after they are queued); meanwhile its queue overflows (a 1,000-sample limit) and the
    eviction's event reaches the cloud, and so does a command's reply, while not one of its readings has.
    Box B marks the AHU's setpoint urgent: a new value written at the device reaches the cloud's store
    within the same minute."""
    slow = "[uplink]\nbatch_delay_ms = 60000\nreconnect_max_s = 2\nheartbeat_s = 5\n\n"
    a = make_box(slow + "[queue]\nmax_samples = 1000\n\n" + building.sim.points_toml(0.1))
    toml = building.sim.points_toml(POLL_S)
    at = toml.index('name = "supply_setpoint"\n', toml.index('name = "ahu1"')) + len('name = "supply_setpoint"\n')
    b = make_box(slow + toml[:at] + "urgent = true\n" + toml[at:])
    cloud = a.cloud

    a.proc.wait_connected()
    wait_for(lambda: any(al.kind == "evicted" for al in cloud.store.alerts(a.box_id)), 30, "the eviction's event")
    read = cloud.send_command(a.box_id, "read", {"points": ["ahu1.supply_temp"]})
    assert a.command_answer(read)["status"] == "ok"
    assert a.latest() == {}  # the readings still wait for their batch delay: the event and the reply did not

    b.proc.wait_connected()
    write = cloud.send_command(b.box_id, "write", {"point": "ahu1.supply_setpoint", "value": 24.5})
    assert b.command_answer(write)["status"] == "ok"
    wait_for(lambda: b.latest().get("ahu1.supply_setpoint", (0, None, 0))[1] == 24.5, 30,
             "the urgent point's new value in the cloud")
    assert a.latest() == {}  # all within box A's first batch delay
