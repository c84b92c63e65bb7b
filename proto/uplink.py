"""What a Box publishes besides batches and point tables (`proto.wire`): typed, encoded, decoded.

    up/status   `Status`        JSON, retained (readable with mosquitto_sub); the Last Will too
    up/health   `Health`        CBOR map, every `heartbeat_s`
    up/events   `Evicted`, `OtaEvent`, `ModemEvent`, `WanEvent`   CBOR map with "kind"
    up/limits   `LimitsNotice`  JSON, published by the broker's guard plugin, never by a Box

Replies to commands and configurations are in `proto.replies`. Decoding is strict: the CBOR
through `wire.decode_doc` (size, depth, items, no tags), then every field of the kind checked
for type and range and unknown fields refused; anything else is a `WireError` saying what.
Encoding builds exactly what decoding accepts (the tests round-trip every kind).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from proto import names, wire
from proto.errors import WireError
from proto.modem import ModemEvent, ModemReport, WanEvent, decode_modem_event, decode_report, decode_wan_event
from proto.text import show

V: Final = 1
MAX_DETAIL: Final = 1024  # an ota event's detail, in characters
EVENT_STATES: Final = ("downloading", "installing", "restarting", "committed", "rolled_back", "failed", "aborted")
_U64: Final = 2**64
_CRL_DIGEST: Final = re.compile(r"[0-9a-f]{16}")


def _json(payload: bytes, what: str, limit: int) -> dict[str, object]:
    if len(payload) > limit:
        raise WireError(f"{what} of {len(payload)} bytes is over {limit}")
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError) as e:
        raise WireError(f"{what} is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise WireError(f"{what} must be a JSON object")
    return doc


def _int(doc: Mapping[str, object], key: str, lo: int = 0, hi: int = _U64 - 1) -> int:
    v = doc.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise WireError(f"field {key!r} must be an integer from {lo} to {hi}, not {show(v)}")
    return v


def _text(doc: Mapping[str, object], key: str, limit: int, name: names.Name | None = None) -> str:
    v = doc.get(key)
    if not isinstance(v, str) or len(v) > limit or (name is not None and not name.fullmatch(v)):
        raise WireError(f"field {key!r} must be {name.what if name else f'text of at most {limit} characters'}, "
                        f"not {show(v)}")
    return v


MAX_ACKS_S: Final = 3600  # the longest a Box may ask the platform to wait between two stored notices


def _known(doc: Mapping[str, object], what: str, allowed: frozenset[str]) -> None:
    unknown = sorted(str(k) for k in doc if k not in allowed)
    if unknown:
        raise WireError(f"{what}: unknown field(s): {', '.join(map(show, unknown[:5]))}")


# -- status --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Status:
    """A Box's retained status: online (with its version) or offline (with the reason)."""

    online: bool
    ts_ms: int
    version: str | None = None
    reason: str = ""
    crl: str = ""  # `crl_digest` of the platform CRL the Box holds ("": none); the platform sends a newer one
    acks_s: int = 0  # the Box keeps batches until stored (`proto.downlink.StoredNotice`): at most one a this many s

    def encode(self) -> bytes:
        """The retained status message: small JSON, readable by an operator with mosquitto_sub."""
        body: dict[str, object] = {"v": V, "online": self.online, "ts": self.ts_ms}
        if self.version is not None:
            body["version"] = self.version
        if self.reason:
            body["reason"] = self.reason
        if self.crl:
            body["crl"] = self.crl
        if self.acks_s:
            body["acks"] = self.acks_s
        return json.dumps(body, separators=(",", ":")).encode()


def crl_digest(pem: bytes) -> str:
    """The short name of a CRL file's bytes, in a Box's status (both sides compute it alike)."""
    return hashlib.sha256(pem).hexdigest()[:16]


def decode_status(payload: bytes) -> Status:
    """Decode a status message (an empty retained one, a clearing, is the caller's to skip).

    Raises:
        WireError: not {"v": 1, "online": true|false, ...}.
    """
    body = _json(payload, "status", wire.MAX_STATUS)
    if body.get("v") != V or not isinstance(body.get("online"), bool):
        raise WireError('status must be {"v": 1, "online": true|false, ...}')
    reason, version, ts = body.get("reason", ""), body.get("version"), body.get("ts", 0)
    if not isinstance(reason, str) or not (version is None or isinstance(version, str)):
        raise WireError("status reason and version must be text")
    if not isinstance(ts, int) or isinstance(ts, bool):
        raise WireError("status ts must be milliseconds (an integer)")
    crl = body.get("crl", "")
    if not isinstance(crl, str) or (crl and not _CRL_DIGEST.fullmatch(crl)):
        raise WireError("status crl must be 16 lowercase hex digits (the digest of the Box's CRL)")
    acks = body.get("acks", 0)
    if not isinstance(acks, int) or isinstance(acks, bool) or not 0 <= acks <= MAX_ACKS_S:
        raise WireError(f"status acks must be seconds from 0 to {MAX_ACKS_S} (between stored notices)")
    return Status(bool(body["online"]), ts, version[:40] if version else None, reason[:200], crl, acks)


