"""What the platform sends a Box, decoded and validated, and what the Box answers (pure code).

Topics (the Box subscribes to ``boxes/<id>/down/#``; ``time`` is handled by the daemon)::

    boxes/<id>/down/config   {"version": int >= 1, "toml": str}       a whole configuration
    boxes/<id>/down/cmd      {"id": str, "name": str, "expires": unix seconds, "args": map}
    boxes/<id>/up/replies    {"kind": "cmd", "id", "status", "detail"(, "result", "faults")}
                             {"kind": "config", "version", "status", "reasons"}

Payloads use the uplink's framing (`boxd.wire`: one header byte, optional raw deflate,
CBOR), here decoded with `wire.unframe_untrusted`: sizes bounded on the wire and
inflated, at most `MAX_DEPTH` nested containers and a bounded number of items, no CBOR
tags, no indefinite lengths, no duplicate keys. Every field is then checked for type,
length and range; unknown fields are refused; a boolean is never taken for an integer
and NaN or infinity never for a number. Anything wrong raises `DownlinkError` with a
message saying what, for the reply to the platform: `decode` raises nothing else.

Commands (``args`` per name; unknown names and unknown args are refused)::

    write       {"point": str, "value": bool|int|float|str, "priority"?: 1..16, "relinquish"?: bool}
    read        {"points": [str, ...]}  1..100 point names
    restart     {}
    reboot      {}
    logs        {"lines"?: 1..1000}     default 200
    renew_cert  {}
    update      {"deployment": str, "target": str, "version": str, "health_s"?: 10..3600}
                install the named TUF target (a software bundle) A/B; default health_s 300
    update_abort {"deployment": str}   stop that deployment's download; nothing is installed

What is not decided here: whether a command already ran (`SeenIds`, kept by the daemon),
whether it expired (`is_expired`, against the daemon's clock) and whether a write may go
to its point (`check_write`, against the running configuration's points).
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, TypeGuard

from boxd import config as box_config
from boxd import wire
from boxd.errors import BoxdError, ConfigError, WireError
from drivers import Value
from drivers.modbus import ModbusDevice

LEAVES: Final = ("config", "cmd")
MAX_CONFIG_PAYLOAD: Final = 256 * 1024  # on the wire
MAX_CONFIG_TEXT: Final = 4 * 1024 * 1024  # inflated, and the TOML text's UTF-8 size
MAX_CMD_PAYLOAD: Final = 16 * 1024  # on the wire
MAX_CMD_INFLATED: Final = 64 * 1024
MAX_DEPTH: Final = 4  # document > args > points list: 3 are used
MAX_ITEMS: Final = 1_000  # CBOR data items in one message
MAX_ID: Final = 64
MAX_NAME: Final = 32  # a command name
MAX_POINT_NAME: Final = 128  # "<device>.<point>", as in the point table
MAX_TEXT_VALUE: Final = 256  # a string written to a point
MAX_READ_POINTS: Final = 100
MAX_LOG_LINES: Final = 1000
DEFAULT_LOG_LINES: Final = 200
MAX_DETAIL: Final = 1024  # bytes of UTF-8 in a reply's detail
MAX_LOG_BYTES: Final = 128 * 1024  # the lines of a logs reply
MAX_REASONS: Final = 100  # reasons in a configuration reply
MAX_REASON: Final = 512  # bytes of UTF-8 in each reason
MAX_SEEN: Final = 1000
MAX_VERSION: Final = 2**63 - 1
MAX_EXPIRES: Final = 1e11  # unix seconds, year 5138: beyond is garbage
_ID_RE: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_POINT_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_DEPLOYMENT_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TARGET_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")  # a plain file name, as ota.client
_VERSION_RE: Final = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+(?:-[0-9A-Za-z.-]{1,32})?")
DEFAULT_HEALTH_S: Final = 300
MIN_HEALTH_S: Final = 10
MAX_HEALTH_S: Final = 3600

CmdStatus = Literal["ok", "rejected", "failed", "expired", "duplicate"]
ConfigStatus = Literal["applied", "rejected", "rolled_back", "kept"]
CMD_STATUSES: Final = frozenset({"ok", "rejected", "failed", "expired", "duplicate"})
# "applied" with a reason "on probation ..." is followed by "kept" (a good reading came) or "rolled_back"
CONFIG_STATUSES: Final = frozenset({"applied", "rejected", "rolled_back", "kept"})
ON_PROBATION = "on probation"  # how an "applied" reply's first reason starts when a probation follows


class DownlinkError(BoxdError):
    """A downlink message is refused; the message says why (it is sent back as the reason)."""

    def __init__(self, message: str, reasons: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.reasons: list[str] = list(reasons) or [message]


@dataclass(frozen=True, slots=True)
class ConfigPush:
    """A configuration pushed by the platform, validated."""

    version: int
    toml_text: str
    config: box_config.BoxConfig
    allow_empty: bool = False  # the operator meant a configuration without points (boxcloud --allow-empty)


@dataclass(frozen=True, slots=True)
class Command:
    """A command, its arguments checked for its name (defaults filled in)."""

    id: str
    name: str
    expires: float  # unix seconds
    args: Mapping[str, object]


# -- decoding ---------------------------------------------------------------------------


def decode(leaf: str, payload: bytes) -> ConfigPush | Command:
    """Decode the payload received on ``boxes/<id>/down/<leaf>``.

    Raises:
        DownlinkError: unknown leaf, or the payload is not a valid message of that leaf.
    """
    if leaf == "config":
        return decode_config(payload)
    if leaf == "cmd":
        return decode_command(payload)
    raise DownlinkError(f"unknown downlink topic leaf {_show(leaf)}")


def decode_config(payload: bytes) -> ConfigPush:
    """Decode and validate a configuration push, by schema and by meaning.

    Raises:
        DownlinkError: with every reason found in `reasons` (framing, fields, TOML, and
            each section's or device's configuration problem).
    """
    doc = _document(payload, "config", MAX_CONFIG_PAYLOAD, MAX_CONFIG_TEXT, {"version", "toml"},
                    allowed={"version", "toml", "allow_empty"})
    version = doc["version"]
    if not _is_int(version) or not 1 <= version <= MAX_VERSION:
        raise DownlinkError(f"config: version must be an integer from 1 to {MAX_VERSION}, not {_show(version)}")
    text = doc["toml"]
    if not isinstance(text, str):
        raise DownlinkError(f"config: toml must be text, not {_kind(text)}")
    if len(text.encode("utf-8")) > MAX_CONFIG_TEXT:  # cannot be, inflated: said for the reader
        raise DownlinkError(f"config: toml is over {MAX_CONFIG_TEXT} bytes")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise DownlinkError(f"config: toml is not valid TOML: {e}") from None
    except (ValueError, RecursionError) as e:  # integers of > 4300 digits, arrays nested ~1000 deep
        raise DownlinkError(f"config: toml is not valid TOML: {_clip(str(e), 200)}") from None
    try:
        parsed = box_config.parse(raw)
    except ConfigError as e:
        reasons = box_config.problems(raw)
        summary = reasons[0] if len(reasons) == 1 else f"{len(reasons)} problems, the first: {reasons[0]}"
        raise DownlinkError(f"config: {_clip(summary, MAX_REASON)}", reasons) from e
    allow_empty = doc.get("allow_empty", False)
    if not isinstance(allow_empty, bool):
        raise DownlinkError(f"config: allow_empty must be true or false, not {_kind(allow_empty)}")
    if not parsed.point_count() and not allow_empty:
        raise DownlinkError("config: it has no points: applied, it would silence every device of the Box "
                            "(send it with allow_empty, 'boxcloud config push --allow-empty', if that is meant)")
    return ConfigPush(version, text, parsed, allow_empty)


def decode_command(payload: bytes) -> Command:
    """Decode and validate a command and its arguments.

    Raises:
        DownlinkError: what is wrong; when the id could be read, the message starts with it.
    """
    doc = _document(payload, "cmd", MAX_CMD_PAYLOAD, MAX_CMD_INFLATED, {"id", "name", "expires", "args"})
    cmd_id = doc["id"]
    if not (isinstance(cmd_id, str) and _ID_RE.fullmatch(cmd_id)):
        raise DownlinkError(f"cmd: id must be 1..{MAX_ID} of A-Z a-z 0-9 . _ : -, not {_show(cmd_id)}")
    where = f"cmd {cmd_id}"
    name = doc["name"]
    if not isinstance(name, str):
        raise DownlinkError(f"{where}: name must be text, not {_kind(name)}")
    check = _COMMANDS.get(name)
    if check is None:
        known = ", ".join(sorted(_COMMANDS))
        raise DownlinkError(f"{where}: unknown command {_show(name)} (known: {known})")
    expires = doc["expires"]
    if not (_is_number(expires) and 0 <= expires <= MAX_EXPIRES):
        raise DownlinkError(f"{where}: expires must be unix seconds from 0 to {MAX_EXPIRES:.0f}, not {_show(expires)}")
    args = doc["args"]
    if not isinstance(args, dict):
        raise DownlinkError(f"{where}: args must be a map, not {_kind(args)}")
    return Command(cmd_id, name, float(expires), check(f"{where} ({name})", args))


def _document(payload: bytes, what: str, max_payload: int, max_inflated: int, keys: set[str], *,
              allowed: set[str] | None = None) -> dict[str, object]:
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise DownlinkError(f"{what}: payload must be bytes, not {type(payload).__name__}")
    try:
        doc = wire.unframe_untrusted(bytes(payload), max_payload=max_payload, max_inflated=max_inflated,
                                     max_depth=MAX_DEPTH, max_items=MAX_ITEMS)
    except WireError as e:
        raise DownlinkError(f"{what}: {_clip(str(e), 300)}") from None
    if not isinstance(doc, dict):
        raise DownlinkError(f"{what}: the message must be a map, not {_kind(doc)}")
    _check_keys(doc, what, keys, allowed or keys)
    return doc


def _check_keys(doc: Mapping[Any, object], where: str, required: set[str], allowed: set[str]) -> None:
    bad = [k for k in doc if not isinstance(k, str)]
    if bad:
        raise DownlinkError(f"{where}: keys must be text, not {_kind(bad[0])}")
    unknown = sorted(str(k) for k in doc if k not in allowed)
    if unknown:
        raise DownlinkError(f"{where}: unknown field(s): {_clip(', '.join(map(_show, unknown)), 200)}")
    missing = sorted(required - set(map(str, doc)))
    if missing:
        raise DownlinkError(f"{where}: missing field(s): {', '.join(missing)}")


# -- commands' arguments ----------------------------------------------------------------


def _args_write(where: str, args: dict[str, object]) -> dict[str, object]:
    _check_keys(args, where, {"point"}, {"point", "value", "priority", "relinquish"})
    point = _point_name(where, "point", args["point"])
    relinquish = args.get("relinquish", False)
    if not isinstance(relinquish, bool):
        raise DownlinkError(f"{where}: relinquish must be true or false, not {_kind(relinquish)}")
    out: dict[str, object] = {"point": point, "relinquish": relinquish}
    if relinquish:
        if "value" in args:
            raise DownlinkError(f"{where}: a relinquish takes no value")
        if "priority" not in args:
            raise DownlinkError(f"{where}: a relinquish needs the priority to release")
    elif "value" not in args:
        raise DownlinkError(f"{where}: missing field(s): value")
    else:
        out["value"] = _value(where, args["value"])
    if "priority" in args:
        priority = args["priority"]
        if not (_is_int(priority) and 1 <= priority <= 16):
            raise DownlinkError(f"{where}: priority must be an integer from 1 to 16, not {_show(priority)}")
        out["priority"] = priority
    return out


def _value(where: str, value: object) -> Value:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise DownlinkError(f"{where}: value {_show(value)} is out of 64-bit range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DownlinkError(f"{where}: value must be a finite number, not {value!r}")
        return value
    if isinstance(value, str):
        if len(value) > MAX_TEXT_VALUE:
            raise DownlinkError(f"{where}: value is text of {len(value)} characters, over {MAX_TEXT_VALUE}")
        return value
    raise DownlinkError(f"{where}: value must be a boolean, number or text, not {_kind(value)}")


def _args_read(where: str, args: dict[str, object]) -> dict[str, object]:
    _check_keys(args, where, {"points"}, {"points"})
    points = args["points"]
    if not isinstance(points, list) or not 1 <= len(points) <= MAX_READ_POINTS:
        shown = f"a list of {len(points)}" if isinstance(points, list) else _kind(points)
        raise DownlinkError(f"{where}: points must be a list of 1 to {MAX_READ_POINTS} point names, not {shown}")
    names = [_point_name(where, f"points[{i}]", p) for i, p in enumerate(points)]
    return {"points": list(dict.fromkeys(names))}


def _args_logs(where: str, args: dict[str, object]) -> dict[str, object]:
    _check_keys(args, where, set(), {"lines"})
    lines = args.get("lines", DEFAULT_LOG_LINES)
    if not (_is_int(lines) and 1 <= lines <= MAX_LOG_LINES):
        raise DownlinkError(f"{where}: lines must be an integer from 1 to {MAX_LOG_LINES}, not {_show(lines)}")
    return {"lines": lines}


def _args_none(where: str, args: dict[str, object]) -> dict[str, object]:
    _check_keys(args, where, set(), set())
    return {}


def _text(where: str, field: str, value: object, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise DownlinkError(f"{where}: {field} must be {what}, not {_show(value)}")
    return value


def _deployment(where: str, args: dict[str, object]) -> str:
    return _text(where, "deployment", args["deployment"], _DEPLOYMENT_RE, "a deployment id (letters, digits, ._-)")


def _args_update(where: str, args: dict[str, object]) -> dict[str, object]:
    _check_keys(args, where, {"deployment", "target", "version"}, {"deployment", "target", "version", "health_s"})
    out: dict[str, object] = {
        "deployment": _deployment(where, args),
        "target": _text(where, "target", args["target"], _TARGET_RE, "a plain file name"),
        "version": _text(where, "version", args["version"], _VERSION_RE, "a version like 1.2.3"),
    }
    health_s = args.get("health_s", DEFAULT_HEALTH_S)
    if not (_is_int(health_s) and MIN_HEALTH_S <= health_s <= MAX_HEALTH_S):
        raise DownlinkError(f"{where}: health_s must be an integer from {MIN_HEALTH_S} to {MAX_HEALTH_S}, "
                            f"not {_show(health_s)}")
    out["health_s"] = health_s
    return out


def _args_update_abort(where: str, args: dict[str, object]) -> dict[str, object]:
    _check_keys(args, where, {"deployment"}, {"deployment"})
    return {"deployment": _deployment(where, args)}


_COMMANDS: Final = {
    "write": _args_write,
    "read": _args_read,
    "restart": _args_none,
    "reboot": _args_none,
    "logs": _args_logs,
    "renew_cert": _args_none,
    "update": _args_update,
    "update_abort": _args_update_abort,
}
COMMANDS: Final = frozenset(_COMMANDS)


def _point_name(where: str, field: str, name: object) -> str:
    if not isinstance(name, str) or not 0 < len(name) <= MAX_POINT_NAME or not _POINT_RE.fullmatch(name):
        raise DownlinkError(f"{where}: {field} must be a point name (\"<device>.<point>\"), not {_show(name)}")
    return name


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
            DownlinkError: not what `to_json` writes (the caller decides whether to start
                empty, at the risk of running a command twice).
        """
        try:
            held = json.loads(data)
        except (ValueError, RecursionError) as e:
            raise DownlinkError(f"seen command ids: not JSON: {_clip(str(e), 200)}") from None
        ids = held.get("ids") if isinstance(held, dict) and held.get("v") == 1 else None
        if not isinstance(ids, list) or not all(isinstance(i, str) and _ID_RE.fullmatch(i) for i in ids):
            raise DownlinkError('seen command ids: expected {"v": 1, "ids": [id, ...]}')
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


