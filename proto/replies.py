"""A Box's answers on ``up/replies``: to a command (`CmdReply`) and to a configuration (`ConfigReply`).

    {"kind": "cmd", "id", "status", "detail"(, "result", "faults", "lines")}
    {"kind": "config", "version", "status", "reasons"}

A command's status: "ok", "rejected" (refused, with the reason), "failed" (ran and did not do it),
"expired", "duplicate". A configuration's: "applied" (its first reason starts with
`ON_PROBATION` when a probation follows), "rejected", "rolled_back", "kept". `reply` and
`config_reply` build the framed message, cutting what could grow (detail, log lines, reasons) to
the limits; `decode_reply` takes one back, every field checked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from proto import names, wire
from proto.errors import WireError
from proto.points import Quality, Value
from proto.text import clip, show

CmdStatus = Literal["ok", "rejected", "failed", "expired", "duplicate"]
ConfigStatus = Literal["applied", "rejected", "rolled_back", "kept"]
CMD_STATUSES: Final = frozenset({"ok", "rejected", "failed", "expired", "duplicate"})
CONFIG_STATUSES: Final = frozenset({"applied", "rejected", "rolled_back", "kept"})
ON_PROBATION: Final = "on probation"  # how an "applied" reply's first reason starts when a probation follows
MAX_DETAIL: Final = 1024  # bytes of UTF-8 in a reply's detail, and in each log line
MAX_LOG_LINES: Final = 1000
MAX_LOG_BYTES: Final = 128 * 1024  # the lines of a logs reply
MAX_REASONS: Final = 100  # reasons in a configuration reply
MAX_REASON: Final = 512  # bytes of UTF-8 in each reason
MAX_RESULT: Final = 100  # points in a read's result
_DEPTH: Final = 4


@dataclass(frozen=True, slots=True)
class CmdReply:
    """The answer to a command."""

    id: str
    status: CmdStatus
    detail: str = ""
    result: Mapping[str, Value] | None = None  # read: point -> value (None where faulted)
    faults: Mapping[str, int] = field(default_factory=dict)  # read: point -> Quality code
    lines: list[str] | None = None  # logs: the tail of the log

    def to_doc(self) -> dict[str, object]:
        """The reply as a map (what is encoded, and what the platform stores)."""
        doc: dict[str, object] = {"kind": "cmd", "id": self.id, "status": self.status, "detail": self.detail}
        if self.result is not None:
            doc["result"] = dict(self.result)
        if self.faults:
            doc["faults"] = dict(self.faults)
        if self.lines is not None:
            doc["lines"] = list(self.lines)
        return doc


@dataclass(frozen=True, slots=True)
class ConfigReply:
    """The answer to a configuration push."""

    version: int
    status: ConfigStatus
    reasons: list[str] = field(default_factory=list)

    def to_doc(self) -> dict[str, object]:
        """The reply as a map."""
        return {"kind": "config", "version": self.version, "status": self.status, "reasons": list(self.reasons)}


Reply = CmdReply | ConfigReply


def reply(cmd_id: str, status: CmdStatus, detail: str = "", *, result: Mapping[str, Value] | None = None,
          faults: Mapping[str, int] | None = None, lines: Iterable[str] | None = None) -> bytes:
    """The framed reply to a command, for ``up/replies``.

    `detail` is cut to `MAX_DETAIL` bytes. `result` (read) maps point names to values and
    `faults` those without one to their `Quality` code; `lines` (logs) is the tail of the
    log, cut from the oldest end to keep the reply under the payload limit.

    Raises:
        ValueError: an unknown status, or a result that is not what a read returns.
    """
    if status not in CMD_STATUSES:
        raise ValueError(f"unknown command status {status!r}")
    if result is not None:
        for k, v in result.items():
            if not isinstance(k, str) or not (v is None or isinstance(v, bool | int | float | str)):
                raise ValueError(f"result {k!r} is not a point name with a value")
    kept: list[str] | None = None
    if lines is not None:
        kept = []
        budget = MAX_LOG_BYTES
        for line in reversed([clip(line, MAX_DETAIL) for line in lines][-MAX_LOG_LINES:]):
            budget -= len(line.encode()) + 3
            if budget < 0:
                break
            kept.append(line)
        kept.reverse()
    msg = CmdReply(cmd_id, status, clip(detail, MAX_DETAIL), None if result is None else dict(result),
                   {str(k): int(v) for k, v in (faults or {}).items()}, kept)
    return wire.encode_doc(msg.to_doc())


def config_reply(version: int, status: ConfigStatus, reasons: Iterable[str] = ()) -> bytes:
    """The framed acknowledgement of a configuration push, for ``up/replies``: at most
    `MAX_REASONS` reasons of at most `MAX_REASON` bytes each.

    Raises:
        ValueError: an unknown status.
    """
    if status not in CONFIG_STATUSES:
        raise ValueError(f"unknown configuration status {status!r}")
    listed = list(reasons)
    kept = [clip(r, MAX_REASON) for r in listed[:MAX_REASONS]]
    if len(listed) > MAX_REASONS:
        kept[-1] = f"... and {len(listed) - MAX_REASONS + 1} more"
    return wire.encode_doc(ConfigReply(version, status, kept).to_doc())


def decode_reply(payload: bytes) -> Reply:
    """Decode a reply (on the platform's side), every field checked.

    Raises:
        WireError: not a reply; the message says why.
    """
    try:
        doc = wire.unframe_untrusted(payload, max_depth=_DEPTH, max_items=4 * MAX_LOG_LINES + 4 * MAX_RESULT)
    except WireError as e:
        raise WireError(f"reply: {clip(str(e), 300)}") from None
    if not isinstance(doc, dict) or not all(isinstance(k, str) for k in doc):
        raise WireError("reply: must be a map with text keys")
    kind, status = doc.get("kind"), doc.get("status")
    if kind == "cmd" and status in CMD_STATUSES:
        return _cmd(doc)
    if kind == "config" and status in CONFIG_STATUSES:
        return _config(doc)
    raise WireError(f"reply: kind {show(kind)} with status {show(status)} is not a reply")


def _unknown(doc: dict[str, object], allowed: set[str]) -> None:
    unknown = sorted(k for k in doc if k not in allowed)
    if unknown:
        raise WireError(f"reply: unknown field(s): {', '.join(map(show, unknown[:5]))}")


def _cmd(doc: dict[str, object]) -> CmdReply:
    _unknown(doc, {"kind", "id", "status", "detail", "result", "faults", "lines"})
    cmd_id, detail = doc.get("id"), doc.get("detail", "")
    if not names.COMMAND_ID.fullmatch(cmd_id):
        raise WireError(f"reply: id must be {names.COMMAND_ID.what}, not {show(cmd_id)}")
    if not isinstance(detail, str) or len(detail.encode()) > MAX_DETAIL:
        raise WireError(f"reply: detail must be text of at most {MAX_DETAIL} bytes")
    result = doc.get("result")
    if result is not None and not (isinstance(result, dict) and len(result) <= MAX_RESULT and all(
            names.POINT.fullmatch(k) and (v is None or isinstance(v, bool | int | float | str))
            for k, v in result.items())):
        raise WireError("reply: result must map point names to values")
    faults = doc.get("faults", {})
    if not (isinstance(faults, dict) and all(names.POINT.fullmatch(k) and v in Quality._value2member_map_
                                             and not isinstance(v, bool) for k, v in faults.items())):
        raise WireError("reply: faults must map point names to quality codes")
    lines = doc.get("lines")
    if lines is not None and not (isinstance(lines, list) and len(lines) <= MAX_LOG_LINES
                                  and all(isinstance(x, str) for x in lines)):
        raise WireError("reply: lines must be a list of text")
    return CmdReply(str(cmd_id), doc["status"], detail, result, faults, lines)  # type: ignore[arg-type]


def _config(doc: dict[str, object]) -> ConfigReply:
    _unknown(doc, {"kind", "version", "status", "reasons"})
    version, reasons = doc.get("version"), doc.get("reasons")
    if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version < 2**63:
        raise WireError(f"reply: version must be an integer, not {show(version)}")
    if not (isinstance(reasons, list) and len(reasons) <= MAX_REASONS and all(isinstance(r, str) for r in reasons)):
        raise WireError("reply: reasons must be a list of text")
    return ConfigReply(version, doc["status"], list(reasons))  # type: ignore[arg-type]
