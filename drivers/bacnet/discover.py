"""Discovery for installers: find BACnet devices, list their objects, write a point list.

Does: `discover_devices()` broadcasts a Who-Is on the field-bus interface and collects
the I-Ams (instance, address, vendor, max-APDU, segmentation); `read_objects()` reads a
device's object-list and, for each object, its object-name, description, units and
present-value (ReadPropertyMultiple batched like the driver's polls, ReadProperty
for a device without it); `objects_to_toml()` turns that into an editable
``[[bacnet.devices]]`` table for the Box's configuration. Used by ``boxctl discover
bacnet``. Does not: write to devices, subscribe, or keep anything.

Each call binds its own socket on the interface (port 47808 unless told): while boxd
runs a BACnet source on the same interface and port, the bind fails with `BindError`
(two applications cannot share the port reliably: unicast answers would reach only one).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from drivers._types import Quality, Value
from drivers.bacnet._config import BacnetDevice, BacnetPoint, ObjectRef
from drivers.bacnet._device import DeviceTask
from drivers.bacnet._names import object_type_number, unit_symbol, units_name, value_kind
from drivers.bacnet._stack import IAm, Stack
from drivers.bacnet.errors import DeviceNotFoundError, DeviceRefusedError, NoAnswerError

__all__ = ["DeviceInfo", "ObjectInfo", "discover_devices", "objects_to_toml", "read_objects"]

DISCOVERY_INSTANCE = 4194301  # the Box's device instance while discovering
_CHUNK = 16  # objects read between two progress reports
_SKIPPED_TYPES = frozenset({"device", "network-port"})
_COMMANDABLE = frozenset({
    "analog-output", "analog-value", "binary-output", "binary-value", "multi-state-output",
    "multi-state-value", "integer-value", "positive-integer-value", "large-analog-value",
})


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """A device that answered a Who-Is."""

    instance: int
    address: str  # "ip:port"
    vendor_id: int
    max_apdu: int
    segmentation: str  # e.g. "segmented-both", "no-segmentation"


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One object of a device, as read for the installer."""

    object: str  # "analog-input,1"
    name: str  # object-name
    description: str = ""
    units: str = ""  # BACnet engineering-units name, e.g. "degrees-celsius"; "" if none
    present_value: Value = None
    kind: str = ""  # the Box kind of present-value; "" when it has none (not a point)
    error: str = ""  # why something could not be read

    @property
    def unit(self) -> str:
        """The Box's unit symbol, e.g. "degC"."""
        return unit_symbol(self.units) if self.units else ""


def _stack(interface: str, port: int, apdu_timeout_s: float) -> Stack:
    return Stack(
        interface=interface, port=port, device_instance=DISCOVERY_INSTANCE, apdu_timeout_s=apdu_timeout_s,
        apdu_retries=1, name="box discovery",
    )


async def discover_devices(
    interface: str, *, timeout_s: float = 3.0, on_progress: Callable[[DeviceInfo], None] | None = None,
    port: int = 47808, low: int | None = None, high: int | None = None,
) -> list[DeviceInfo]:
    """Broadcast a Who-Is on `interface` and collect the I-Ams for `timeout_s`.

    Args:
        interface: the field-bus interface, e.g. "fieldbus0".
        timeout_s: how long to listen.
        on_progress: called with each device as its I-Am arrives.
        port: the BACnet/IP UDP port.
        low, high: an instance range to ask for (both or neither).

    Returns:
        The devices, by instance number.

    Raises:
        InterfaceError, BindError: the interface cannot be used.
    """
    stack = _stack(interface, port, 3.0)
    found: dict[int, DeviceInfo] = {}

    def i_am(message: IAm) -> None:
        if message.instance in found:
            return
        info = DeviceInfo(message.instance, message.address, message.vendor_id, message.max_apdu,
                          message.segmentation)
        found[info.instance] = info
        if on_progress is not None:
            on_progress(info)

    stack.on_i_am = i_am
    await stack.open()
    try:
        await stack.who_is(low, high, None, timeout_s)
    finally:
        await stack.close()
    return [found[k] for k in sorted(found)]


