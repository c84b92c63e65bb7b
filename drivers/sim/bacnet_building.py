"""A BACnet/IP building controller simulator (AHU / room controller) on bacpypes3.

Does: serve the objects of `drivers.sim.bacnet_model` as one BACnet/IP device on one
address (ReadProperty, ReadPropertyMultiple with segmented answers, WriteProperty
with priorities and relinquish on the commandable objects, SubscribeCOV with
confirmed and unconfirmed notifications, Who-Is/I-Am; an I-Am broadcast at start, as
devices do when they boot), move the values in a task of its own, and let a test
take away RPM or COV (`rpm=False`, `cov=False`: the device rejects them as
unrecognised services), make the device stop answering (`silent`) and restart it
(it forgets its COV subscriptions). Also a CLI, meant to run in a network namespace
(BACnet needs UDP broadcast and port 47808 on both ends)::

    ip netns exec NS python -m drivers.sim.bacnet_building --address 192.0.2.10/24 --instance 1001
        [--no-rpm] [--no-cov] [--max-apdu 480] [--no-segmentation] [--zones 24]

It prints ``ready {...}`` when bound, then takes commands on stdin, one per line, and
answers each with one line ``ok ...`` or ``error ...``: ``silent``, ``answer``,
``restart``, ``pause``, ``resume``, ``set <object> <value>``, ``get <object>
<property>``, ``stats`` (requests by service, as JSON), ``quit``. Ctrl-C (SIGINT) or
SIGTERM exits cleanly. Does not: route between BACnet networks, or act as a BBMD.

bacpypes3 0.0.110 notes: its ``BinaryValueObjectCmd`` lacks COV support and its
multi-state objects use the COV-increment criteria (they need the generic ones), so
`_BinaryValueCmd` and `_MultiStateValueCmd` are put together here; its local input
objects accept writes to present-value, which `_ReadOnlyPresentValue` refuses (as a
real device does unless the object is out of service).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import stat
import sys
import time
from collections import Counter
from typing import Any

from bacpypes3.basetypes import EngineeringUnits, PropertyIdentifier, Segmentation
from bacpypes3.errors import PropertyError, UnrecognizedService
from bacpypes3.ipv4.app import NormalApplication
from bacpypes3.local.analog import AnalogInputObject, AnalogValueObjectCmd
from bacpypes3.local.binary import BinaryInputObject, BinaryValueObject
from bacpypes3.local.cmd import Commandable
from bacpypes3.local.cov import GenericCriteria
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.multistate import MultiStateInputObject, MultiStateValueObject
from bacpypes3.pdu import IPv4Address

from drivers.errors import SimulatorError
from drivers.sim.bacnet_model import BuildingModel, Key, ObjectSpec, all_objects

__all__ = ["BacnetBuildingDevice", "main"]


class _ReadOnlyPresentValue:
    """Refuse writes to present-value unless the object is out of service."""

    async def write_property(self, attr: Any, value: Any, index: Any = None, priority: Any = None) -> None:
        name = attr if isinstance(attr, str) else PropertyIdentifier(attr).attr
        if name in ("presentValue", "present-value") and not getattr(self, "outOfService", False):
            raise PropertyError("writeAccessDenied")
        await super().write_property(attr, value, index, priority)  # type: ignore[misc]


class _AnalogInput(_ReadOnlyPresentValue, AnalogInputObject):  # type: ignore[misc]  # bacpypes3 is untyped
    pass


class _BinaryInput(_ReadOnlyPresentValue, BinaryInputObject):  # type: ignore[misc]
    pass


class _MultiStateInput(_ReadOnlyPresentValue, MultiStateInputObject):  # type: ignore[misc]
    _cov_criteria = GenericCriteria


class _BinaryValueCmd(Commandable, BinaryValueObject):  # type: ignore[misc]
    _cov_criteria = GenericCriteria


class _MultiStateValueCmd(Commandable, MultiStateValueObject):  # type: ignore[misc]
    _cov_criteria = GenericCriteria


class _SimApp(NormalApplication):  # type: ignore[misc]  # bacpypes3 is untyped
    """The device's application: counts requests, can refuse RPM and COV."""

    sim: BacnetBuildingDevice

    async def indication(self, apdu: Any) -> None:
        self.sim.counts[type(apdu).__name__] += 1
        await super().indication(apdu)

    async def do_ReadPropertyMultipleRequest(self, apdu: Any) -> None:
        if not self.sim.rpm:
            raise UnrecognizedService()
        await super().do_ReadPropertyMultipleRequest(apdu)

    async def do_SubscribeCOVRequest(self, apdu: Any) -> None:
        if not self.sim.cov:
            raise UnrecognizedService()
        await super().do_SubscribeCOVRequest(apdu)