def point_specs(cfg: box_config.BoxConfig) -> dict[str, Spec]:
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


def check_write(cmd: Command, points: Mapping[str, PointSpec]) -> None:
    """Whether a `write` command may go to its point: it exists, is writable, the value is
    of the point's kind and within its min/max, priority and relinquish only where the
    bus has priorities. The driver checks again when it writes (steps, type range).

    Raises:
        DownlinkError: the reason the write is refused.
        ValueError: `cmd` is not a write.
    """
    if cmd.name != "write":
        raise ValueError(f"check_write of a {cmd.name!r} command")
    name = str(cmd.args["point"])
    where = f"cmd {cmd.id} (write): point {name!r}"
    spec = points.get(name)
    if spec is None:
        raise DownlinkError(f"{where} is not a point of this Box")
    if not spec.writable:
        raise DownlinkError(f"{where} is not writable (its configuration has no writable = true)")
    priority = cmd.args.get("priority")
    if priority is not None or cmd.args.get("relinquish"):
        if not spec.priorities:
            raise DownlinkError(f"{where} has no write priorities (priority and relinquish are for BACnet)")
        if priority == _RESERVED_PRIORITY:
            raise DownlinkError(f"{where}: priority 6 is reserved for minimum on/off; use 1..5 or 7..16")
    if not cmd.args.get("relinquish"):
        _check_value(where, spec, cmd.args.get("value"))


