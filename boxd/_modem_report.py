"""The modem in words and in reports (pure): the signal's grade, faults said for an installer, the PIN
rule, and the bounded modem report of the health heartbeat.

- `grade(signal)`: "excellent", "good", "fair", "poor" or "none", from RSRP and SINR on LTE (the
  worse of the two), from RSSI elsewhere; the thresholds are the ones installers' meters use.
- `fault_words(cause, ...)`: "no SIM card detected", "the network refused the APN 'x'", ...
- `pin_verdict(...)`: whether the SIM PIN may be tried: never with one attempt left (a PUK-locked
  SIM is a site visit), never a PIN the SIM refused before, never when the modem cannot tell the
  attempts left.
- `Reporter`: the modem's part of the heartbeat, at most once per `min_interval_s`, and only when
  something changed: any field but the signal, or the signal beyond a deadband (6 dB) or its grade;
  a report at least every `refresh_s` keeps the platform's view of the data used fresh.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from drivers.modem import Signal, SimState, SimStatus
from proto.modem import GRADES, SIGNAL_KEYS, SignalReport

DEADBAND_DB = 6.0
REFRESH_S = 3600.0


def _grade_of(value: float | None, cuts: tuple[float, float, float]) -> int:
    if value is None:
        return 0
    return 4 if value >= cuts[0] else 3 if value >= cuts[1] else 2 if value >= cuts[2] else 1


def grade(signal: Signal) -> str:
    """The signal in one word, for placing an antenna."""
    if signal.rsrp_dbm is not None:
        g = _grade_of(signal.rsrp_dbm, (-80, -90, -100))
        if signal.sinr_db is not None:
            g = min(g, _grade_of(signal.sinr_db, (20, 13, 0)))
        return GRADES[g]
    return GRADES[_grade_of(signal.rssi_dbm, (-65, -75, -85))]


def signal_report(signal: Signal) -> SignalReport:
    """The measurements for a report (whole dB: the deadband is coarser), and the grade."""
    def whole(value: float | None) -> int | None:
        return None if value is None else max(-200, min(100, round(value)))

    return SignalReport(signal.tech[:16], grade(signal), whole(signal.rssi_dbm), whole(signal.rsrp_dbm),
                        whole(signal.rsrq_db), whole(signal.sinr_db))


def signal_doc(signal: Signal) -> dict[str, object]:
    """`signal_report` as a map (what `boxctl modem watch` and the installer's tool show)."""
    return signal_report(signal).to_doc()


def fault_words(cause: str, *, apn: str = "", attempts: int | None = None, detail: str = "") -> str:
    """A configuration fault said so that an installer knows what to do."""
    words = {
        "sim_missing": "no SIM card detected: insert the SIM (power off the Box first)",
        "sim_failure": "the SIM card cannot be read: check that it sits right, or try another SIM",
        "pin_required": "the SIM asks for a PIN and none is configured: put it in the PIN file, or remove the PIN "
                        "in a phone",
        "pin_wrong": "the SIM refused the PIN: it will not be tried again; correct the PIN file",
        "pin_unsafe": (f"the SIM asks for its PIN with only {attempts} attempt(s) left: boxd will not try "
                       "(a wrong one would lock the SIM); unlock it in a phone" if attempts is not None else
                       "the SIM asks for its PIN and the modem cannot tell how many attempts are left: boxd will "
                       "not try; unlock it in a phone"),
        "puk_required": "the SIM is locked (PUK required): unlock it with its PUK in a phone, or replace it",
        "apn_rejected": f"the network refused the APN '{apn}': check the APN of the SIM's operator",
        "registration_denied": "the network denied the SIM: check the subscription (is it active, is roaming "
                               "allowed here?)",
    }.get(cause, cause)
    return f"{words} ({detail})" if detail and cause not in ("sim_missing",) else words


@dataclass(frozen=True, slots=True)
class PinVerdict:
    """Whether to send the PIN; else the configuration fault to report."""

    send: bool
    cause: str = ""


def pin_digest(pin: str) -> str:
    """What is remembered of a PIN the SIM refused (never the PIN itself)."""
    return hashlib.sha256(b"boxd-sim-pin:" + pin.encode()).hexdigest()[:32]


def pin_verdict(sim: SimStatus, pin: str, refused: str) -> PinVerdict:
    """The PIN rule, for a SIM that asks for its PIN (`refused`: the digest of the PIN last refused)."""
    if sim.state == SimState.PUK_REQUIRED:
        return PinVerdict(False, "puk_required")
    if sim.state != SimState.PIN_REQUIRED:
        return PinVerdict(False)
    if not pin:
        return PinVerdict(False, "pin_required")
    if refused and refused == pin_digest(pin):
        return PinVerdict(False, "pin_wrong")
    if sim.pin_attempts is None or sim.pin_attempts <= 1:
        return PinVerdict(False, "pin_unsafe")
    return PinVerdict(True)


@dataclass
class Reporter:
    """Decides when the modem's part of the heartbeat is sent."""

    min_interval_s: float = 300.0
    refresh_s: float = REFRESH_S
    deadband_db: float = DEADBAND_DB
    _sent: dict[str, object] = field(default_factory=dict)
    _sent_at: float | None = None

    def changed(self, doc: Mapping[str, object]) -> bool:
        """Whether `doc` differs from what was last sent beyond the deadband."""
        if self._sent_at is None:
            return True
        for key, value in doc.items():
            before = self._sent.get(key)
            if key == "signal" and isinstance(value, dict) and isinstance(before, dict):
                if value.get("grade") != before.get("grade") or value.get("tech") != before.get("tech"):
                    return True
                for k in SIGNAL_KEYS:
                    a, b = value.get(k), before.get(k)
                    if (a is None) != (b is None) or (isinstance(a, int | float) and isinstance(b, int | float)
                                                      and abs(a - b) >= self.deadband_db):
                        return True
            elif key not in ("usage", "signal") and value != before:
                return True
        return set(doc) != set(self._sent)

    def take(self, doc: Mapping[str, object], now: float) -> dict[str, object] | None:
        """`doc` if it is due now (and remember it as sent), else None."""
        if self._sent_at is not None and now - self._sent_at < self.min_interval_s:
            return None
        if not self.changed(doc) and self._sent_at is not None and now - self._sent_at < self.refresh_s:
            return None
        self._sent, self._sent_at = dict(doc), now
        return dict(doc)

    def due_in(self, now: float) -> float:
        """Seconds before a report could be sent."""
        return 0.0 if self._sent_at is None else max(0.0, self.min_interval_s - (now - self._sent_at))
