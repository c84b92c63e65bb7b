"""`BacnetSource`: one BACnet/IP network on one field-bus interface as a `PointSource`.

Does: in `run()`, bind the Box's BACnet/IP application to the configured interface's
IPv4 address (looked up then; `InterfaceError` / `BindError` if it cannot), run one
`DeviceTask` per device under a task group, route I-Am messages and COV notifications
to their device, and close the socket when cancelled. Serves `read_now()` and
`write()` (type, range and priority checks first; `WriteError` names the point and the
reason) while `run()` goes on. Does not: poll or subscribe itself (`_device`), or parse
configuration (`_config`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from drivers._types import Emit, PointInfo, PointSource, Quality, Sample, Value
from drivers.bacnet._config import RESERVED_PRIORITY, BacnetNetwork, BacnetPoint, check_network
from drivers.bacnet._cov import SubState
from drivers.bacnet._device import DeviceTask, now_ms
from drivers.bacnet._stack import IAm, Reading, Ref, Stack
from drivers.bacnet._values import ValueTypeError, from_value
from drivers.bacnet.errors import DeviceRefusedError, NoAnswerError
from drivers.errors import UnknownPointError, WriteError, WriteRefusedError

log = logging.getLogger("drivers.bacnet")


class BacnetSource:
    """The points of every device of one BACnet/IP network; see the module docstring."""

    def __init__(self, network: BacnetNetwork) -> None:
        """Prepare the devices' schedules; no I/O (the socket is bound by `run()`).

        Raises:
            ConfigError: the network breaks a configuration rule.
        """
        check_network(network)
        self.network = network
        self.name = network.name
        self.stack = Stack(
            interface=network.interface, port=network.port, device_instance=network.device_instance,
            apdu_timeout_s=network.apdu_timeout_s, apdu_retries=network.apdu_retries, name=f"box {network.name}",
        )
        self.tasks: list[DeviceTask] = []
        pid = 1
        for device in network.devices:
            task = DeviceTask(device, self.stack, port=network.port, first_pid=pid)
            pid += len(task.cov.subscriptions)
            self.tasks.append(task)
        self._by_instance = {t.device.device_instance: t for t in self.tasks}
        self._by_pid = {p: t for t in self.tasks for p in t.cov.subscriptions}
        self._points: dict[str, tuple[DeviceTask, int]] = {
            name: (t, i) for t in self.tasks for i, name in enumerate(t.names)
        }
        self._emit: Emit | None = None
        self.stack.on_i_am = self._i_am
        self.stack.on_cov = self._cov
        self.stack.wants = self._by_instance.__contains__

    def points(self) -> Sequence[PointInfo]:
        """Every point, devices in configuration order. A point configured without a unit
        has its object's units once `run()` has read them ("" before)."""
        return [
            PointInfo(name, _unit(t.device.points[i], t.units.get(i)), t.device.points[i].kind)
            for t in self.tasks for i, name in enumerate(t.names)
        ]

    async def run(self, emit: Emit) -> None:
        """Bind, then poll and listen until cancelled.

        Raises:
            InterfaceError: the field-bus interface is missing or has no IPv4 address.
            BindError: the UDP port is taken on that address.
        """
        await self.stack.open()
        self._emit = emit
        count = len(self.tasks)
        try:
            async with asyncio.TaskGroup() as group:
                for n, task in enumerate(self.tasks):
                    stagger = min(1.0, task.device.poll_interval_s) * n / count
                    group.create_task(task.run(emit, stagger), name=f"bacnet {task.device.name}")
        finally:
            self._emit = None
            await self.stack.close()

    async def read_now(self, points: Sequence[str]) -> list[Sample]:
        """Read these points at once (one batch per device).

        Raises:
            UnknownPointError: a name is not a point of this network.
        """
        wanted = [self._find(p) for p in points]
        by_task: dict[int, list[int]] = {}
        for task, i in wanted:
            by_task.setdefault(id(task), []).append(i)
        results: dict[tuple[int, int], Reading] = {}
        for task in self.tasks:
            indexes = by_task.get(id(task))
            if not indexes:
                continue
            if self._emit is None:
                readings = [Reading(None, Quality.NOT_CONNECTED, "not running")] * len(indexes)
            else:
                readings = await task.read(indexes)
            results.update(((id(task), i), r) for i, r in zip(indexes, readings, strict=True))
        ts = now_ms()
        return [Sample(name, ts, results[id(t), i].value, results[id(t), i].quality)
                for name, (t, i) in zip(points, wanted, strict=True)]

    async def write(self, point: str, value: Value, priority: int | None = None) -> None:
        """WriteProperty to a writable point; `value=None` relinquishes `priority` (default:
        the point's). The point is read back afterwards and its new value emitted.

        Raises:
            UnknownPointError: not a point of this network.
            WriteRefusedError: not writable, wrong type, out of range, bad priority (nothing sent).
            WriteError: the device refused or did not answer.
        """
        task, i, prio, encoded = self._check(point, value, priority)
        where = f"write to {point}"
        if self._emit is None or task.address is None:
            raise WriteError(f"{where}: device {task.device.name} is not reachable (not running or not found)")
        ref = task.refs[i]
        try:
            await self.stack.write_property(task.address, ref, encoded, prio)
        except NoAnswerError:
            raise WriteError(f"{where}: device {task.device.name} did not answer") from None
        except DeviceRefusedError as e:
            raise WriteError(f"{where}: device {task.device.name} refused it: {e}") from None
        action = "relinquished" if value is None else f"wrote {value!r}"
        log.info("bacnet %s: %s at priority %d", point, action, prio, extra={"point": point})
        readings = await task.read([i])
        emit = self._emit
        if emit is not None:
            await emit([Sample(point, now_ms(), readings[0].value, readings[0].quality)])

    def check_write(self, point: str, value: Value, priority: int | None = None) -> None:
        """Whether `write` would take this value (nothing is sent).

        Raises:
            UnknownPointError: not a point of this network.
            WriteRefusedError: not writable, wrong type, out of range, or a bad priority.
        """
        self._check(point, value, priority)

    def _check(self, point: str, value: Value, priority: int | None) -> tuple[DeviceTask, int, int, object]:
        """The point's task and index, the priority and the encoded value of a write that may go."""
        task, i = self._find(point)
        p = task.device.points[i]
        where = f"write to {point}"
        if not p.writable:
            raise WriteRefusedError(f"{where}: the point is not writable (writable = false in its configuration)")
        prio = p.priority if priority is None else priority
        if isinstance(prio, bool) or not isinstance(prio, int) or not 1 <= prio <= 16 or prio == RESERVED_PRIORITY:
            raise WriteRefusedError(f"{where}: priority {prio!r} is not 1..16 (6 is reserved)")
        if value is not None and not isinstance(value, bool) and isinstance(value, int | float):
            if p.min is not None and value < p.min:
                raise WriteRefusedError(f"{where}: {value!r} is below the point's min {p.min!r}")
            if p.max is not None and value > p.max:
                raise WriteRefusedError(f"{where}: {value!r} is above the point's max {p.max!r}")
        try:
            encoded = from_value(value, p.object.type, p.property)
        except ValueTypeError as e:
            raise WriteRefusedError(f"{where}: {e}") from None
        return task, i, prio, encoded

    def stats(self) -> Mapping[str, int]:
        """"requests", "errors", "cycles", plus "cov_notifications" and "cov_active" (active
        subscriptions) and "rpm_fallbacks" (devices read with ReadProperty)."""
        active = sum(t.cov.counts()[SubState.ACTIVE] for t in self.tasks)
        return {
            "requests": self.stack.requests,
            "errors": self.stack.errors,
            "cycles": sum(t.cycles for t in self.tasks),
            "cov_notifications": sum(t.notifications for t in self.tasks),
            "cov_active": active,
            "rpm_fallbacks": sum(1 for t in self.tasks if t.rpm is False),
        }

    # -- routing ------------------------------------------------------------------------

    def _find(self, point: str) -> tuple[DeviceTask, int]:
        found = self._points.get(point)
        if found is None:
            raise UnknownPointError(f"{point!r} is not a point of bacnet network {self.name!r}")
        return found

    def _i_am(self, i_am: IAm) -> None:
        task = self._by_instance.get(i_am.instance)
        if task is not None:
            task.i_am(i_am)

    async def _cov(self, address: str, process_id: int, _ref: Ref, values: list[tuple[str, Reading]]) -> bool:
        task = self._by_pid.get(process_id)
        emit = self._emit
        if task is None or emit is None:
            return False
        return await task.notified(address, process_id, values, emit)


def _unit(point: BacnetPoint, learned: str | None) -> str:
    if point.unit is not None:
        return point.unit
    return learned or ""


if TYPE_CHECKING:  # mypy checks that the adapter implements the interface

    def _is_a_point_source(source: BacnetSource) -> PointSource:
        return source
