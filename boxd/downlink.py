"""What the platform sends a Box, checked against the Box's own state (pure code).

The messages themselves are `proto`'s (`proto.downlink`, `proto.commands`): decoded there, strictly.
Here: a configuration push checked by its meaning (`decode_config`, with `boxconfig.check_push`);
whether a command already ran (`SeenIds`, kept by the daemon across restarts), whether it expired
(`is_expired`, against the daemon's clock), and whether a write may go to its point
(`check_write`, against the running configuration's points). Every refusal is a
`proto.errors.RejectedError` whose message is the reason sent back to the platform.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

import boxconfig
from drivers.modbus import ModbusDevice
from proto import names
from proto.commands import Command, Write
from proto.downlink import ConfigPush, decode_command
from proto.downlink import decode_config as decode_push
from proto.errors import RejectedError
from proto.text import clip, show
from proto.topics import Down

MAX_SEEN: Final = 1000


@dataclass(frozen=True, slots=True)
class ValidConfig:
    """A configuration push, validated: the message and the configuration it carries."""

    push: ConfigPush
    config: boxconfig.BoxConfig

    @property
    def version(self) -> int:
        """The platform's version of it."""
        return self.push.version

    @property
    def toml_text(self) -> str:
        """Its TOML text, as sent."""
        return self.push.toml_text

    @property
    def allow_empty(self) -> bool:
        """Whether the operator meant a configuration without points."""
        return self.push.allow_empty


def decode(leaf: str, payload: bytes) -> ValidConfig | Command:
    """Decode (and, a configuration, validate) what arrived on ``boxes/<id>/down/<leaf>``.

    Raises:
        RejectedError: an unknown leaf, or the payload is not a valid message of that leaf.
    """
    if leaf == Down.CONFIG:
        return decode_config(payload)
    if leaf == Down.CMD:
        return decode_command(payload)
    raise RejectedError(f"unknown downlink topic leaf {show(leaf)}")


def decode_config(payload: bytes) -> ValidConfig:
    """Decode and validate a configuration push, by schema and by meaning.

    Raises:
        RejectedError: with every reason found in `reasons` (framing, fields, TOML, and
            each section's or device's configuration problem).
    """
    push = decode_push(payload)
    return ValidConfig(push, boxconfig.check_push(push))


# -- expiry and repeated ids --------------------------------------------------------------


def is_expired(cmd: Command, now: float) -> bool:
    """Whether the command's time has passed (`now` in unix seconds): it must not run."""
    return now >= cmd.expires


class SeenIds:
    """The ids of the last `limit` commands run, so that a repeated id runs once.

    Kept in order of arrival; the oldest are forgotten beyond the limit (a command repeated
    after 1,000 others would have expired long before). `to_json`/`from_json` persist it.
    """

    def __init__(self, ids: Iterable[str] = (), limit: int = MAX_SEEN) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._ids: OrderedDict[str, None] = OrderedDict()
        for i in ids:
            self.add(i)

    def __contains__(self, cmd_id: object) -> bool:
        return cmd_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, cmd_id: str) -> bool:
        """Remember an id; False if it was already there (the command must not run again)."""
        if cmd_id in self._ids:
            return False
        self._ids[cmd_id] = None
        while len(self._ids) > self.limit:
            self._ids.popitem(last=False)
        return True

    def to_json(self) -> bytes:
        """The ids, oldest first, as JSON."""
        return json.dumps({"v": 1, "ids": list(self._ids)}, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes, limit: int = MAX_SEEN) -> SeenIds:
        """Read what `to_json` wrote.

        Raises:
            RejectedError: not what `to_json` writes (the caller decides whether to start
                empty, at the risk of running a command twice).
        """
        try:
            held = json.loads(data)
        except (ValueError, RecursionError) as e:
            raise RejectedError(f"seen command ids: not JSON: {clip(str(e), 200)}") from None
        ids = held.get("ids") if isinstance(held, dict) and held.get("v") == 1 else None
        if not isinstance(ids, list) or not all(names.COMMAND_ID.fullmatch(i) for i in ids):
            raise RejectedError('seen command ids: expected {"v": 1, "ids": [id, ...]}')
        return cls(ids, limit)