def _make_object(spec: ObjectSpec, value: Any) -> Any:
    common: dict[str, Any] = {
        "objectIdentifier": spec.key, "objectName": spec.name, "description": spec.description,
    }
    if spec.units is not None:
        common["units"] = EngineeringUnits(spec.units)
    if spec.cov_increment is not None:
        common["covIncrement"] = spec.cov_increment
    if spec.states:
        common["numberOfStates"] = len(spec.states)
        common["stateText"] = list(spec.states)
    if spec.type == "analog-input":
        return _AnalogInput(presentValue=float(value), **common)
    if spec.type == "analog-value":
        return AnalogValueObjectCmd(presentValue=float(value), relinquishDefault=float(spec.initial), **common)
    if spec.type == "binary-input":
        return _BinaryInput(presentValue=_binary(value), **common)
    if spec.type == "binary-value":
        return _BinaryValueCmd(presentValue=_binary(value), relinquishDefault=_binary(spec.initial), **common)
    if spec.type == "multi-state-value":
        return _MultiStateValueCmd(presentValue=int(value), relinquishDefault=int(spec.initial), **common)
    return _MultiStateInput(presentValue=int(value), **common)


def _binary(value: Any) -> str:
    return "active" if value in (True, "active", 1) else "inactive"


def _plain(value: Any) -> Any:
    """A present-value as a plain Python value (for the model and `get`)."""
    text = str(value)
    if text in ("active", "inactive"):
        return text == "active"
    if isinstance(value, float):
        return float(value)
    if isinstance(value, int):
        return int(value)
    return text