# -- health ----------------------------------------------------------------------------------

_HEALTH_KEYS: Final = frozenset({"v", "ts", "epoch", "last_seq", "clock_ok", "version", "hb_s", "up_s", "oldest_seq",
                                 "queue", "evicted", "cert_not_after", "config_version", "config_sha256",
                                 "probation_s", "buses", "restarts", "modem"})


@dataclass(frozen=True, slots=True)
class Health:
    """A heartbeat. `ts_ms`, `epoch` and `last_seq` are always there; the rest may be missing
    (None, or empty maps) in a report of an older Box or a test's."""

    ts_ms: int
    epoch: int
    last_seq: int
    clock_ok: bool | None = None
    version: str | None = None
    hb_s: int | None = None
    up_s: int | None = None
    oldest_seq: int | None = None
    queue: int | None = None
    evicted: int | None = None
    cert_not_after: int | None = None
    config_version: int | None = None
    config_sha256: str | None = None
    probation_s: float | None = None
    buses: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    restarts: Mapping[str, int] = field(default_factory=dict)
    modem: ModemReport | None = None  # the 4G modem's report (`proto.modem`), when it is due

    def to_doc(self) -> dict[str, object]:
        """The report as a map (what is encoded, and what the platform stores)."""
        doc: dict[str, object] = {"v": V, "ts": self.ts_ms, "epoch": self.epoch, "last_seq": self.last_seq}
        for key in ("clock_ok", "version", "hb_s", "up_s", "oldest_seq", "queue", "evicted", "cert_not_after",
                    "config_version", "config_sha256", "probation_s"):
            value = getattr(self, key)
            if value is not None:
                doc[key] = value
        if self.buses:
            doc["buses"] = {name: dict(stats) for name, stats in self.buses.items()}
        if self.restarts:
            doc["restarts"] = dict(self.restarts)
        if self.modem is not None:
            doc["modem"] = self.modem.to_doc()
        return doc

    def encode(self) -> bytes:
        """The framed report, for ``up/health``."""
        return wire.encode_doc(self.to_doc())


def _int_map(v: object, key: str) -> dict[str, int]:
    if not isinstance(v, dict) or not all(isinstance(k, str) and len(k) <= 128 for k in v):
        raise WireError(f"health field {key!r} must be a map with text keys")
    for k, x in v.items():
        if not isinstance(x, int) or isinstance(x, bool):
            raise WireError(f"health field {key!r}: {show(k)} is {show(x)}")
    return v


def _opt_int(doc: Mapping[str, object], key: str, lo: int = -(2**63)) -> int | None:
    return _int(doc, key, lo) if doc.get(key) is not None else None


def _opt_text(doc: Mapping[str, object], key: str) -> str | None:
    return _text(doc, key, 64) if key in doc else None


def decode_health(payload: bytes) -> Health:
    """Decode a heartbeat, every field checked.

    Raises:
        WireError: what is missing, of the wrong type, or unknown.
    """
    doc = wire.decode_doc(payload, {"v": int, "ts": int, "epoch": int, "last_seq": int})
    _known(doc, "health", _HEALTH_KEYS)
    clock_ok, probation = doc.get("clock_ok"), doc.get("probation_s")
    if clock_ok is not None and not isinstance(clock_ok, bool):
        raise WireError("health field 'clock_ok' must be true or false")
    if probation is not None and (isinstance(probation, bool) or not isinstance(probation, int | float)):
        raise WireError("health field 'probation_s' must be a number")
    buses_raw = doc.get("buses", {})
    if not isinstance(buses_raw, dict) or not all(isinstance(k, str) and len(k) <= 128 for k in buses_raw):
        raise WireError("health field 'buses' must be a map with text keys")
    buses = {name: _int_map(stats, f"buses.{name}") for name, stats in buses_raw.items()}
    return Health(
        ts_ms=_int(doc, "ts", -(2**63)), epoch=_int(doc, "epoch"), last_seq=_int(doc, "last_seq"),
        clock_ok=clock_ok, version=_opt_text(doc, "version"), hb_s=_opt_int(doc, "hb_s"),
        up_s=_opt_int(doc, "up_s"), oldest_seq=_opt_int(doc, "oldest_seq"), queue=_opt_int(doc, "queue"),
        evicted=_opt_int(doc, "evicted"), cert_not_after=_opt_int(doc, "cert_not_after"),
        config_version=_opt_int(doc, "config_version", 1), config_sha256=_opt_text(doc, "config_sha256"),
        probation_s=None if probation is None else float(probation), buses=buses,
        restarts=_int_map(doc.get("restarts", {}), "restarts"),
        modem=decode_report(doc["modem"]) if doc.get("modem") is not None else None,
    )


