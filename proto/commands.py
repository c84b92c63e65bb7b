"""The commands a platform sends a Box: one frozen dataclass each, a tagged union (`Command`).

    write        {"point": str, "value": bool|int|float|str, "priority"?: 1..16, "relinquish"?: bool}
    read         {"points": [str, ...]}  1..100 point names
    restart      {}
    reboot       {}
    logs         {"lines"?: 1..1000}     default 200
    renew_cert   {}
    update       {"deployment": str, "target": str, "version": str, "health_s"?: 10..3600}
                 install the named TUF target (a software bundle) A/B; default health_s 300
    update_abort {"deployment": str}     stop that deployment's download; nothing is installed

Each class has its `name` (the tag on the wire) and `args()` (its arguments as sent, defaults
filled in); `BUILDERS` makes one from a decoded map, checking every argument (unknown ones are
refused). `proto.downlink.decode_command` is the way in from bytes. What is not decided here:
whether a command already ran, whether it expired against the Box's clock, whether a write may
go to its point (the Box's own state).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeGuard

from proto import names
from proto.errors import WireError
from proto.points import Value
from proto.text import clip, kind, show

MAX_TEXT_VALUE: Final = 256  # a string written to a point
MAX_READ_POINTS: Final = 100
MAX_LOG_LINES: Final = 1000
DEFAULT_LOG_LINES: Final = 200
DEFAULT_HEALTH_S: Final = 300
MIN_HEALTH_S: Final = 10
MAX_HEALTH_S: Final = 3600


@dataclass(frozen=True, slots=True)
class Write:
    """Write `value` to a point, or (BACnet) relinquish a `priority`."""

    name: ClassVar[str] = "write"
    id: str
    expires: float
    point: str
    value: Value = None
    priority: int | None = None
    relinquish: bool = False

    def args(self) -> dict[str, object]:
        """The arguments as sent."""
        out: dict[str, object] = {"point": self.point, "relinquish": self.relinquish}
        if not self.relinquish:
            out["value"] = self.value
        if self.priority is not None:
            out["priority"] = self.priority
        return out


@dataclass(frozen=True, slots=True)
class Read:
    """Read points now, ahead of their schedule."""

    name: ClassVar[str] = "read"
    id: str
    expires: float
    points: tuple[str, ...]

    def args(self) -> dict[str, object]:
        """The arguments as sent."""
        return {"points": list(self.points)}


@dataclass(frozen=True, slots=True)
class _Bare:
    """A command without arguments."""

    id: str
    expires: float

    def args(self) -> dict[str, object]:
        """No arguments."""
        return {}


@dataclass(frozen=True, slots=True)
class Restart(_Bare):
    """Restart the daemon (it exits non-zero; systemd starts it again)."""

    name: ClassVar[str] = "restart"


@dataclass(frozen=True, slots=True)
class Reboot(_Bare):
    """Reboot the Box."""

    name: ClassVar[str] = "reboot"


@dataclass(frozen=True, slots=True)
class RenewCert(_Bare):
    """A new key and certificate."""

    name: ClassVar[str] = "renew_cert"


@dataclass(frozen=True, slots=True)
class Logs:
    """The tail of the daemon's log."""

    name: ClassVar[str] = "logs"
    id: str
    expires: float
    lines: int = DEFAULT_LOG_LINES

    def args(self) -> dict[str, object]:
        """The arguments as sent."""
        return {"lines": self.lines}


@dataclass(frozen=True, slots=True)
class Update:
    """Install a release (a TUF target) A/B, on trial for `health_s`."""

    name: ClassVar[str] = "update"
    id: str
    expires: float
    deployment: str
    target: str
    version: str
    health_s: int = DEFAULT_HEALTH_S

    def args(self) -> dict[str, object]:
        """The arguments as sent."""
        return {"deployment": self.deployment, "target": self.target, "version": self.version,
                "health_s": self.health_s}


@dataclass(frozen=True, slots=True)
class UpdateAbort:
    """Stop a deployment's download."""

    name: ClassVar[str] = "update_abort"
    id: str
    expires: float
    deployment: str

    def args(self) -> dict[str, object]:
        """The arguments as sent."""
        return {"deployment": self.deployment}


Command = Write | Read | Restart | Reboot | Logs | RenewCert | Update | UpdateAbort


# -- building from a decoded map --------------------------------------------------------------


def is_int(v: object) -> TypeGuard[int]:
    """An integer that is not a boolean."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: object) -> TypeGuard[int | float]:
    """A finite number that is not a boolean."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    return not isinstance(v, float) or math.isfinite(v)


def check_keys(doc: Mapping[Any, object], where: str, required: set[str], allowed: set[str]) -> None:
    """Keys of text, none unknown, none of the required missing.

    Raises:
        WireError: the first of these that fails.
    """
    bad = [k for k in doc if not isinstance(k, str)]
    if bad:
        raise WireError(f"{where}: keys must be text, not {kind(bad[0])}")
    unknown = sorted(str(k) for k in doc if k not in allowed)
    if unknown:
        raise WireError(f"{where}: unknown field(s): {clip(', '.join(map(show, unknown)), 200)}")
    missing = sorted(required - set(map(str, doc)))
    if missing:
        raise WireError(f"{where}: missing field(s): {', '.join(missing)}")


