"""Issue 3's promise, end to end: one Box with Modbus TCP, Modbus RTU and BACnet/IP devices together
delivers every point to the cloud with the right value, type and unit, with the fewest bus
requests its planner can prove, and keeps delivering from healthy devices while others fail.

Topology (all real sockets, real protocols):
  field namespace  192.0.2.20 Modbus TCP building, 192.0.2.10 BACnet device   <- veth fbt0 ->
  box namespace    boxd (BACnet bound on fbt0 only), Modbus RTU over a pty    <- veth (WAN) ->
  root namespace   the reference cloud (Mosquitto with mTLS, receiver)
The BACnet part of the configuration is made as an installer makes it: `boxctl discover
bacnet --objects --export`, then `boxctl import-points`.
"""

from __future__ import annotations

import math
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.platform import Cloud
from drivers import Quality
from drivers.modbus import parse_modbus_tcp_device, plan_reads
from drivers.sim.modbus_rtu_building import RtuBuildingSimulator
from tests.support import netns
from tests.support.boxproc import BoxProcess
from tests.support.cloudkit import make_cloud, provision
from tests.support.simthread import SimThread
from tests.support.wait import wait_for
from tests.support.wan import Wan, free_block, retarget

pytestmark = pytest.mark.skipif(netns.available() is not None, reason=str(netns.available()))
BOX = "ALLBUS-1"
TCP_ADDRESS = "192.0.2.20"


def close(a: object, b: object) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and math.isclose(a, b, rel_tol=1e-4,
                                                                                         abs_tol=1e-3)
    return a == b


@pytest.fixture
def building(tmp_path: Path) -> Iterator[tuple[Cloud, netns.FieldNetwork, SimThread, SimThread, Path]]:
    cloud_ip, box_ip = free_block()
    cloud = make_cloud(tmp_path / "cloud", bind="", names=[cloud_ip])
    cloud.start()
    try:
        with netns.FieldNetwork(tmp_path) as net, Wan(net.box_ns, cloud_ip=cloud_ip, box_ip=box_ip) as _wan:
            net.start_sim("192.0.2.10", 1001)
            net.add_address(TCP_ADDRESS)
            with SimThread(netns=net.field_ns, host=TCP_ADDRESS, update_interval_s=0.2) as tcp, \
                    SimThread(sim=RtuBuildingSimulator(baudrate=38400)) as rtu:
                state = tmp_path / "box"
                ident = provision(cloud, state, BOX)
                retarget(ident.directory, cloud_ip, cloud.settings.broker_port)
                yield cloud, net, tcp, rtu, state
    finally:
        cloud.stop()


def boxctl(prefix: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, "-m", "provisioning.cli", *args],
                          capture_output=True, text=True, timeout=120)


def test_three_buses_together(building: tuple[Cloud, netns.FieldNetwork, SimThread, SimThread, Path]) -> None:
    cloud, net, tcp, rtu, state = building
    in_box = ["ip", "netns", "exec", net.box_ns]
    conf = state / "boxd.toml"
    conf.write_text("[uplink]\nbatch_delay_ms = 100\nheartbeat_s = 1\n\n" + tcp.sim.points_toml(1.0) + "\n"
                    + rtu.sim.points_toml(1.0) + "\n[[bacnet]]\nname = \"bacnet-1\"\ninterface = \"fbt0\"\n"
                    "device_instance = 4194300\n")
    # the installer's way: discover, export, import
    export = state / "bacnet-points.toml"
    r = boxctl(in_box, "discover", "bacnet", "--interface", "fbt0", "--timeout", "2", "--objects",
               "--export", str(export))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "device 1001" in r.stdout
    r = boxctl([], "import-points", str(export), "--config", str(conf))
    assert r.returncode == 0, r.stdout + r.stderr
    raw = tomllib.loads(conf.read_text())
    configured = {f"{d['name']}.{p['name']}": p.get("unit", "") for d in raw["modbus_tcp"] for p in d["points"]}
    configured |= {f"{d['name']}.{p['name']}": p.get("unit", "") for line in raw["modbus_rtu"]
                   for d in line["devices"] for p in d["points"]}
    configured |= {f"{d['name']}.{p['name']}": p.get("unit", "") for n in raw["bacnet"]
                   for d in n["devices"] for p in d["points"]}
    box = BoxProcess.start(state, conf, prefix=in_box)
    try:
        box.wait_connected()

        def good() -> dict[str, tuple[object, str]]:
            return {p: (v, u) for p, _, v, q, u in cloud.store.latest(BOX) if q == Quality.GOOD}

        wait_for(lambda: set(good()) == set(configured), 60, "every point of the three buses, good, in the cloud")
        # right units, right values (the simulators frozen for the comparison)
        assert {p: u for p, (_, u) in good().items()} == configured
        tcp.call(tcp.sim.pause)
        rtu.call(rtu.sim.pause)
        try:
            frozen = {**tcp.call(tcp.sim.values), **rtu.call(rtu.sim.values)}
            wait_for(lambda: all(close(good().get(p, (None,))[0], v) for p, v in frozen.items() if p in configured),
                     30, "the Modbus values as the simulators hold them")
        finally:
            tcp.call(tcp.sim.resume)
            rtu.call(rtu.sim.resume)
        # the fewest requests: what the Box reports per cycle equals the planner's count
        health = cloud.store.health(BOX)
        assert health is not None
        buses = health[1]["buses"]
        assert isinstance(buses, dict)
        for d in raw["modbus_tcp"]:
            dev = parse_modbus_tcp_device(d)
            need = len(plan_reads(dev.points, max_gap=dev.max_gap))
            st = buses[dev.name]
            assert st["requests"] <= need * st["cycles"] + need, (dev.name, st, need)
            print(f"\n{dev.name}: {len(dev.points)} points, planner {need} request(s) per full poll, "
                  f"measured {st['requests'] / max(st['cycles'], 1):.2f} per cycle")
        print(f"bus counters: {buses}")
        # one device fails: the others keep delivering
        tcp.call(tcp.sim.set_offline, 2)
        net.sims[0].command("silent")
        before = {p: t for p, t, _, _, _ in cloud.store.latest(BOX)}

        def healthy_moving() -> bool:
            now = {p: (t, q) for p, t, _, q, _ in cloud.store.latest(BOX)}
            moved = [p for p in now if p.startswith(("ahu1.", "meter2.")) and now[p][0] > before.get(p, 0)]
            failing = [p for p in now if p.startswith("meter1.") and now[p][1] == Quality.NO_ANSWER]
            return bool(moved) and bool(failing)

        wait_for(healthy_moving, 60, "healthy devices to keep delivering while meter1 fails")
    finally:
        assert box.stop() == 0