def _check_value(where: str, spec: PointSpec, value: object) -> None:
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise DownlinkError(f"{where} is a bool: {_show(value)} is not true or false")
    elif spec.kind in _NUMERIC_KINDS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DownlinkError(f"{where} is a {spec.kind}: {_show(value)} is not a number")
        if isinstance(value, float) and not math.isfinite(value):
            raise DownlinkError(f"{where} is a {spec.kind}: {value!r} is not a finite number")
        if spec.min is not None and value < spec.min:
            raise DownlinkError(f"{where}: {_show(value)} is below its min {spec.min!r}")
        if spec.max is not None and value > spec.max:
            raise DownlinkError(f"{where}: {_show(value)} is above its max {spec.max!r}")
    elif spec.kind == "string":
        if not isinstance(value, str):
            raise DownlinkError(f"{where} is text: {_show(value)} is not")
    else:
        raise DownlinkError(f"{where} is of kind {spec.kind!r}, which cannot be written")


# -- replies -------------------------------------------------------------------------------


def reply(cmd_id: str, status: CmdStatus, detail: str = "", *, result: Mapping[str, Value] | None = None,
          faults: Mapping[str, int] | None = None, lines: Iterable[str] | None = None) -> bytes:
    """The framed reply to a command, for ``boxes/<id>/up/replies``.

    `detail` is cut to `MAX_DETAIL` bytes. `result` (read) maps point names to values and
    `faults` those without one to their `Quality` code; `lines` (logs) is the tail of the
    log, cut from the oldest end to keep the reply under the payload limit.

    Raises:
        ValueError: an unknown status, or a result that is not what a read returns.
    """
    if status not in CMD_STATUSES:
        raise ValueError(f"unknown command status {status!r}")
    doc: dict[str, object] = {"kind": "cmd", "id": cmd_id, "status": status, "detail": _clip(detail, MAX_DETAIL)}
    if result is not None:
        for k, v in result.items():
            if not isinstance(k, str) or not (v is None or isinstance(v, bool | int | float | str)):
                raise ValueError(f"result {k!r} is not a point name with a value")
        doc["result"] = dict(result)
    if faults:
        doc["faults"] = {str(k): int(v) for k, v in faults.items()}
    if lines is not None:
        kept: list[str] = []
        budget = MAX_LOG_BYTES
        for line in reversed([_clip(line, MAX_DETAIL) for line in lines][-MAX_LOG_LINES:]):
            budget -= len(line.encode()) + 3
            if budget < 0:
                break
            kept.append(line)
        doc["lines"] = kept[::-1]
    return wire.encode_doc(doc)


