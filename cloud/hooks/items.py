"""What a webhook carries: an item per stored batch, a delivery of items, its headers. Pure: no I/O.

An item is one batch of one Box as the platform stored it, restricted to the points the connector
takes: ``{"id": "<box>/<epoch>/<seq>", "box": ..., "data": "<JSON text>", "hmac": "<hex>"}``, the
data text being ``{"box", "epoch", "seq", "samples": [[point, ts_ms, value, quality], ...],
"unchanged": [[ts_ms, [point, ...]], ...]}`` (``unchanged``: points polled at that instant and
unchanged since their last value, report on change; a value NaN or infinite is the string "NaN",
"Infinity" or "-Infinity"). The item id is stable for ever (a Box's
batch numbers never repeat within an epoch): a receiver may drop an item it has seen, whatever
delivery brought it. A delivery's body is ``{"type": "data", "connector": <id>, "items": [...]}``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import time
from collections.abc import Sequence

from cloud.hooks import signing
from proto.points import PointInfo
from proto.wire import Batch


def item(box_id: str, batch: Batch, table: Sequence[PointInfo], points: Sequence[str]) -> tuple[str, str] | None:
    """The item of a batch (its stored JSON, without the hmac), or None when no point of it is taken.

    `points`: shell patterns of the point names taken (none: every point)."""
    def taken(name: str) -> bool:
        return not points or any(fnmatch.fnmatchcase(name, p) for p in points)

    rows: list[list[object]] = []
    unchanged: list[list[object]] = []
    for point, ts, value, quality in batch.samples(table):
        if taken(point):
            rows.append([point, ts, _finite(value), int(quality)])
    for ts, first, n in batch.spans():
        names = [table[i].name for i in range(first, first + n) if taken(table[i].name)]
        if names:
            unchanged.append([ts, names])
    if not rows and not unchanged:
        return None
    data = json.dumps({"box": box_id, "epoch": batch.epoch, "seq": batch.seq, "samples": rows,
                       "unchanged": unchanged}, separators=(",", ":"), allow_nan=False)
    return box_id, json.dumps({"id": f"{box_id}/{batch.epoch}/{batch.seq}", "box": box_id, "data": data},
                              separators=(",", ":"))


def _finite(v: object) -> object:
    """A value as JSON can hold it: NaN and the infinities as the strings "NaN", "Infinity", "-Infinity"."""
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    return v


def body(connector_id: int, stored: Sequence[str], secret: str) -> bytes:
    """A delivery's body: the stored items, each with its hmac under the current secret."""
    items = []
    for s in stored:
        doc = json.loads(s)
        doc["hmac"] = signing.item_hmac(secret, doc["data"])
        items.append(doc)
    return json.dumps({"type": "data", "connector": connector_id, "items": items}, separators=(",", ":")).encode()


def message_id(connector_id: int, stored: Sequence[str]) -> str:
    """A delivery's ``webhook-id``: from its items' ids, so the same for every attempt and replay of a
    group, and never the same for another (an item is sent once per connector; a row id would be:
    SQLite numbers a new row after the highest left, and a delivered one is deleted)."""
    digest = hashlib.sha256(f"{connector_id}\n".encode())
    for s in stored:
        digest.update(json.loads(s)["id"].encode() + b"\n")
    return "msg_" + digest.hexdigest()[:32]


def headers(msg_id: str, raw: bytes, secrets: Sequence[str], now: float | None = None) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt (the timestamp is the attempt's)."""
    ts = int(time.time() if now is None else now)
    return {"content-type": "application/json", "webhook-id": msg_id, "webhook-timestamp": str(ts),
            "webhook-signature": signing.signature(secrets, msg_id, ts, raw), "user-agent": "boxcloud-webhooks/1"}