class BacnetBuildingDevice:
    """One simulated BACnet/IP device. The constructor does no I/O.

    Use ``async with BacnetBuildingDevice("192.0.2.10/24", 1001) as dev:`` (or
    `start()` / `stop()`), in a network namespace that has that address.
    """

    def __init__(
        self, address: str, instance: int, *, port: int = 47808, name: str | None = None, rpm: bool = True,
        cov: bool = True, max_apdu: int = 1476, segmentation: bool = True, zones: int = 24,
        update_interval_s: float = 0.5, seed: int = 0,
    ) -> None:
        self.address, self.port, self.instance = address, port, instance
        self.name = name or f"sim-{instance}"
        self.rpm, self.cov = rpm, cov
        self.max_apdu, self.segmentation = max_apdu, segmentation
        self.specs = all_objects(zones)
        self.model = BuildingModel(zones, seed)
        self.values: dict[Key, Any] = {s.key: s.initial for s in self.specs}
        self.counts: Counter[str] = Counter()
        self.paused = False
        self._silent = False
        self._interval = update_interval_s
        self._app: _SimApp | None = None
        self._objects: dict[Key, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self._t0 = 0.0

    # -- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Bind, create the objects, start the model, announce the device (I-Am)."""
        device = DeviceObject(
            objectIdentifier=("device", self.instance), objectName=self.name, vendorIdentifier=999,
            maxApduLengthAccepted=self.max_apdu, maxSegmentsAccepted=16,
            segmentationSupported=Segmentation.segmentedBoth if self.segmentation else Segmentation.noSegmentation,
        )
        app = _SimApp(device, IPv4Address(f"{self.address}:{self.port}"))
        app.sim = self
        self._objects = {}
        for spec in self.specs:
            obj = _make_object(spec, self.values[spec.key])
            app.add_object(obj)
            self._objects[spec.key] = obj
        server = app.normal.server
        recv, send = server.confirmation, server.indication

        async def confirmation(pdu: Any) -> None:  # datagrams in
            if not self._silent:
                await recv(pdu)

        async def indication(pdu: Any) -> None:  # datagrams out
            if not self._silent:
                await send(pdu)

        server.confirmation, server.indication = confirmation, indication
        try:  # bacpypes3 retries a failed bind forever: give up after a while
            async with asyncio.timeout(5):
                await asyncio.gather(*server._transport_tasks)
        except TimeoutError:
            app.close()
            raise SimulatorError(f"cannot bind {self.address} port {self.port} (address missing or in use)") from None
        self._app = app
        if self._t0 == 0.0:
            self._t0 = time.monotonic()
        self._task = asyncio.create_task(self._update_loop(), name=f"sim {self.instance}")
        app.i_am()

    async def stop(self) -> None:
        """Stop the model and close the socket."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        app, self._app = self._app, None
        if app is not None:
            self._save()
            app.close()
            await asyncio.sleep(0)

    async def restart(self) -> None:
        """Stop and start again, as a device reboots: values kept, COV subscriptions lost."""
        await self.stop()
        await self.start()

    async def __aenter__(self) -> BacnetBuildingDevice:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    # -- control ----------------------------------------------------------------------

    @property
    def silent(self) -> bool:
        """True while the device neither receives nor sends anything."""
        return self._silent

    @silent.setter
    def silent(self, value: bool) -> None:
        self._silent = value

    def set_value(self, ref: str, value: Any) -> None:
        """Set an object's present-value (commandable objects: at priority 16).

        Raises:
            KeyError: no such object.
        """
        key = self._key(ref)
        obj = self._objects[key]
        if key[0].startswith("binary"):
            obj.presentValue = _binary(value)
        elif key[0].startswith("multi-state"):
            obj.presentValue = int(value)
        else:
            obj.presentValue = float(value)
        self.values[key] = _plain(obj.presentValue)

    def get(self, ref: str, prop: str = "present-value") -> Any:
        """A property of an object as a plain value (priority-array: the 16 slots).

        Raises:
            KeyError: no such object; AttributeError: no such property.
        """
        obj = self._objects[self._key(ref)]
        attr = PropertyIdentifier(prop).attr
        value = getattr(obj, attr)
        if attr == "priorityArray":
            return [None if pv.null is not None else _plain(getattr(pv, pv._choice)) for pv in value]
        return _plain(value)

    @staticmethod
    def _key(ref: str) -> Key:
        otype, _, inst = ref.partition(",")
        return (otype, int(inst))

    def _save(self) -> None:
        for key, obj in self._objects.items():
            if not any(s.commandable for s in self.specs if s.key == key):
                self.values[key] = _plain(obj.presentValue)

    async def _update_loop(self) -> None:
        while True:
            if not self.paused:
                commanded = {s.key: _plain(self._objects[s.key].presentValue) for s in self.specs if s.commandable}
                for key, value in self.model.values(time.monotonic() - self._t0, commanded).items():
                    obj = self._objects[key]
                    if key[0].startswith("binary"):
                        obj.presentValue = _binary(value)
                    else:
                        obj.presentValue = value
            await asyncio.sleep(self._interval)


# -- CLI ----------------------------------------------------------------------------------


async def _command(dev: BacnetBuildingDevice, line: str) -> str:
    words = line.split()
    if not words:
        return "ok"
    cmd, args = words[0], words[1:]
    if cmd in ("silent", "answer"):
        dev.silent = cmd == "silent"
    elif cmd == "restart":
        await dev.restart()
    elif cmd in ("pause", "resume"):
        dev.paused = cmd == "pause"
    elif cmd == "set" and len(args) == 2:
        dev.set_value(args[0], json.loads(args[1]))
    elif cmd == "get" and len(args) in (1, 2):
        return "ok " + json.dumps(dev.get(*args))
    elif cmd == "stats":
        return "ok " + json.dumps(dict(dev.counts))
    else:
        return f"error unknown command {line.strip()!r}"
    return "ok"


async def _serve(args: argparse.Namespace) -> None:
    dev = BacnetBuildingDevice(
        args.address, args.instance, port=args.port, name=args.name, rpm=not args.no_rpm, cov=not args.no_cov,
        max_apdu=args.max_apdu, segmentation=not args.no_segmentation, zones=args.zones,
        update_interval_s=args.update_interval,
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reader = asyncio.StreamReader()
    mode = os.fstat(sys.stdin.fileno()).st_mode
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or sys.stdin.isatty():
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    else:  # /dev/null or a file (epoll takes neither): no commands
        reader.feed_eof()
    async with dev:
        info = {"address": args.address, "port": args.port, "instance": args.instance, "objects": len(dev.specs)}
        print("ready " + json.dumps(info), flush=True)

        async def commands() -> None:
            while line := (await reader.readline()).decode():
                if line.strip() == "quit":
                    stop.set()
                    return
                try:
                    answer = await _command(dev, line)
                except (KeyError, ValueError, AttributeError, TypeError) as e:
                    answer = f"error {type(e).__name__}: {e}"
                print(answer, flush=True)

        async with asyncio.TaskGroup() as group:
            reading = group.create_task(commands())
            await stop.wait()
            reading.cancel()


def main(argv: list[str] | None = None) -> int:
    """The CLI: run one simulated device until Ctrl-C, SIGTERM or ``quit``."""
    parser = argparse.ArgumentParser(prog="python -m drivers.sim.bacnet_building", description=__doc__.split("\n")[0])
    parser.add_argument("--address", required=True, help="IPv4 address/prefix to bind, e.g. 192.0.2.10/24")
    parser.add_argument("--port", type=int, default=47808)
    parser.add_argument("--instance", type=int, required=True, help="device instance, 0..4194302")
    parser.add_argument("--name", default=None, help="device object name (default sim-<instance>)")
    parser.add_argument("--no-rpm", action="store_true", help="reject ReadPropertyMultiple")
    parser.add_argument("--no-cov", action="store_true", help="reject SubscribeCOV")
    parser.add_argument("--max-apdu", type=int, default=1476, choices=(50, 128, 206, 480, 1024, 1476))
    parser.add_argument("--no-segmentation", action="store_true", help="never send segmented answers")
    parser.add_argument("--zones", type=int, default=24, help="zone temperature inputs (a long object list)")
    parser.add_argument("--update-interval", type=float, default=0.5, help="seconds between value updates")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except (OSError, SimulatorError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
