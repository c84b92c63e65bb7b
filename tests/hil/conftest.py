"""The HIL bench of one labgrid target: the target, the platform, the building, the Box's id.

`hil` is parametrized by target file: by default the sim and vm targets (targets/sim.yaml,
targets/vm.yaml), one after the other, each set up once for all the scenarios; with ``LG_ENV``
(labgrid's variable) or ``--lg-env``, that target only (a lab bench: targets/lab.example.yaml).
A scenario asks for the features it needs (`Hil.need`): a target without them skips it, saying
which. The target's kind (sim, vm, lab) decides how the suite sets the Box up; the scenarios then
act only through the strategy (power), the platform and the building.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from labgrid import Environment
from labgrid.protocol import PowerProtocol

from cloud.platform import Cloud
from drivers import Quality
from tests.hil.boxlab import BoxStrategy, BoxVmPowerDriver, LocalBoxPowerDriver
from tests.support import boximage, boxvm
from tests.support.cloudkit import make_cloud
from tests.support.faultproxy import FaultProxy
from tests.support.simthread import SimThread
from tests.support.wait import free_port
from tests.support.wan import retarget

TARGETS = Path(__file__).parent / "targets"
UPLINK = "[uplink]\nbatch_delay_ms = 50\nreconnect_max_s = 1\n\n"


def _target_files(config: pytest.Config) -> list[Path]:
    chosen = config.getoption("lg_env", default=None) or os.environ.get("LG_ENV")
    return [Path(chosen)] if chosen else [TARGETS / "sim.yaml", TARGETS / "vm.yaml"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target_file" in metafunc.fixturenames:
        files = _target_files(metafunc.config)
        # the scenarios run in one pytest-xdist worker, in file order, each target on its one bench,
        # with every other test that boots the image (tests/image): the "box-vm" group (tests/conftest.py)
        params = [pytest.param(f, id=f.stem) for f in files]
        metafunc.parametrize("target_file", params, scope="session")


@pytest.hookimpl(trylast=True)  # after pytest has grouped the tests by target (its session parameter)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """On each target, the scenarios of faults (test_faults.py) after every other scenario: they
    push configurations, evict from the queue and revoke the Box, which the proofs of the others
    (every value served since the bench started) must not see."""
    places: dict[object, list[int]] = {}
    for i, item in enumerate(items):
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "target_file" in callspec.params and "/hil/" in str(item.fspath):
            places.setdefault(callspec.params["target_file"], []).append(i)
    for where in places.values():
        mine = [items[i] for i in where]
        ordered = sorted(mine, key=lambda item: item.fspath.basename == "test_faults.py")  # stable
        for i, item in zip(where, ordered, strict=True):
            items[i] = item


@dataclass
class Hil:
    """One target's bench, shared by the scenarios (in file order)."""

    kind: str  # sim | vm | lab
    name: str
    features: set[str]
    strategy: BoxStrategy
    power: PowerProtocol
    cloud: Cloud
    box_id: str
    building: SimThread | None
    devices: str  # the [[modbus_tcp]] tables the Box is configured with
    console: Callable[[], str] = lambda: ""
    timings: dict[str, float] = field(default_factory=dict)
    # the scenarios of faults (test_faults.py); None where the target cannot do it
    link: Callable[[bool], None] | None = None  # the WAN link out (False) and back (sim: a proxy; vm: QMP)
    boxctl: Callable[[], dict[str, Any]] | None = None  # `boxctl status --json` on the Box (sim: no shell elsewhere)
    work: Path | None = None  # this machine's scratch directory for the bench
    # the RS-485 line of a target that attaches one for the whole bench (vm: the simulator's pty is the VM's
    # ttyS2, so it must exist before QEMU starts), and the port as the Box names it; None: the scenario's own
    rtu: SimThread | None = None
    rtu_port: str = ""
    # the Box's own `boxctl status --json` as it last wrote it (run/status.json), read from its disk while the
    # power is off (vm: no shell on the Box)
    status_on_disk: Callable[[], dict[str, Any]] | None = None
    lacks: dict[str, str] = field(default_factory=dict)  # a feature the target has not -> what it would take

    def need(self, *features: str) -> None:
        missing = [f for f in features if f not in self.features]
        if missing:
            why = "".join(f"; {f}: {self.lacks[f]}" for f in missing if f in self.lacks)
            pytest.skip(f"target {self.name} ({self.kind}) has no {', '.join(missing)}{why}")

    def configured(self) -> set[str]:
        import tomllib
        return {f"{d['name']}.{p['name']}" for d in tomllib.loads(self.devices)["modbus_tcp"] for p in d["points"]}

    def every_point_good(self, since: float = 0.0) -> bool:
        """The Box is online and the platform holds a good sample of every configured point taken
        after `since` (wall time; the Box's and this machine's clocks agree, both set from this one)."""
        box = self.cloud.store.box(self.box_id)
        if box is None or not box.online:
            return False
        latest = self.cloud.store.latest(self.box_id)
        good = {p for p, ts, _, q, _ in latest if q == Quality.GOOD and ts >= since * 1000}
        return good >= self.configured()


