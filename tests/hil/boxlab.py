"""labgrid's parts for a Box: resources, power drivers and a strategy (imported by the target files).

A target file (tests/hil/targets/*.yaml, labgrid's environment format) names these under
``imports: [tests.hil.boxlab]``; labgrid builds the target from them. One strategy,
`BoxStrategy`, drives every kind of target through labgrid's `PowerProtocol`, so the scenarios
never ask what kind of Box they run on, only whether it has what they need (`features`).

- **sim**: `LocalBox` + `LocalBoxPowerDriver`: boxd as a process of this machine, its state on a
  LazyFS mount (tests/support/lazyfs.py) so that "power off" loses what was not fsync'ed, as a real
  power cut does (the process is frozen, the file system's unsynced writes dropped, then killed).
- **vm**: `BoxVM` + `BoxVmPowerDriver`: the Box image under QEMU (tests/support/qemu.py). Power
  goes through QEMU's machine protocol (QMP): "off" is ``stop`` (the machine halts at once, no
  shutdown: the guest's page cache is lost), then QEMU is killed: its disk runs with
  ``cache=writeback``, so what the guest had flushed is on this machine's disk and nothing else
  is; "on" starts QEMU again on the same disk and firmware variables. The console is the serial
  port's capture.
- **lab**: labgrid's own drivers for real hardware (e.g. `NetworkPowerDriver` over a PDU,
  `SerialDriver` over a USB-serial adapter) bound to the same `BoxStrategy`
  (targets/lab.example.yaml).

`BoxPlatform` says where the platform is (the suite starts the reference cloud; on a lab bench,
from the bench's own platform home, the one its Boxes are enrolled with); `BoxBuilding` says
whether the field devices are the building simulator or real ones.

What this does not do: drive a shell on the Box (the image has none, by design): a scenario acts
through the platform, the field buses and the power, and reads the platform and the console.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import attr
from labgrid.driver.common import Driver
from labgrid.factory import target_factory
from labgrid.protocol import PowerProtocol
from labgrid.resource.common import Resource
from labgrid.step import step
from labgrid.strategy.common import Strategy, StrategyError

from tests.support.boxproc import BoxProcess
from tests.support.lazyfs import LazyFS
from tests.support.qemu import Vm, qmp
from tests.support.wait import wait_for

_str = attr.validators.instance_of(str)
_opt_str = attr.validators.optional(_str)


# -- resources -------------------------------------------------------------------------------------

@target_factory.reg_resource
@attr.s(eq=False)
class LocalBox(Resource):  # type: ignore[misc]
    """boxd as a process of this machine (the sim target)."""

    power_loss: str = attr.ib(default="lazyfs", validator=attr.validators.in_(["lazyfs", "kill"]))


@target_factory.reg_resource
@attr.s(eq=False)
class BoxVM(Resource):  # type: ignore[misc]
    """The Box image booted under QEMU (the vm target); the image is `make image`'s."""

    memory_mib: int = attr.ib(default=512, validator=attr.validators.instance_of(int))
    cpus: int = attr.ib(default=1, validator=attr.validators.instance_of(int))


@target_factory.reg_resource
@attr.s(eq=False)
class LabBox(Resource):  # type: ignore[misc]
    """A real Box on a bench, enrolled at the provisioning station under `box_id`."""

    box_id: str = attr.ib(default="", validator=_str)


@target_factory.reg_resource
@attr.s(eq=False)
class BoxPlatform(Resource):  # type: ignore[misc]
    """The platform the Box talks to: started by the suite, fresh (`home` empty), or from a bench's
    platform home (the one its Boxes trust)."""

    home: str | None = attr.ib(default=None, validator=_opt_str)


@target_factory.reg_resource
@attr.s(eq=False)
class BoxBuilding(Resource):  # type: ignore[misc]
    """The field devices: `sim` (the building simulator, started by the suite) or `real` (the
    ``[[modbus_tcp]]`` tables of the bench's devices in `points_file`)."""

    mode: str = attr.ib(default="sim", validator=attr.validators.in_(["sim", "real"]))
    points_file: str | None = attr.ib(default=None, validator=_opt_str)


# -- power -----------------------------------------------------------------------------------------

