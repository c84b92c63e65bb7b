"""The 4G modem on the wire: its part of the heartbeat and its events, typed, encoded, decoded (pure).

    up/health   `Health.modem`: `ModemReport` (sent by the Box only when something changed beyond
                a deadband, at most every few minutes)
    up/events   `ModemEvent` (kind "modem": a configuration fault and its clearing, a rung of the
                recovery ladder climbed, the link back) and `WanEvent` (kind "wan": the uplink moved)

Decoding is strict like the rest of `proto.uplink`: every field checked for type and range, unknown
fields refused, text bounded; anything else is a `WireError` saying what. `to_doc` builds exactly
what the decoders accept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from proto import wire
from proto.errors import WireError
from proto.text import show

V: Final = 1
STATES: Final = ("fault", "connected", "registered", "searching", "no answer")
REGS: Final = ("home", "roaming", "searching", "denied", "idle", "unknown")
GRADES: Final = ("none", "poor", "fair", "good", "excellent")
WANS: Final = ("preferred", "cellular")
FAULTS: Final = ("", "sim_missing", "sim_failure", "pin_required", "pin_wrong", "pin_unsafe", "puk_required",
                 "apn_rejected", "registration_denied")
MODEM_EVENTS: Final = ("fault", "fault_cleared", "recovery", "recovered")
RUNGS: Final = ("", "reconnect", "reregister", "reset", "power_cycle", "reboot")
SIGNAL_KEYS: Final = ("rssi", "rsrp", "rsrq", "sinr")
MAX_TEXT: Final = 400  # an event's words, why and error, in characters
_U64: Final = 2**64


def _known(doc: Mapping[str, object], what: str, allowed: frozenset[str]) -> None:
    unknown = sorted(str(k) for k in doc if k not in allowed)
    if unknown:
        raise WireError(f"{what}: unknown field(s): {', '.join(map(show, unknown[:5]))}")


def _text(doc: Mapping[str, object], key: str, what: str, limit: int) -> str:
    v = doc.get(key, "")
    if not isinstance(v, str) or len(v) > limit:
        raise WireError(f"{what}: field {key!r} must be text of at most {limit} characters, not {show(v)}")
    return v


def _one_of(doc: Mapping[str, object], key: str, what: str, allowed: tuple[str, ...], default: str = "") -> str:
    v = doc.get(key, default)
    if v not in allowed:
        raise WireError(f"{what}: field {key!r} must be one of {', '.join(map(repr, allowed))}, not {show(v)}")
    return str(v)


def _int(doc: Mapping[str, object], key: str, what: str, lo: int, hi: int) -> int:
    v = doc.get(key, 0)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise WireError(f"{what}: field {key!r} must be an integer from {lo} to {hi}, not {show(v)}")
    return v


def _bool(doc: Mapping[str, object], key: str, what: str) -> bool:
    v = doc.get(key, False)
    if not isinstance(v, bool):
        raise WireError(f"{what}: field {key!r} must be true or false, not {show(v)}")
    return v


def _map(doc: Mapping[str, object], key: str, what: str) -> Mapping[str, object]:
    v = doc.get(key, {})
    if not isinstance(v, dict):
        raise WireError(f"{what}: field {key!r} must be a map, not {show(v)}")
    return v


# -- the report ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignalReport:
    """The signal in whole dB (None: not measured) and its grade."""

    tech: str = ""
    grade: str = "none"
    rssi: int | None = None
    rsrp: int | None = None
    rsrq: int | None = None
    sinr: int | None = None

    def to_doc(self) -> dict[str, object]:
        """The signal as a map (measurements absent when not measured)."""
        doc: dict[str, object] = {"tech": self.tech, "grade": self.grade}
        for key in SIGNAL_KEYS:
            if (value := getattr(self, key)) is not None:
                doc[key] = value
        return doc


@dataclass(frozen=True, slots=True)
class UsageReport:
    """Data used this billing period (bytes per direction), the budget (0: none) and its verdict."""

    period: str = ""
    rx: int = 0
    tx: int = 0
    budget: int = 0
    near: bool = False
    saving: bool = False

    def to_doc(self) -> dict[str, object]:
        """The usage as a map."""
        return {"period": self.period, "rx": self.rx, "tx": self.tx, "budget": self.budget, "near": self.near,
                "saving": self.saving}


@dataclass(frozen=True, slots=True)
class ModemReport:
    """The modem's part of a heartbeat: state, network, identity, signal, the active uplink, a
    configuration fault's cause ("" : none), data used."""

    state: str = "no answer"
    reg: str = "unknown"
    operator: str = ""
    plmn: str = ""
    cell: str = ""
    band: str = ""
    iccid: str = ""
    imei: str = ""
    signal: SignalReport = field(default_factory=SignalReport)
    weak: bool = False
    wan: str = "cellular"
    fault: str = ""
    usage: UsageReport = field(default_factory=UsageReport)

    def to_doc(self) -> dict[str, object]:
        """The report as a map (what is encoded, and what the platform stores)."""
        return {"state": self.state, "reg": self.reg, "operator": self.operator, "plmn": self.plmn, "cell": self.cell,
                "band": self.band, "iccid": self.iccid, "imei": self.imei, "signal": self.signal.to_doc(),
                "weak": self.weak, "wan": self.wan, "fault": self.fault, "usage": self.usage.to_doc()}


