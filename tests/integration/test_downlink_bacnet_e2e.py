"""Issue 6 with BACnet: a pushed configuration adds a BACnet/IP device (and a Modbus point) to a
running Box, whose data then arrives without a restart; a write with a priority and its relinquish
reach the simulated BACnet device's priority array.

Topology as in test_all_buses_e2e.py: the Box in its own network namespace (BACnet bound on
fbt0 only), the Modbus TCP building and a BACnet device in the field namespace, the cloud in the
root namespace behind a WAN veth.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.platform import Cloud
from drivers import Quality
from tests.support import netns
from tests.support.boxproc import BoxProcess
from tests.support.cloudkit import make_cloud, provision
from tests.support.simthread import SimThread
from tests.support.wait import wait_for
from tests.support.wan import Wan, free_block, retarget

pytestmark = pytest.mark.skipif(netns.available() is not None, reason=str(netns.available()))
BOX = "DLBAC-1"
TCP_ADDRESS = "192.0.2.20"
HEAD = "[uplink]\nbatch_delay_ms = 100\nreconnect_max_s = 2\n\n"
BACNET = """
[[bacnet]]
name = "bacnet-1"
interface = "fbt0"
device_instance = 4194300

[[bacnet.devices]]
name = "ahu2"
device_instance = 1001
address = "192.0.2.10"
poll_interval_s = 1.0

[[bacnet.devices.points]]
name = "supply_temp"
object = "analog-input,1"

[[bacnet.devices.points]]
name = "supply_setpoint"
object = "analog-value,1"
writable = true
min = 12.0
max = 28.0
"""


@pytest.fixture
def field(tmp_path: Path) -> Iterator[tuple[Cloud, netns.FieldNetwork, SimThread, Path]]:
    cloud_ip, box_ip = free_block()
    cloud = make_cloud(tmp_path / "cloud", bind="", names=[cloud_ip])
    cloud.start()
    try:
        with netns.FieldNetwork(tmp_path) as net, Wan(net.box_ns, cloud_ip=cloud_ip, box_ip=box_ip) as _wan:
            net.start_sim("192.0.2.10", 1001)
            net.add_address(TCP_ADDRESS)
            with SimThread(netns=net.field_ns, host=TCP_ADDRESS, update_interval_s=0.2) as tcp:
                state = tmp_path / "box"
                ident = provision(cloud, state, BOX)
                retarget(ident.directory, cloud_ip, cloud.settings.broker_port)
                yield cloud, net, tcp, state
    finally:
        cloud.stop()


def _answer(cloud: Cloud, cmd_id: str) -> dict[str, object] | None:
    """The Box's answer to a command, once it came."""
    row = cloud.store.command(cmd_id)
    return row.reply if row is not None and row.status else None


def without_point(text: str, device: str, point: str) -> str:
    start = text.index(f'name = "{device}"')
    at = text.index(f'[[modbus_tcp.points]]\nname = "{point}"\n', start)
    return text[:at] + text[text.find("\n\n", at) + 2:]


def test_a_pushed_configuration_adds_a_bacnet_device_and_a_modbus_point_without_a_restart(
    field: tuple[Cloud, netns.FieldNetwork, SimThread, Path]
) -> None:
    cloud, net, tcp, state = field
    full = HEAD + tcp.sim.points_toml(0.5)
    conf = state / "boxd.toml"
    conf.write_text(without_point(full, "ahu1", "outdoor_temp"))
    box = BoxProcess.start(state, conf, prefix=["ip", "netns", "exec", net.box_ns])

    def good() -> set[str]:
        return {p for p, _, _, q, _ in cloud.store.latest(BOX) if q == Quality.GOOD}

    try:
        box.wait_connected()
        wait_for(lambda: "ahu1.supply_temp" in good(), 30, "the first configuration's data")
        assert not {"ahu1.outdoor_temp", "ahu2.supply_temp"} & good()
        pid = box.proc.pid

        version = cloud.push_config(BOX, full + BACNET)
        wait_for(lambda: (c := cloud.store.config_state(BOX)) is not None and c.status in ("applied", "kept"), 60,
                 "the configuration applied")
        wait_for(lambda: {"ahu1.outdoor_temp", "ahu2.supply_temp", "ahu2.supply_setpoint"} <= good(), 60,
                 "the new Modbus point and the BACnet device's data")
        assert box.proc.poll() is None and box.proc.pid == pid
        assert cloud.store.config_state(BOX).version == version  # type: ignore[union-attr]

        sim = net.sims[0]
        write = cloud.send_command(BOX, "write", {"point": "ahu2.supply_setpoint", "value": 20.5, "priority": 8})
        reply = wait_for(functools.partial(_answer, cloud, write), 30,
                         "the write's answer")
        assert reply["status"] == "ok", reply
        assert json.loads(sim.command("get analog-value,1 priority-array"))[7] == 20.5
        assert json.loads(sim.command("get analog-value,1")) == 20.5
        release = cloud.send_command(BOX, "write", {"point": "ahu2.supply_setpoint", "relinquish": True,
                                                    "priority": 8})
        reply = wait_for(functools.partial(_answer, cloud, release), 30,
                         "the relinquish's answer")
        assert reply["status"] == "ok", reply
        assert json.loads(sim.command("get analog-value,1 priority-array"))[7] is None
        refused = cloud.send_command(BOX, "write", {"point": "ahu2.supply_temp", "value": 1.0, "priority": 8})
        reply = wait_for(functools.partial(_answer, cloud, refused), 30,
                         "the refusal")
        assert reply["status"] == "rejected" and "not writable" in str(reply["detail"])
    finally:
        assert box.stop() == 0