# -- events ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Evicted:
    """The Box's queue was full: its `samples` oldest samples were dropped (`total` since it began),
    with the batch numbers of its queue `epoch` that went (ranges [first, last])."""

    ts_ms: int
    samples: int
    total: int
    seqs: Sequence[tuple[int, int]]
    epoch: int

    def to_doc(self) -> dict[str, object]:
        """The event as a map."""
        return {"v": V, "kind": "evicted", "ts": self.ts_ms, "samples": self.samples, "total": self.total,
                "seqs": [list(r) for r in self.seqs], "epoch": self.epoch}

    def encode(self) -> bytes:
        """The framed event, for ``up/events``."""
        return wire.encode_doc(self.to_doc())


@dataclass(frozen=True, slots=True)
class OtaEvent:
    """How an update goes on a Box (`EVENT_STATES`)."""

    deployment: str
    version: str
    state: str
    detail: str
    running: str
    ts_ms: int
    progress: float | None = None

    def to_doc(self) -> dict[str, object]:
        """The event as a map (what is encoded, and what the platform stores)."""
        doc: dict[str, object] = {"v": V, "kind": "ota", "ts": self.ts_ms, "deployment": self.deployment,
                                  "version": self.version, "state": self.state, "detail": self.detail[:MAX_DETAIL],
                                  "running": self.running}
        if self.progress is not None:
            doc["progress"] = self.progress
        return doc

    def encode(self) -> bytes:
        """The framed event, for ``up/events``."""
        return wire.encode_doc(self.to_doc())


Event = Evicted | OtaEvent | ModemEvent | WanEvent


def decode_event(payload: bytes) -> Event:
    """Decode an event of a known kind.

    Raises:
        WireError: an unknown kind, or a field missing or wrong.
    """
    doc = wire.decode_doc(payload, {"v": int, "kind": str, "ts": int})
    if doc["v"] != V:
        raise WireError(f"event version {show(doc['v'])} is not {V}")
    kind = doc["kind"]
    if kind == "evicted":
        return _evicted(doc)
    if kind == "ota":
        return _ota(doc)
    if kind == "modem":
        return decode_modem_event(doc, _int(doc, "ts"))
    if kind == "wan":
        return decode_wan_event(doc, _int(doc, "ts"))
    raise WireError(f"unknown event kind {show(kind)}")


def _evicted(doc: dict[str, object]) -> Evicted:
    _known(doc, "evicted event", frozenset({"v", "kind", "ts", "samples", "total", "seqs", "epoch"}))
    seqs = doc.get("seqs")
    if not isinstance(seqs, list) or not all(
            isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) and not isinstance(x, bool)
                                                        and 0 <= x < _U64 for x in r) for r in seqs):
        raise WireError("evicted event: seqs must be a list of [first, last] batch numbers")
    return Evicted(_int(doc, "ts"), _int(doc, "samples"), _int(doc, "total"), [(r[0], r[1]) for r in seqs],
                   _int(doc, "epoch"))


def _ota(doc: dict[str, object]) -> OtaEvent:
    _known(doc, "ota event", frozenset({"v", "kind", "ts", "deployment", "version", "state", "detail", "running",
                                        "progress"}))
    state = doc.get("state")
    if state not in EVENT_STATES:
        raise WireError(f"ota event: unknown state {show(state)}")
    detail = doc.get("detail", "")
    if not isinstance(detail, str) or len(detail) > 4 * MAX_DETAIL:
        raise WireError("ota event: detail must be text of at most 1 KiB")
    progress = doc.get("progress")
    if progress is not None and (isinstance(progress, bool) or not isinstance(progress, int | float)
                                 or not 0 <= progress <= 1):
        raise WireError("ota event: progress must be a number from 0 to 1")
    return OtaEvent(_text(doc, "deployment", 64, names.DEPLOYMENT), _text(doc, "version", 64, names.VERSION),
                    str(state), detail[:MAX_DETAIL], _text(doc, "running", 64, names.VERSION), _int(doc, "ts"),
                    None if progress is None else float(progress))


# -- the broker's notice ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LimitsNotice:
    """The broker refused `refused` messages of a Box (over its rate) and says why."""

    refused: int
    reason: str


def decode_limits(payload: bytes) -> LimitsNotice:
    """Decode the guard plugin's notice (``cloud/boxguard.c``: {"v": 1, "refused": n, "reason": text}).

    Raises:
        WireError: not such a notice.
    """
    try:
        doc = _json(payload, "a limits notice", wire.MAX_STATUS)
    except WireError:
        doc = {}
    refused, reason = doc.get("refused"), doc.get("reason")
    if not (isinstance(refused, int) and not isinstance(refused, bool) and isinstance(reason, str)):
        raise WireError('a limits notice must be {"v": 1, "refused": n, "reason": text}')
    return LimitsNotice(refused, reason[:100])