_REPORT_KEYS: Final = frozenset({"state", "reg", "operator", "plmn", "cell", "band", "iccid", "imei", "signal",
                                 "weak", "wan", "fault", "usage"})


def decode_report(doc: object) -> ModemReport:
    """The modem's part of a heartbeat, every field checked.

    Raises:
        WireError: what is wrong.
    """
    what = "health field 'modem'"
    if not isinstance(doc, dict):
        raise WireError(f"{what} must be a map, not {show(doc)}")
    _known(doc, what, _REPORT_KEYS)
    sig, use = _map(doc, "signal", what), _map(doc, "usage", what)
    _known(sig, f"{what}.signal", frozenset({"tech", "grade", *SIGNAL_KEYS}))
    _known(use, f"{what}.usage", frozenset({"period", "rx", "tx", "budget", "near", "saving"}))
    measured = {k: _int(sig, k, f"{what}.signal", -200, 100) if sig.get(k) is not None else None for k in SIGNAL_KEYS}
    signal = SignalReport(_text(sig, "tech", f"{what}.signal", 16),
                          _one_of(sig, "grade", f"{what}.signal", GRADES, "none"), **measured)
    u = f"{what}.usage"
    usage = UsageReport(_text(use, "period", u, 40), _int(use, "rx", u, 0, _U64 - 1), _int(use, "tx", u, 0, _U64 - 1),
                        _int(use, "budget", u, 0, _U64 - 1), _bool(use, "near", u), _bool(use, "saving", u))
    return ModemReport(
        state=_one_of(doc, "state", what, STATES, "no answer"), reg=_one_of(doc, "reg", what, REGS, "unknown"),
        operator=_text(doc, "operator", what, 64), plmn=_text(doc, "plmn", what, 8), cell=_text(doc, "cell", what, 32),
        band=_text(doc, "band", what, 32), iccid=_text(doc, "iccid", what, 24), imei=_text(doc, "imei", what, 20),
        signal=signal, weak=_bool(doc, "weak", what), wan=_one_of(doc, "wan", what, WANS, "cellular"),
        fault=_one_of(doc, "fault", what, FAULTS), usage=usage,
    )


# -- events --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModemEvent:
    """Something the modem's owner did or found: a configuration `fault` (its `cause` and the
    installer's `words`), ``fault_cleared``, a ``recovery`` rung climbed (`rung`, `why`), the link
    ``recovered`` (after `took_s`, by `rung`, "" when by itself)."""

    event: str
    ts_ms: int = 0
    cause: str = ""
    words: str = ""
    rung: str = ""
    why: str = ""
    took_s: float = 0.0

    def to_doc(self) -> dict[str, object]:
        """The event as a map (fields that do not apply to the event left out)."""
        doc: dict[str, object] = {"v": V, "kind": "modem", "ts": self.ts_ms, "event": self.event}
        if self.event == "fault":
            doc |= {"cause": self.cause, "words": self.words}
        elif self.event in ("recovery", "recovered"):
            doc |= {"rung": self.rung, "why": self.why}
            if self.event == "recovered":
                doc["took_s"] = round(self.took_s, 1)
        return doc

    def encode(self) -> bytes:
        """The framed event, for ``up/events``."""
        return wire.encode_doc(self.to_doc())


@dataclass(frozen=True, slots=True)
class WanEvent:
    """The uplink moved to the `active` one (its `interface`), `why`, and an `error` setting the route."""

    active: str
    interface: str
    why: str
    ts_ms: int = 0
    error: str = ""

    def to_doc(self) -> dict[str, object]:
        """The event as a map."""
        doc: dict[str, object] = {"v": V, "kind": "wan", "ts": self.ts_ms, "active": self.active,
                                  "interface": self.interface, "why": self.why}
        if self.error:
            doc["error"] = self.error
        return doc

    def encode(self) -> bytes:
        """The framed event, for ``up/events``."""
        return wire.encode_doc(self.to_doc())


def decode_modem_event(doc: Mapping[str, object], ts_ms: int) -> ModemEvent:
    """A ``modem`` event's fields, checked (the caller checked "v", "kind" and "ts").

    Raises:
        WireError: what is wrong.
    """
    what = "modem event"
    _known(doc, what, frozenset({"v", "kind", "ts", "event", "cause", "words", "rung", "why", "took_s"}))
    took = doc.get("took_s", 0.0)
    if isinstance(took, bool) or not isinstance(took, int | float) or not 0 <= took < 1e9:
        raise WireError(f"{what}: field 'took_s' must be seconds, not {show(took)}")
    return ModemEvent(_one_of(doc, "event", what, MODEM_EVENTS), ts_ms, _one_of(doc, "cause", what, FAULTS),
                      _text(doc, "words", what, MAX_TEXT), _one_of(doc, "rung", what, RUNGS),
                      _text(doc, "why", what, MAX_TEXT), float(took))


def decode_wan_event(doc: Mapping[str, object], ts_ms: int) -> WanEvent:
    """A ``wan`` event's fields, checked (the caller checked "v", "kind" and "ts").

    Raises:
        WireError: what is wrong.
    """
    what = "wan event"
    _known(doc, what, frozenset({"v", "kind", "ts", "active", "interface", "why", "error"}))
    return WanEvent(_one_of(doc, "active", what, WANS), _text(doc, "interface", what, 32),
                    _text(doc, "why", what, MAX_TEXT), ts_ms, _text(doc, "error", what, MAX_TEXT))