async def read_objects(
    interface: str, device: DeviceInfo, *, on_progress: Callable[[int, int, ObjectInfo], None] | None = None,
    port: int = 47808, apdu_timeout_s: float = 3.0,
) -> list[ObjectInfo]:
    """Read a device's objects with their names, descriptions, units and present values.

    Args:
        interface: the field-bus interface.
        device: the device, as `discover_devices()` found it.
        on_progress: called as ``(done, total, object)`` after each object.
        port: the Box's BACnet/IP UDP port.
        apdu_timeout_s: wait for each try of a request.

    Raises:
        InterfaceError, BindError: the interface cannot be used.
        DeviceNotFoundError: the device did not answer (or refused) reading its object list.
    """
    stack = _stack(interface, port, apdu_timeout_s)
    await stack.open()
    try:
        try:
            objects = await stack.read_object_list(device.address, device.instance)
        except (NoAnswerError, DeviceRefusedError) as e:
            raise DeviceNotFoundError(
                f"device {device.instance} at {device.address}: cannot read its object list: {e}"
            ) from e
        wanted = [o for o in objects if o[0] not in _SKIPPED_TYPES]
        points, owners = _points(wanted)
        task = DeviceTask(
            BacnetDevice(name="discovery", device_instance=device.instance, points=tuple(points) or _NO_POINTS,
                         cov="off"),
            stack, port=stack.port, first_pid=1,
        )
        task.address, task.max_apdu, task.segmentation = device.address, device.max_apdu, device.segmentation
        out: list[ObjectInfo] = []
        for start in range(0, len(wanted), _CHUNK):
            indexes = [i for i, (n, _prop) in enumerate(owners) if start <= n < start + _CHUNK]
            readings = await task.read(indexes) if indexes else []
            got = {owners[i]: (r.value, r.detail if r.quality is not Quality.GOOD else "")
                   for i, r in zip(indexes, readings, strict=True)}
            for n in range(start, min(start + _CHUNK, len(wanted))):
                out.append(_info(wanted[n], got.get((n, "object-name")), got.get((n, "description")),
                                 got.get((n, "units")), got.get((n, "present-value"))))
                if on_progress is not None:
                    on_progress(len(out), len(wanted), out[-1])
        return out
    finally:
        await stack.close()


_NO_POINTS = (BacnetPoint(name="name", object=ObjectRef("device", 0), property="object-name"),)
Got = tuple[Value, str] | None


def _points(objects: Sequence[tuple[str, int]]) -> tuple[list[BacnetPoint], list[tuple[int, str]]]:
    """The properties to read, and (object position, property) for each."""
    points: list[BacnetPoint] = []
    owners: list[tuple[int, str]] = []
    for n, (otype, inst) in enumerate(objects):
        if object_type_number(otype) is None:
            continue
        for prop in ("object-name", "description", "units", "present-value"):
            if value_kind(otype, prop) is not None:
                points.append(BacnetPoint(name=f"p{len(points)}", object=ObjectRef(otype, inst), property=prop))
                owners.append((n, prop))
    return points, owners


def _info(obj: tuple[str, int], name: Got, desc: Got, units: Got, value: Got) -> ObjectInfo:
    ref = f"{obj[0]},{obj[1]}"
    if object_type_number(obj[0]) is None:
        return ObjectInfo(ref, "", error="not a standard object type")
    name_v, name_err = name or (None, "")
    units_v = units[0] if units else None
    value_v, value_err = value or (None, "")
    return ObjectInfo(
        ref,
        name_v if isinstance(name_v, str) else "",
        desc[0] if desc and isinstance(desc[0], str) else "",
        units_name(units_v) if isinstance(units_v, int) and not isinstance(units_v, bool) else "",
        value_v,
        value_kind(obj[0], "present-value") or "",
        name_err or value_err,
    )


# -- export ---------------------------------------------------------------------------------


def point_name(text: str, fallback: str) -> str:
    """An object-name as a point name: lower case, [a-z0-9_-], at most 32 characters."""
    name = re.sub(r"[^a-z0-9_-]+", "_", text.strip().lower()).strip("_-")[:32].rstrip("_-")
    if not name:
        name = re.sub(r"[^a-z0-9_-]+", "_", fallback.lower())[:32]
    return name


def objects_to_toml(device_name: str, device: DeviceInfo, objects: Sequence[ObjectInfo]) -> str:
    """An editable ``[[bacnet.devices]]`` table with one point per object that has a
    present value; the description and current value as comments, commandable objects
    marked so the installer can choose to make them writable.

    It goes below a ``[[bacnet]]`` table (name, interface, device_instance) of the Box's
    configuration.
    """
    host, _, port = device.address.partition(":")
    address = host if port in ("", "47808") else device.address
    lines = [
        f"# device {device.instance} at {device.address}: vendor {device.vendor_id}, max APDU "
        f"{device.max_apdu}, {device.segmentation}",
        "[[bacnet.devices]]",
        f"name = {json.dumps(device_name)}",
        f"device_instance = {device.instance}",
        f"address = {json.dumps(address)}",
        "poll_interval_s = 10.0",
        'cov = "auto"',
    ]
    used: set[str] = set()
    for obj in objects:
        if not obj.kind or (obj.error and obj.present_value is None):
            continue
        base = point_name(obj.name, obj.object.replace(",", "_"))
        name, n = base, 2
        while name in used:
            suffix = f"_{n}"
            name, n = base[: 32 - len(suffix)] + suffix, n + 1
        used.add(name)
        lines += ["", "[[bacnet.devices.points]]"]
        note = f"{obj.name}: {obj.description}" if obj.description else obj.name
        lines.append(f"# {_comment(note)} (now {_comment(_shown(obj.present_value))})")
        lines += [f"name = {json.dumps(name)}", f"object = {json.dumps(obj.object)}"]
        if obj.units:
            lines.append(f"unit = {json.dumps(obj.unit)}")
        if obj.object.split(",")[0] in _COMMANDABLE:
            lines.append("# writable = true   # commandable: uncomment to allow writes (priority = 8)")
    lines.append("")
    return "\n".join(lines)


def _shown(value: Value) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:g}"
    return json.dumps(value)


def _comment(text: str) -> str:
    return "".join(c if c.isprintable() else " " for c in text)[:100]