def _kind(env: Environment) -> str:
    resources = env.config.data["targets"]["main"].get("resources", {})
    names = resources if isinstance(resources, dict) else [next(iter(r)) for r in resources]
    for resource, kind in (("LocalBox", "sim"), ("BoxVM", "vm"), ("LabBox", "lab")):
        if resource in names:
            return kind
    raise pytest.UsageError(f"{env.config_file}: the target names no LocalBox, BoxVM or LabBox")


@pytest.fixture(scope="session")
def hil(target_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hil]:
    env = Environment(config_file=str(target_file))
    target = env.get_target("main")
    kind = _kind(env)
    features = set(env.config.data["targets"]["main"].get("features", []))
    strategy = target.get_driver("BoxStrategy")
    power = target.get_driver("PowerProtocol")
    work = tmp_path_factory.mktemp(f"hil-{target_file.stem}")
    with contextlib.ExitStack() as stack:
        stack.callback(env.cleanup)
        if kind == "sim":
            hil = _sim(stack, target_file.stem, features, strategy, power, work)
        elif kind == "vm":
            hil = _vm(stack, target_file.stem, features, strategy, power, work)
        else:
            hil = _lab(stack, target_file.stem, features, strategy, power, target)
        hil.lacks = {str(k): str(v) for k, v in env.config.data["targets"]["main"].get("lacks", {}).items()}
        strategy.ready_check = hil.every_point_good
        stack.callback(strategy.power_cut)
        yield hil


def _building(stack: contextlib.ExitStack, host: str = "127.0.0.1") -> SimThread:
    # counters and no retries: every value is served once, so a loss or a duplicate shows (tests/support/proofs.py)
    return stack.enter_context(SimThread(host=host, port=free_port(), update_interval_s=0.05, counters=True,
                                         record=True))