@target_factory.reg_driver
@attr.s(eq=False)
class LocalBoxPowerDriver(Driver, PowerProtocol):  # type: ignore[misc]
    """Power for a local boxd: on starts it on its state directory, off is a power cut."""

    bindings: ClassVar[dict[str, str]] = {"box": "LocalBox"}

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.backing: Path | None = None  # the Box's disk (set by the suite before the first `on`)
        self.config: Path | None = None
        self.process: BoxProcess | None = None
        self.env: dict[str, str] | None = None  # more environment for boxd (e.g. libfaketime: a clock to jump)
        self._fs: LazyFS | None = None

    @Driver.check_active  # type: ignore[untyped-decorator]
    @step()  # type: ignore[untyped-decorator]
    def on(self) -> None:
        if self.process is not None:
            return
        if self.backing is None or self.config is None:
            raise StrategyError("LocalBoxPowerDriver: the suite did not give the Box a disk and a configuration")
        state = self.backing
        if self.box.power_loss == "lazyfs":
            self._fs = LazyFS(self.backing)
            state = self._fs.mount()
        self.process = BoxProcess.start(state, self.config, env=self.env)

    @Driver.check_active  # type: ignore[untyped-decorator]
    @step()  # type: ignore[untyped-decorator]
    def off(self) -> None:
        box, self.process = self.process, None
        if box is None:
            return
        box.freeze()  # every thread stops at once ...
        if self._fs is not None:
            self._fs.crash()  # ... the disk loses what was not synced ...
            self._fs = None
        box.kill()  # ... and the Box is dead

    @Driver.check_active  # type: ignore[untyped-decorator]
    def cycle(self) -> None:
        self.off()
        self.on()

    def alive(self) -> bool:
        return self.process is not None and self.process.proc.poll() is None


@target_factory.reg_driver
@attr.s(eq=False)
class BoxVmPowerDriver(Driver, PowerProtocol):  # type: ignore[misc]
    """Power for the virtual Box, through QMP; the serial console's capture as the console."""

    bindings: ClassVar[dict[str, str]] = {"machine": "BoxVM"}

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.vm: Vm | None = None  # the machine (disk, credentials): set by the suite before the first `on`

    def _vm(self) -> Vm:
        if self.vm is None:
            raise StrategyError("BoxVmPowerDriver: the suite did not give the machine a disk")
        return self.vm

    @Driver.check_active  # type: ignore[untyped-decorator]
    @step()  # type: ignore[untyped-decorator]
    def on(self) -> None:
        vm = self._vm()
        if not vm.alive():
            vm.start()
            wait_for(vm.qmp_socket.exists, 30, "QEMU's QMP socket")

    @Driver.check_active  # type: ignore[untyped-decorator]
    @step()  # type: ignore[untyped-decorator]
    def off(self) -> None:
        # the machine stops at once (no shutdown: the guest's caches are lost) and the plug is pulled: the disk
        # holds what the guest had flushed (cache=writeback)
        self._vm().stop(cut=True)

    @Driver.check_active  # type: ignore[untyped-decorator]
    def cycle(self) -> None:
        self.off()
        self.on()

    def console(self) -> str:
        return self._vm().console()

    def link(self, up: bool) -> None:
        """The Box's WAN cable in or out: QMP ``set_link`` on its network device (the guest sees
        the carrier go, as when a cable is pulled; QEMU's user networking keeps the host's side)."""
        reply = qmp(self._vm().qmp_socket, "set_link", name="wan0", up=up)
        if "error" in reply:
            raise StrategyError(f"QMP set_link wan0 {up}: {reply['error']}")


# -- the strategy ----------------------------------------------------------------------------------

@target_factory.reg_driver
@attr.s(eq=False)
class BoxStrategy(Strategy):  # type: ignore[misc]
    """States: ``off`` (no power) and ``ready`` (powered, and the platform says the Box delivers).

    Whether the Box is ready is the platform's to say (the suite sets `ready_check`: is the Box
    online and has it delivered every point since the given power-on time?); the strategy only
    sequences power and waits. ``ready`` from ``ready`` powers nothing and checks again.
    """

    bindings: ClassVar[dict[str, str]] = {"power": "PowerProtocol"}
    ready_timeout: float = attr.ib(default=600.0, validator=attr.validators.instance_of((int, float)))

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.ready_check: Callable[[float], bool] = lambda _since: True  # (wall time of power-on)
        self.status = "unknown"

    @step(args=["state"])  # type: ignore[untyped-decorator]
    def transition(self, state: str) -> None:
        if state not in ("off", "ready"):
            raise StrategyError(f"BoxStrategy: no state {state!r} (off, ready)")
        self.target.activate(self.power)
        if state == "off":
            self.power.off()
        elif self.status == "ready":  # already on since it was shown ready: still online with every point good
            wait_for(lambda: self.ready_check(0.0), self.ready_timeout, "the Box to be ready (the platform's view)",
                     step=0.5)
        else:
            since = time.time()
            self.power.on()
            wait_for(lambda: self.ready_check(since), self.ready_timeout, "the Box to be ready (the platform's view)",
                     step=0.5)
        self.status = state

    def power_cut(self) -> None:
        """Off at once, wherever the Box is (the moment is the scenario's)."""
        self.target.activate(self.power)
        self.power.off()
        self.status = "off"
