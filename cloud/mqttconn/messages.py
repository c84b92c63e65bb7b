"""What the MQTT connector publishes and what it accepts. Pure: no I/O, no clock.

**Topics** are templates of levels; a level is a literal or one of the placeholders ``{prefix}``
(the connector's prefix, itself literal levels), ``{box}`` (a Box id) and ``{point}`` (a point
name, ``<device>.<point>``), always a whole level. Neither a Box id nor a point name can hold
``/``, ``+`` or ``#`` (`proto.names`), so a rendered topic has exactly the template's levels.

- data (default ``{prefix}/{box}/{point}``): with ``{point}``, one message per point of a stored
  batch: ``{"id": "<box>/<epoch>/<seq>", "box", "point", "samples": [[ts_ms, value, quality], ...],
  "unchanged": [ts_ms, ...]}``; without it, one message per batch: ``{"id", "box", "epoch", "seq",
  "samples": [[point, ts_ms, value, quality], ...], "unchanged": [[ts_ms, [point, ...]], ...]}``
  (values as the webhooks' items have them: NaN and the infinities as strings);
- commands (default ``{prefix}/{box}/set``, must hold ``{box}``): a property write,
  ``{"point": str, "value": bool|int|float|str, "priority"?: 1..16, "relinquish"?: bool,
  "ttl_s"?: 5..86400, "id"?: str}`` at most `MAX_COMMAND` bytes, no other key;
- replies (default ``{prefix}/{box}/reply``): ``{"id"?: <the command's id>, "command"?: <the
  platform's id>, "status": "queued"|"ok"|"rejected"|"expired"|"refused", "detail": str}``.

**Loops**: the command topic may match no data or reply topic (`overlap`), so nothing the
connector publishes can come back to it as a command (MQTT 5 also subscribes with no-local).
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cloud.hooks.items import _finite
from proto import names
from proto.downlink import command as check_command
from proto.errors import WireError
from proto.points import PointInfo
from proto.wire import Batch

MAX_TOPIC = 512
MAX_LEVELS = 16
MAX_COMMAND = 4096  # bytes of a command message
DEFAULT_DATA = "{prefix}/{box}/{point}"
DEFAULT_COMMAND = "{prefix}/{box}/set"
DEFAULT_REPLY = "{prefix}/{box}/reply"
TTL_S = (5, 86400)
_LITERAL = re.compile(r"[^\x00-\x1f\x7f+#{}/]{1,128}")
_PLACEHOLDERS = ("{box}", "{point}")


class TemplateError(ValueError):
    """A topic template or prefix that cannot be used (the caller's configuration)."""


class CommandError(ValueError):
    """A command message that is refused (the customer's message): what is wrong, and the message's
    id when it could be read (for the reply)."""

    def __init__(self, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.ref = ref


def prefix_levels(prefix: str) -> list[str]:
    """A prefix checked: literal levels, none empty (``""``: no prefix)."""
    if not prefix:
        return []
    levels = prefix.split("/")
    if len(levels) > MAX_LEVELS or not all(_LITERAL.fullmatch(x) for x in levels) or prefix.startswith("$"):
        raise TemplateError(f"prefix {prefix!r}: levels of 1..128 characters without + # {{ }} or control "
                            "characters, not starting with $")
    return levels


def levels(template: str, prefix: str, *, allowed: Sequence[str] = _PLACEHOLDERS,
           needs: Sequence[str] = ()) -> list[str]:
    """A template's levels with the prefix put in; placeholders stay ``{box}``/``{point}``.

    Raises:
        TemplateError: what is wrong with it.
    """
    if len(template) > MAX_TOPIC:
        raise TemplateError(f"topic template longer than {MAX_TOPIC} characters")
    out: list[str] = []
    for level in template.split("/"):
        if level == "{prefix}":
            out += prefix_levels(prefix)
        elif level in allowed:
            if level in out:
                raise TemplateError(f"topic template {template!r}: {level} twice")
            out.append(level)
        elif _LITERAL.fullmatch(level):
            out.append(level)
        else:
            raise TemplateError(f"topic template {template!r}: level {level!r} is neither text (no + # {{ }}) "
                                f"nor one of {{prefix}} {' '.join(allowed)} as a whole level")
    if not out or len(out) > MAX_LEVELS or out[0].startswith("$"):
        raise TemplateError(f"topic template {template!r}: 1..{MAX_LEVELS} levels, not starting with $")
    missing = [n for n in needs if n not in out]
    if missing:
        raise TemplateError(f"topic template {template!r} needs {', '.join(missing)}")
    return out


def overlap(a: Sequence[str], b: Sequence[str]) -> bool:
    """Whether two templates' levels could render the same topic."""
    if len(a) != len(b):
        return False
    return all(_may_equal(x, y) for x, y in zip(a, b, strict=True))


def _may_equal(x: str, y: str) -> bool:
    holes = {"{box}": names.BOX_ID, "{point}": names.POINT}
    if x in holes and y in holes:
        return True
    if x in holes:
        return holes[x].fullmatch(y)
    if y in holes:
        return holes[y].fullmatch(x)
    return x == y


def render(lv: Sequence[str], box: str, point: str = "") -> str:
    return "/".join(box if x == "{box}" else point if x == "{point}" else x for x in lv)


def subscription(lv: Sequence[str]) -> str:
    """The filter the command template subscribes with (``{box}`` as ``+``)."""
    return "/".join("+" if x == "{box}" else x for x in lv)


def box_of(lv: Sequence[str], topic: str) -> str | None:
    """The Box a command topic names, or None when the topic is not the template's."""
    parts = topic.split("/")
    if len(parts) != len(lv):
        return None
    box = None
    for x, p in zip(lv, parts, strict=True):
        if x == "{box}":
            box = p
        elif x != p:
            return None
    return box if names.BOX_ID.fullmatch(box) else None


def data(lv: Sequence[str], box: str, batch: Batch, table: Sequence[PointInfo],
         points: Sequence[str]) -> list[tuple[str, bytes]]:
    """A stored batch's messages: (topic, payload), only the points `points` takes (shell patterns;
    none: all). No message for a batch without such a point."""
    def taken(name: str) -> bool:
        return not points or any(fnmatch.fnmatchcase(name, p) for p in points)

    rows = [(p, ts, _finite(v), int(q)) for p, ts, v, q in batch.samples(table) if taken(p)]
    spans = [(ts, [table[i].name for i in range(first, first + n) if taken(table[i].name)])
             for ts, first, n in batch.spans()]
    spans = [(ts, ns) for ts, ns in spans if ns]
    item_id = f"{box}/{batch.epoch}/{batch.seq}"
    if "{point}" not in lv:
        if not rows and not spans:
            return []
        doc = {"id": item_id, "box": box, "epoch": batch.epoch, "seq": batch.seq,
               "samples": [list(r) for r in rows], "unchanged": [[ts, ns] for ts, ns in spans]}
        return [(render(lv, box), _json(doc))]
    per: dict[str, dict[str, list[Any]]] = {}
    for p, ts, v, q in rows:
        per.setdefault(p, {"samples": [], "unchanged": []})["samples"].append([ts, v, q])
    for ts, ns in spans:
        for p in ns:
            per.setdefault(p, {"samples": [], "unchanged": []})["unchanged"].append(ts)
    return [(render(lv, box, p), _json({"id": item_id, "box": box, "point": p, **doc}))
            for p, doc in per.items()]


def _json(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True)
class Write:
    """A property command as received, checked: its arguments as `cmd write` takes them."""

    args: dict[str, object]
    ttl_s: int
    ref: str | None  # the customer's id of it, echoed in the replies


def parse_command(payload: bytes) -> Write:
    """A command message checked strictly (size, JSON, keys, types; the write's arguments as the Box
    will check them: `proto.downlink.command`).

    Raises:
        CommandError: what is wrong, in words for the customer.
    """
    if len(payload) > MAX_COMMAND:
        raise CommandError(f"a command is at most {MAX_COMMAND} bytes, not {len(payload)}")
    try:
        doc = json.loads(payload.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise CommandError(f"not a JSON document: {e}") from None
    if not isinstance(doc, dict):
        raise CommandError("a command is a JSON object")
    ref = doc.pop("id", None)
    if ref is not None and not names.COMMAND_ID.fullmatch(ref):
        raise CommandError("id: 1..64 of A-Z a-z 0-9 . _ : -")
    try:
        return _write(doc, ref)
    except CommandError as e:
        raise CommandError(str(e), ref) from None


def _write(doc: dict[str, Any], ref: str | None) -> Write:
    unknown = sorted(set(doc) - {"point", "value", "priority", "relinquish", "ttl_s"})
    if unknown:
        raise CommandError(f"unknown keys {', '.join(map(repr, unknown))} (known: point, value, priority, "
                           "relinquish, ttl_s, id)")
    ttl = doc.pop("ttl_s", 300)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not TTL_S[0] <= ttl <= TTL_S[1]:
        raise CommandError(f"ttl_s: whole seconds from {TTL_S[0]} to {TTL_S[1]}")
    if "point" not in doc or ("value" not in doc and not doc.get("relinquish")):
        raise CommandError("a command needs point and value (or relinquish)")
    try:
        check_command("check", "write", 0, doc)
    except WireError as e:
        raise CommandError(str(e).removeprefix("cmd check: ").removeprefix("cmd check (write): ")) from None
    return Write(doc, ttl, ref)


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON value")


def reply(ref: str | None, status: str, detail: str, command: str | None = None) -> bytes:
    doc: dict[str, object] = {"status": status, "detail": detail[:500]}
    if ref is not None:
        doc["id"] = ref
    if command is not None:
        doc["command"] = command
    return _json(doc)