def _sim(stack: contextlib.ExitStack, name: str, features: set[str], strategy: BoxStrategy,
         power: LocalBoxPowerDriver, work: Path) -> Hil:
    cloud = make_cloud(work / "cloud")
    cloud.start()
    stack.callback(cloud.stop)
    building = _building(stack)
    box_id = "HIL-SIM-1"
    token, _ = cloud.add_box(box_id, 600)
    disk = work / "disk"
    # the installer's step, with the real CLI: the key is made here, the token used once
    r = subprocess.run([sys.executable, "-m", "provisioning.cli", "--state-dir", str(disk), "provision",
                        "--server", f"https://localhost:{cloud.settings.enroll_port}", "--token", token,
                        "--ca", str(cloud.pki.root_cert)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    # the WAN: the broker through a fault proxy (a blackhole is the link out; tests/support/faultproxy.py)
    proxy = stack.enter_context(FaultProxy("127.0.0.1", cloud.settings.broker_port))
    retarget(disk / "identity", "localhost", proxy.port)
    devices = building.sim.points_toml(0.1, timeout_s=10.0, retries=0)
    config = work / "boxd.toml"
    config.write_text(UPLINK + devices)
    power.backing, power.config = disk, config

    def link(up: bool) -> None:
        proxy.blackhole(not up)
        proxy.reset_all()  # out: the connection is dropped; back: the ones accepted while out are dead

    def boxctl() -> dict[str, Any]:
        state = power.process.state if power.process else disk
        r = subprocess.run([sys.executable, "-m", "provisioning.cli", "--state-dir", str(state), "status", "--json"],
                           capture_output=True, text=True, timeout=60)
        doc: dict[str, Any] = json.loads(r.stdout)
        return doc

    return Hil("sim", name, features, strategy, power, cloud, box_id, building, devices,
               lambda: power.process.log.read_text(errors="replace") if power.process else "",
               link=link, boxctl=boxctl, work=work)


def _vm(stack: contextlib.ExitStack, name: str, features: set[str], strategy: BoxStrategy,
        power: BoxVmPowerDriver, work: Path) -> Hil:
    why = boximage.unavailable()
    if why:
        pytest.skip(f"target {name}: the Box image cannot be built or booted here: {why}")
    image = boximage.ensure_built()
    bench = stack.enter_context(boxvm.bench(image, work))
    # the building on the VM's field LAN (its second card), not behind its WAN: an outage of the WAN (the
    # link out) leaves the field devices polled, as on a Box
    building = _building(stack, "::1")
    box_id = "HIL-VM-1"
    machine = power.machine
    from tests.support import qemu
    rtu = None
    if "rtu" in features:  # the RS-485 line: the simulator's pty through QEMU's tty backend, the guest's ttyS2
        from drivers.sim.modbus_rtu_building import RtuBuildingSimulator
        line = RtuBuildingSimulator(baudrate=19200, update_interval_s=0.2)
        rtu = stack.enter_context(SimThread(sim=line))
    # writeback: what the guest flushed is on this machine's disk whenever the power goes
    vm = qemu.Vm(image.path, work / "vm", credentials=bench.enroll_credential(box_id),
                 memory_mib=machine.memory_mib, cpus=machine.cpus, cache="writeback",
                 serial_ports=(line.path,) if rtu is not None else (), field_net=True)
    power.vm = vm
    stack.callback(lambda: (image.path.parent / "last-hil-console.log").write_text(vm.console()))
    # polled every second (software emulation), no retries (the proof's condition)
    devices = building.sim.points_toml(1.0, timeout_s=10.0, retries=0).replace('host = "::1"',
                                                                              f'host = "{qemu.FIELD_HOST}"')
    pushed: list[int] = []
    hil = Hil("vm", name, features, strategy, power, bench.cloud, box_id, building, devices, vm.console,
              link=power.link, work=work, rtu=rtu, rtu_port="/dev/ttyS2",
              status_on_disk=lambda: json.loads(boxvm.read_data_file(vm.disk, image, work,
                                                                     "/lib/boxd/run/status.json")))
    ready = hil.every_point_good
    hil.every_point_good = lambda since=0.0: boxvm.configure_when_enrolled(  # type: ignore[method-assign]
        bench.cloud, box_id, UPLINK + devices, pushed) and ready(since)
    return hil


def _lab(stack: contextlib.ExitStack, name: str, features: set[str], strategy: BoxStrategy,
         power: PowerProtocol, target: object) -> Hil:
    from tests.hil.boxlab import BoxBuilding, BoxPlatform, LabBox
    lab = target.get_resource(LabBox)  # type: ignore[attr-defined]
    platform = target.get_resource(BoxPlatform)  # type: ignore[attr-defined]
    where = target.get_resource(BoxBuilding)  # type: ignore[attr-defined]
    if not platform.home:
        pytest.skip(f"target {name}: a lab Box needs BoxPlatform.home (the platform it is enrolled with)")
    cloud = Cloud(Path(platform.home))
    cloud.start()
    stack.callback(cloud.stop)
    building = None
    if where.mode == "sim":
        building = _building(stack, cloud.settings.host)
        devices = building.sim.points_toml(1.0, timeout_s=10.0, retries=0)
    else:
        devices = Path(where.points_file).read_text()
    cloud.push_config(lab.box_id, UPLINK + devices)
    return Hil("lab", name, features, strategy, power, cloud, lab.box_id, building, devices)