# -- writes against the configuration ------------------------------------------------------


class PointSpec(Protocol):
    """What a write is checked against. `writable`, `min` and `max` are named as in both
    drivers' point configurations (`drivers.modbus.ModbusPoint`, `drivers.bacnet`'s
    `BacnetPoint`); `kind` is the point's `PointInfo.kind` and `priorities` says whether
    the bus has write priorities (BACnet). `point_specs` builds them from a configuration."""

    @property
    def writable(self) -> bool: ...
    @property
    def min(self) -> float | None: ...
    @property
    def max(self) -> float | None: ...
    @property
    def kind(self) -> str: ...
    @property
    def priorities(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Spec:
    """A `PointSpec` as `point_specs` makes them."""

    kind: str
    writable: bool = False
    min: float | None = None
    max: float | None = None
    priorities: bool = False


_NUMERIC_KINDS: Final = frozenset({
    "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64",
})
_RESERVED_PRIORITY: Final = 6  # BACnet minimum on/off: not for clients


def point_specs(cfg: boxconfig.BoxConfig) -> dict[str, Spec]:
    """Every point of a configuration by its full name ("<device>.<point>")."""
    specs: dict[str, Spec] = {}
    modbus_devices: list[ModbusDevice] = [*cfg.modbus_tcp, *(d for line in cfg.modbus_rtu for d in line.devices)]
    for dev in modbus_devices:
        for p in dev.points:
            kind = "bool" if p.table in ("coil", "discrete") else p.type
            specs[f"{dev.name}.{p.name}"] = Spec(kind, p.writable, p.min, p.max, priorities=False)
    for net in cfg.bacnet:
        for bdev in net.devices:
            for bp in bdev.points:
                specs[f"{bdev.name}.{bp.name}"] = Spec(bp.kind, bp.writable, bp.min, bp.max, priorities=True)
    return specs


def check_write(cmd: Write, points: Mapping[str, PointSpec]) -> None:
    """Whether a `write` command may go to its point: it exists, is writable, the value is
    of the point's kind and within its min/max, priority and relinquish only where the
    bus has priorities. The driver checks again when it writes (steps, type range).

    Raises:
        RejectedError: the reason the write is refused.
    """
    name = cmd.point
    where = f"cmd {cmd.id} (write): point {name!r}"
    spec = points.get(name)
    if spec is None:
        raise RejectedError(f"{where} is not a point of this Box")
    if not spec.writable:
        raise RejectedError(f"{where} is not writable (its configuration has no writable = true)")
    priority = cmd.priority
    if priority is not None or cmd.relinquish:
        if not spec.priorities:
            raise RejectedError(f"{where} has no write priorities (priority and relinquish are for BACnet)")
        if priority == _RESERVED_PRIORITY:
            raise RejectedError(f"{where}: priority 6 is reserved for minimum on/off; use 1..5 or 7..16")
    if not cmd.relinquish:
        _check_value(where, spec, cmd.value)


def _check_value(where: str, spec: PointSpec, value: object) -> None:
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise RejectedError(f"{where} is a bool: {show(value)} is not true or false")
    elif spec.kind in _NUMERIC_KINDS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RejectedError(f"{where} is a {spec.kind}: {show(value)} is not a number")
        if isinstance(value, float) and not math.isfinite(value):
            raise RejectedError(f"{where} is a {spec.kind}: {value!r} is not a finite number")
        if spec.min is not None and value < spec.min:
            raise RejectedError(f"{where}: {show(value)} is below its min {spec.min!r}")
        if spec.max is not None and value > spec.max:
            raise RejectedError(f"{where}: {show(value)} is above its max {spec.max!r}")
    elif spec.kind == "string":
        if not isinstance(value, str):
            raise RejectedError(f"{where} is text: {show(value)} is not")
    else:
        raise RejectedError(f"{where} is of kind {spec.kind!r}, which cannot be written")