def _point(where: str, field: str, name: object) -> str:
    if not names.POINT.fullmatch(name):
        raise WireError(f"{where}: {field} must be a point name (\"<device>.<point>\"), not {show(name)}")
    assert isinstance(name, str)
    return name


def _value(where: str, value: object) -> Value:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise WireError(f"{where}: value {show(value)} is out of 64-bit range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise WireError(f"{where}: value must be a finite number, not {value!r}")
        return value
    if isinstance(value, str):
        if len(value) > MAX_TEXT_VALUE:
            raise WireError(f"{where}: value is text of {len(value)} characters, over {MAX_TEXT_VALUE}")
        return value
    raise WireError(f"{where}: value must be a boolean, number or text, not {kind(value)}")


def _write(cmd_id: str, expires: float, where: str, args: dict[str, object]) -> Write:
    check_keys(args, where, {"point"}, {"point", "value", "priority", "relinquish"})
    point = _point(where, "point", args["point"])
    relinquish = args.get("relinquish", False)
    if not isinstance(relinquish, bool):
        raise WireError(f"{where}: relinquish must be true or false, not {kind(relinquish)}")
    value: Value = None
    if relinquish:
        if "value" in args:
            raise WireError(f"{where}: a relinquish takes no value")
        if "priority" not in args:
            raise WireError(f"{where}: a relinquish needs the priority to release")
    elif "value" not in args:
        raise WireError(f"{where}: missing field(s): value")
    else:
        value = _value(where, args["value"])
    priority = args.get("priority")
    if "priority" in args and not (is_int(priority) and 1 <= priority <= 16):
        raise WireError(f"{where}: priority must be an integer from 1 to 16, not {show(priority)}")
    return Write(cmd_id, expires, point, value, priority if is_int(priority) else None, relinquish)


def _read(cmd_id: str, expires: float, where: str, args: dict[str, object]) -> Read:
    check_keys(args, where, {"points"}, {"points"})
    points = args["points"]
    if not isinstance(points, list) or not 1 <= len(points) <= MAX_READ_POINTS:
        shown = f"a list of {len(points)}" if isinstance(points, list) else kind(points)
        raise WireError(f"{where}: points must be a list of 1 to {MAX_READ_POINTS} point names, not {shown}")
    found = [_point(where, f"points[{i}]", p) for i, p in enumerate(points)]
    return Read(cmd_id, expires, tuple(dict.fromkeys(found)))


def _logs(cmd_id: str, expires: float, where: str, args: dict[str, object]) -> Logs:
    check_keys(args, where, set(), {"lines"})
    lines = args.get("lines", DEFAULT_LOG_LINES)
    if not (is_int(lines) and 1 <= lines <= MAX_LOG_LINES):
        raise WireError(f"{where}: lines must be an integer from 1 to {MAX_LOG_LINES}, not {show(lines)}")
    return Logs(cmd_id, expires, lines)


def _no_args(cls: type[Restart | Reboot | RenewCert]) -> Builder:
    def build(cmd_id: str, expires: float, where: str, args: dict[str, object]) -> Command:
        check_keys(args, where, set(), set())
        return cls(cmd_id, expires)
    return build


def _text(where: str, field: str, value: object, name: names.Name) -> str:
    if not name.fullmatch(value):
        raise WireError(f"{where}: {field} must be {name.what}, not {show(value)}")
    assert isinstance(value, str)
    return value


def _update(cmd_id: str, expires: float, where: str, args: dict[str, object]) -> Update:
    check_keys(args, where, {"deployment", "target", "version"}, {"deployment", "target", "version", "health_s"})
    deployment = _text(where, "deployment", args["deployment"], names.DEPLOYMENT)
    target = _text(where, "target", args["target"], names.TARGET)
    version = _text(where, "version", args["version"], names.VERSION)
    health_s = args.get("health_s", DEFAULT_HEALTH_S)
    if not (is_int(health_s) and MIN_HEALTH_S <= health_s <= MAX_HEALTH_S):
        raise WireError(f"{where}: health_s must be an integer from {MIN_HEALTH_S} to {MAX_HEALTH_S}, "
                        f"not {show(health_s)}")
    return Update(cmd_id, expires, deployment, target, version, health_s)


def _update_abort(cmd_id: str, expires: float, where: str, args: dict[str, object]) -> UpdateAbort:
    check_keys(args, where, {"deployment"}, {"deployment"})
    return UpdateAbort(cmd_id, expires, _text(where, "deployment", args["deployment"], names.DEPLOYMENT))


Builder = Callable[[str, float, str, dict[str, object]], Command]
BUILDERS: Final[Mapping[str, Builder]] = {
    Write.name: _write,
    Read.name: _read,
    Restart.name: _no_args(Restart),
    Reboot.name: _no_args(Reboot),
    Logs.name: _logs,
    RenewCert.name: _no_args(RenewCert),
    Update.name: _update,
    UpdateAbort.name: _update_abort,
}
NAMES: Final = frozenset(BUILDERS)