def config_reply(version: int, status: ConfigStatus, reasons: Iterable[str] = ()) -> bytes:
    """The framed acknowledgement of a configuration push, for ``boxes/<id>/up/replies``:
    at most `MAX_REASONS` reasons of at most `MAX_REASON` bytes each.

    Raises:
        ValueError: an unknown status.
    """
    if status not in CONFIG_STATUSES:
        raise ValueError(f"unknown configuration status {status!r}")
    listed = list(reasons)
    kept = [_clip(r, MAX_REASON) for r in listed[:MAX_REASONS]]
    if len(listed) > MAX_REASONS:
        kept[-1] = f"... and {len(listed) - MAX_REASONS + 1} more"
    return wire.encode_doc({"kind": "config", "version": version, "status": status, "reasons": kept})


def decode_reply(payload: bytes) -> dict[str, object]:
    """Decode a reply (on the cloud's side): a map with "kind" "cmd" or "config" and a status.

    Raises:
        DownlinkError: not a reply.
    """
    try:
        doc = wire.unframe_untrusted(payload, max_payload=wire.MAX_PAYLOAD, max_inflated=wire.MAX_INFLATED,
                                     max_depth=MAX_DEPTH, max_items=4 * MAX_LOG_LINES)
    except WireError as e:
        raise DownlinkError(f"reply: {_clip(str(e), 300)}") from None
    if not isinstance(doc, dict) or not all(isinstance(k, str) for k in doc):
        raise DownlinkError("reply: must be a map with text keys")
    kind, status = doc.get("kind"), doc.get("status")
    ok = (kind == "cmd" and status in CMD_STATUSES and isinstance(doc.get("id"), str)) or (
        kind == "config" and status in CONFIG_STATUSES and _is_int(doc.get("version"))
        and isinstance(doc.get("reasons"), list))
    if not ok:
        raise DownlinkError(f"reply: kind {_show(kind)} with status {_show(status)} is not a reply")
    return doc


# -- helpers -------------------------------------------------------------------------------


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> TypeGuard[int | float]:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    return not isinstance(v, float) or math.isfinite(v)


def _show(value: object) -> str:
    """A short rendering of an untrusted value (never fails, never long)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"a {value.bit_length()}-bit integer"
    if isinstance(value, str | bytes | bytearray) and len(value) > 60:
        return repr(value[:37]) + "..."
    if isinstance(value, list | dict | tuple) or not isinstance(value, str | bytes | int | float | None):
        return _kind(value)
    return _clip(repr(value), 60)


def _kind(value: object) -> str:
    names = {dict: "a map", list: "a list", str: "text", bytes: "bytes", bool: "a boolean", int: "an integer",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` bytes of UTF-8, on a character boundary."""
    data = text.encode("utf-8", "replace")  # a lone surrogate becomes "?"
    if len(data) <= limit:
        return data.decode("utf-8")
    return data[: limit - 3].decode("utf-8", "ignore") + "..."
