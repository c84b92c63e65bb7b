"""BacnetSource and discovery against simulated BACnet/IP devices in network namespaces.

The devices (one process each, in the field namespace; see tests/support/netns.py):
1001 "ahu" at .10 (max-APDU 480, segmented answers, RPM, COV), 1002 "room" at .11
(no RPM, no COV), 1003 "small" at .12 (max-APDU 206, no segmentation), 1004 "spare"
at .13 (restarted, silenced: the tests that do so put it back).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import tomllib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers import Quality, Value
from drivers.bacnet import BacnetSource, parse_bacnet_network, plan_batches, response_budget
from drivers.bacnet._names import object_type_number, property_number
from drivers.bacnet._plan import PropertyRead
from drivers.bacnet.discover import DeviceInfo, discover_devices, objects_to_toml, read_objects
from drivers.bacnet.errors import BindError, InterfaceError
from drivers.errors import UnknownPointError, WriteError
from drivers.sim.bacnet_model import all_objects
from tests.support import netns
from tests.support.running import Running
from tests.support.wait import eventually

OBJECTS = all_objects(24)
AHU, ROOM, SMALL, SPARE = 1001, 1002, 1003, 1004
ADDRESS = {AHU: "192.0.2.10", ROOM: "192.0.2.11", SMALL: "192.0.2.12", SPARE: "192.0.2.13"}
SIM_ARGS = {AHU: ["--max-apdu", "480"], ROOM: ["--no-rpm", "--no-cov"],
            SMALL: ["--max-apdu", "206", "--no-segmentation"], SPARE: []}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[netns.FieldNetwork]:
    reason = netns.available()
    if reason:
        pytest.skip(reason)
    with netns.FieldNetwork(tmp_path_factory.mktemp("bacnet")) as network:
        for instance, address in ADDRESS.items():
            network.start_sim(address, instance, *SIM_ARGS[instance])
        yield network


def sim(net: netns.FieldNetwork, instance: int) -> netns.SimProcess:
    return next(s for s in net.sims if s.instance == instance)


def device(name: str, instance: int, *, pinned: bool = True, cov: str = "off", poll: float = 1.0,
           objects: int = len(OBJECTS), writable: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    points: list[dict[str, Any]] = [{"name": o.name.replace("-", "_"), "object": o.ref} for o in OBJECTS[:objects]]
    for extra in (writable or {}).items():
        points.append({"name": extra[0], "writable": True, **extra[1]})
    raw: dict[str, Any] = {"name": name, "device_instance": instance, "poll_interval_s": poll, "cov": cov,
                           "cov_lifetime_s": 4, "points": points}
    if pinned:
        raw["address"] = ADDRESS[instance]
    return raw


def network(*devices: dict[str, Any], interface: str = "fbt0") -> Any:
    return parse_bacnet_network({"name": "field", "interface": interface, "device_instance": 4194300,
                                 "apdu_timeout_s": 0.5, "apdu_retries": 0, "devices": list(devices)})


@contextlib.asynccontextmanager
async def running(*devices: dict[str, Any]) -> AsyncIterator[Running]:
    async with Running(BacnetSource(network(*devices)), first_poll=False) as run:
        yield run


# -- discovery --------------------------------------------------------------------------


def test_who_is_finds_every_simulated_device(net: netns.FieldNetwork) -> None:
    seen: list[DeviceInfo] = []
    found = net.run_in_box(lambda: discover_devices("fbt0", timeout_s=1.5, on_progress=seen.append))
    by = {d.instance: d for d in found}
    assert set(by) == {AHU, ROOM, SMALL, SPARE}
    assert by[AHU] == DeviceInfo(AHU, "192.0.2.10:47808", 999, 480, "segmented-both")
    assert (by[SMALL].max_apdu, by[SMALL].segmentation) == (206, "no-segmentation")
    assert (by[ROOM].address, by[ROOM].max_apdu) == ("192.0.2.11:47808", 1476)
    assert sorted(d.instance for d in seen) == sorted(by)


@pytest.mark.parametrize("instance", [AHU, ROOM, SMALL])
def test_object_list_with_names_units_and_values_exports_a_valid_point_list(
    net: netns.FieldNetwork, instance: int
) -> None:
    progress: list[tuple[int, int]] = []

    async def scenario() -> Any:
        found = await discover_devices("fbt0", timeout_s=1.0, low=instance, high=instance)
        return found, await read_objects("fbt0", found[0], on_progress=lambda n, t, _o: progress.append((n, t)),
                                         apdu_timeout_s=0.5)

    found, objects = net.run_in_box(scenario)
    assert [o.object for o in objects] == [o.ref for o in OBJECTS]
    assert [o.name for o in objects] == [o.name for o in OBJECTS]
    assert progress == [(n, len(OBJECTS)) for n in range(1, len(OBJECTS) + 1)]
    by = {o.object: o for o in objects}
    assert (by["analog-input,1"].units, by["analog-input,1"].unit) == ("degrees-celsius", "degC")
    assert by["analog-input,5"].unit == "%RH" and by["analog-input,6"].unit == "ppm"
    assert by["analog-input,1"].description == "Supply air temperature"
    assert isinstance(by["analog-input,3"].present_value, float) and by["binary-input,1"].kind == "bool"
    assert by["multi-state-value,1"].present_value in (1, 2, 3) and by["binary-value,1"].units == ""
    text = objects_to_toml("ahu", found[0], objects)
    header = '[[bacnet]]\nname = "field"\ninterface = "fbt0"\ndevice_instance = 4194300\n'
    parsed = parse_bacnet_network(tomllib.loads(header + text)["bacnet"][0])
    points = parsed.devices[0].points
    assert len(points) == len(OBJECTS) and points[0].name == "supply-temp" and points[0].unit == "degC"
    assert parsed.devices[0].address == ADDRESS[instance]


# -- reading ----------------------------------------------------------------------------


def reads_of(objects: int) -> list[PropertyRead]:
    return [PropertyRead(object_type_number(o.type) or 0, o.instance, property_number("present-value") or 0,
                         "bool" if "binary" in o.type else "uint32" if "multi" in o.type else "float32")
            for o in OBJECTS[:objects]]


def test_reads_are_batched_to_fit_each_devices_max_apdu(net: netns.FieldNetwork) -> None:
    expected = {
        AHU: len(plan_batches(reads_of(len(OBJECTS)), max_request=480,
                              max_response=response_budget(480, "segmented-both", 1476, 16))),
        SMALL: len(plan_batches(reads_of(len(OBJECTS)), max_request=206,
                                max_response=response_budget(206, "no-segmentation", 1476, 16))),
    }
    assert expected[AHU] == 1 and expected[SMALL] >= 3

    async def scenario() -> dict[int, int]:
        async with running(device("ahu", AHU, poll=3600), device("small", SMALL, poll=3600)) as run:
            await eventually(lambda: run.all("ahu", Quality.GOOD) and run.all("small", Quality.GOOD), "first poll")
            before = {i: (await sim(net, i).acommand("stats")) for i in (AHU, SMALL)}
            samples = await run.source.read_now([p.name for p in run.source.points()])
            assert all(s.quality is Quality.GOOD for s in samples), samples
            after = {i: (await sim(net, i).acommand("stats")) for i in (AHU, SMALL)}
        return {i: _count(after[i], "ReadPropertyMultipleRequest") - _count(before[i], "ReadPropertyMultipleRequest")
                for i in (AHU, SMALL)}

    assert net.run_in_box(scenario) == expected


def _count(stats_json: str, key: str) -> int:
    return int(json.loads(stats_json).get(key, 0))


def test_a_device_without_rpm_is_read_property_by_property(net: netns.FieldNetwork) -> None:
    async def scenario() -> tuple[int, int, int]:
        rpm0 = _count(await sim(net, ROOM).acommand("stats"), "ReadPropertyMultipleRequest")
        async with running(device("room", ROOM, objects=10)) as run:
            await eventually(lambda: run.all("room", Quality.GOOD), "values from the no-RPM device")
            cycles = run.source.stats()["cycles"]
            await eventually(lambda: run.source.stats()["cycles"] >= cycles + 2, "two more poll cycles")
            assert run.source.stats()["rpm_fallbacks"] == 1
            stats = await sim(net, ROOM).acommand("stats")
        return _count(stats, "ReadPropertyMultipleRequest") - rpm0, _count(stats, "ReadPropertyRequest"), cycles

    rpm_tries, rp_count, _ = net.run_in_box(scenario)
    assert rpm_tries == 1  # rejected once, remembered
    assert rp_count >= 3 * 10


# -- COV --------------------------------------------------------------------------------


def test_cov_notifications_deliver_changes_and_subscriptions_are_renewed(net: netns.FieldNetwork) -> None:
    ahu = sim(net, AHU)

    async def scenario() -> None:
        await ahu.acommand("pause")
        try:
            async with running(device("ahu", AHU, cov="auto", objects=12)) as run:
                await eventually(lambda: run.source.stats()["cov_active"] == 12, "12 COV subscriptions")
                subscribes = _count(await ahu.acommand("stats"), "SubscribeCOVRequest")
                before = run.source.stats()["cov_notifications"]
                await ahu.acommand("set analog-input,1 33.25")
                await eventually(lambda: run.latest()["ahu.supply_temp"].value == 33.25, "the change by COV")
                assert run.source.stats()["cov_notifications"] > before
                await ahu.acommand("set binary-value,1 false")
                await eventually(lambda: run.latest()["ahu.fan_enable"].value is False, "a binary change by COV")

                async def renewed() -> bool:
                    return _count(await ahu.acommand("stats"), "SubscribeCOVRequest") >= subscribes + 12

                deadline = time.monotonic() + 10
                while not await renewed():  # lifetime 4 s: renewed 2 s before it ends
                    assert time.monotonic() < deadline, "subscriptions were not renewed"
                    await asyncio.sleep(0.1)
                assert run.source.stats()["cov_active"] == 12
        finally:
            await ahu.acommand("set binary-value,1 true")
            await ahu.acommand("resume")

    net.run_in_box(scenario)


def test_a_device_without_cov_is_polled_every_interval(net: netns.FieldNetwork) -> None:
    room = sim(net, ROOM)

    async def scenario() -> None:
        await room.acommand("pause")
        try:
            async with running(device("room", ROOM, cov="auto", objects=6)) as run:
                await eventually(lambda: run.all("room", Quality.GOOD), "values by polling")
                assert run.source.stats()["cov_active"] == 0
                await room.acommand("set analog-input,4 27.5")
                await eventually(lambda: run.latest()["room.room_temp"].value == 27.5, "the change by polling")
                assert run.source.stats()["cov_notifications"] == 0
            assert _count(await room.acommand("stats"), "SubscribeCOVRequest") >= 1
        finally:
            await room.acommand("resume")

    net.run_in_box(scenario)


def test_cov_falls_back_to_polling_when_the_device_restarts_goes_silent_or_loses_cov(
    net: netns.FieldNetwork,
) -> None:
    spare = sim(net, SPARE)
    n = 8

    async def scenario() -> None:
        async with running(device("spare", SPARE, cov="auto", objects=n)) as run:
            stats = run.source.stats
            await eventually(lambda: stats()["cov_active"] == n, "the subscriptions")
            # a reboot (same process): it forgets its subscriptions and says I-Am; they are sent again
            subscribes = _count(await spare.acommand("stats"), "SubscribeCOVRequest")
            await spare.acommand("restart")
            await eventually(lambda: stats()["cov_active"] == n, "the subscriptions after the restart")
            await eventually(lambda: _count(spare.command("stats"), "SubscribeCOVRequest") >= subscribes + n,
                             "SubscribeCOV sent again")
            await spare.acommand("pause")
            await spare.acommand("set analog-input,2 30.5")
            await eventually(lambda: run.latest()["spare.return_temp"].value == 30.5, "COV after the restart")
            # silent: the renewal is not answered, the subscriptions lapse, polling says NO_ANSWER
            await spare.acommand("silent")
            await eventually(lambda: stats()["cov_active"] == 0, "the subscriptions to lapse")
            await eventually(lambda: run.all("spare", Quality.NO_ANSWER), "polls without answers")
            await spare.acommand("answer")
            await eventually(lambda: run.all("spare", Quality.GOOD), "polls answered again")
            await eventually(lambda: stats()["cov_active"] == n, "subscribed again")
            # a new firmware without COV: the renewal is refused, polling takes over
            await asyncio.to_thread(spare.restart, "--no-cov")
            await eventually(lambda: stats()["cov_active"] == 0, "the refused subscriptions")
            await spare.acommand("pause")
            await spare.acommand("set analog-input,2 12.5")
            await eventually(lambda: run.latest()["spare.return_temp"].value == 12.5, "the change by polling")

    try:
        net.run_in_box(scenario)
    finally:
        spare.restart(*SIM_ARGS[SPARE])


# -- writing ----------------------------------------------------------------------------

WRITABLE: dict[str, dict[str, Any]] = {
    "setpoint": {"object": "analog-value,1", "min": 10.0, "max": 30.0},
    "fan_cmd": {"object": "binary-value,1"},
    "mode": {"object": "multi-state-value,1", "priority": 10},
    "forced_input": {"object": "analog-input,2"},  # writable here, but the device refuses
}


def test_write_with_priority_relinquish_and_refusals(net: netns.FieldNetwork) -> None:
    ahu = sim(net, AHU)

    async def scenario() -> None:
        async with running(device("ahu", AHU, poll=3600, objects=1, writable=WRITABLE)) as run:
            src = run.source
            await eventually(lambda: run.all("ahu", Quality.GOOD), "the first poll")

            async def pv(ref: str) -> Any:
                return json.loads(await ahu.acommand(f"get {ref}"))

            await src.write("ahu.setpoint", 19.5)  # the point's priority: 8
            slots = json.loads(await ahu.acommand("get analog-value,1 priority-array"))
            assert slots[7] == 19.5 and await pv("analog-value,1") == 19.5
            assert run.latest()["ahu.setpoint"].value == 19.5  # read back and emitted
            await src.write("ahu.setpoint", 17.0, priority=5)
            assert await pv("analog-value,1") == 17.0
            await src.write("ahu.setpoint", None, priority=5)  # relinquish 5: priority 8 again
            assert await pv("analog-value,1") == 19.5
            await src.write("ahu.setpoint", None)  # relinquish 8: the relinquish default
            assert await pv("analog-value,1") == 18.0 and run.latest()["ahu.setpoint"].value == 18.0
            await src.write("ahu.fan_cmd", False)
            assert await pv("binary-value,1") is False
            await src.write("ahu.fan_cmd", None)
            assert await pv("binary-value,1") is True
            await src.write("ahu.mode", 3)
            assert json.loads(await ahu.acommand("get multi-state-value,1 priority-array"))[9] == 3
            await src.write("ahu.mode", None)
            assert await pv("multi-state-value,1") == 2

            refusals: list[tuple[str, Value, int | None, str]] = [
                ("ahu.supply_temp", 20.0, None, "not writable"),
                ("ahu.setpoint", 35.0, None, "above the point's max 30.0"),
                ("ahu.setpoint", 5, None, "below the point's min 10.0"),
                ("ahu.setpoint", "warm", None, "takes a number"),
                ("ahu.setpoint", 20.0, 6, "priority 6"),
                ("ahu.fan_cmd", 1, None, "true or false"),
                ("ahu.mode", 0, None, "start at 1"),
                ("ahu.forced_input", 1.0, None, "refused it: error property/write-access-denied"),
            ]
            for point, value, priority, reason in refusals:
                with pytest.raises(WriteError, match=reason) as caught:
                    await src.write(point, value, priority)
                assert point in str(caught.value)
            with pytest.raises(UnknownPointError):
                await src.write("ahu.nope", 1.0)
            with pytest.raises(UnknownPointError):
                await src.read_now(["nope.x"])

    net.run_in_box(scenario)


# -- faults -----------------------------------------------------------------------------


def test_a_silent_device_degrades_only_its_own_points_and_is_found_again(net: netns.FieldNetwork) -> None:
    spare = sim(net, SPARE)

    async def scenario() -> None:
        devices = (device("ahu", AHU, objects=4), device("spare", SPARE, pinned=False, objects=4))
        async with running(*devices) as run:
            await eventually(lambda: run.all("ahu", Quality.GOOD) and run.all("spare", Quality.GOOD), "both devices")
            await spare.acommand("silent")
            await eventually(lambda: run.all("spare", Quality.NO_ANSWER), "the silent device's points")
            mark = len(run.samples)
            await eventually(
                lambda: sum(1 for s in run.samples[mark:] if s.point == "ahu.supply_temp") >= 3,
                "three more polls of the other device",
            )
            assert all(s.quality is Quality.GOOD for s in run.samples[mark:] if s.point.startswith("ahu."))
            await spare.acommand("answer")
            await eventually(lambda: run.all("spare", Quality.GOOD), "the device found again by Who-Is")

    try:
        net.run_in_box(scenario)
    finally:
        spare.command("answer")


async def _ignore(_samples: Any) -> None:
    pass


def test_missing_interface_and_busy_port_are_clear_errors(net: netns.FieldNetwork) -> None:
    async def scenario() -> None:
        with pytest.raises(InterfaceError, match="'fbx9' does not exist"):
            await BacnetSource(network(device("ahu", AHU), interface="fbx9")).run(_ignore)
        async with running(device("ahu", AHU, poll=3600, objects=1)) as run:
            await eventually(lambda: run.all("ahu", Quality.GOOD), "the first source")
            with pytest.raises(BindError, match="port 47808 on fbt0"):
                await BacnetSource(network(device("ahu", AHU))).run(_ignore)

    net.run_in_box(scenario)


def test_simulator_cli_exits_cleanly_on_ctrl_c(net: netns.FieldNetwork, tmp_path: Path) -> None:
    net.add_address("192.0.2.14")
    cli = netns.SimProcess(net.field_ns, "192.0.2.14", 1005, ["--no-rpm"], tmp_path / "sim.log")
    cli.start()
    try:
        assert cli.command("get analog-value,2") == "21.0"
    finally:
        assert cli.stop() == 0
