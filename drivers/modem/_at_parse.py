"""Answers of AT commands into typed values (pure; 3GPP TS 27.007 and Quectel's vendor commands).

Each function takes the information lines of one answer (`_at.Line` texts) and returns a value of
`drivers.modem._types`, or raises `ModemProtocolError` saying what was expected. Numbers are
checked against their physical ranges; "unknown" codes (99, 255) become None. Also the
classification of ``+CME ERROR`` codes into the causes the daemon acts on.

Commands covered: +CPIN?, +CPINR / +QPINC (PIN attempts), +CEREG? / +CREG? / +CGREG? (and their
URCs), +COPS?, +CSQ, +CESQ, +QCSQ, +QNWINFO, +CGACT?, +CGPADDR, +CGSN, +CCID / +QCCID, +QGDCNT?.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from drivers.modem._types import ByteCounters, RegState, Signal, SimState, SimStatus
from drivers.modem.errors import ModemProtocolError

MAX_TEXT = 64  # operator names, band names: bounded before they go anywhere

# +CME ERROR numbers (27.007 §9.2) -> the cause the daemon acts on
CME_CAUSES: dict[int, str] = {
    10: "sim_missing", 13: "sim_failure", 15: "sim_failure", 11: "pin_required", 12: "puk_required",
    16: "pin_wrong", 111: "registration_denied", 112: "registration_denied", 113: "registration_denied",
    103: "registration_denied", 106: "registration_denied", 107: "registration_denied",
    132: "apn_rejected", 133: "apn_rejected", 149: "apn_rejected", 533: "apn_rejected",
}
CME_TEXTS = {"sim not inserted": "sim_missing", "sim failure": "sim_failure", "sim pin required": "pin_required",
             "sim puk required": "puk_required", "incorrect password": "pin_wrong"}
_REG_STATES = {0: RegState.IDLE, 1: RegState.HOME, 2: RegState.SEARCHING, 3: RegState.DENIED, 4: RegState.UNKNOWN,
               5: RegState.ROAMING, 6: RegState.HOME, 7: RegState.ROAMING, 9: RegState.HOME, 10: RegState.ROAMING}
# <AcT> of +COPS / +CEREG (27.007 §7.3)
_ACT = {0: "gsm", 1: "gsm", 2: "umts", 3: "gsm", 4: "umts", 5: "umts", 6: "umts", 7: "lte", 8: "lte-m", 9: "nb-iot",
        10: "lte", 11: "nr5g", 12: "nr5g", 13: "nr5g"}
_QCSQ_TECH = {"LTE": "lte", "WCDMA": "umts", "GSM": "gsm", "CAT-M": "lte-m", "CAT-NB": "nb-iot", "NR5G": "nr5g",
              "TDSCDMA": "umts", "NOSERVICE": ""}
_IP_RE = re.compile(r"(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}")
_DIGITS_RE = re.compile(r"\d{14,16}")
_ICCID_RE = re.compile(r"\d{18,22}F?", re.IGNORECASE)
_HEX_RE = re.compile(r"[0-9A-Fa-f]{1,8}")


def cause_of(code: int | None, text: str) -> str:
    """The cause of a +CME ERROR ("" when it is none the daemon acts on)."""
    if code is not None:
        return CME_CAUSES.get(code, "")
    low = text.lower()
    if "apn" in low:
        return "apn_rejected"
    return CME_TEXTS.get(low, "")


def fields(text: str, prefix: str) -> list[str]:
    """The comma-separated fields after ``<prefix>:`` (quotes removed, commas inside quotes kept).

    Raises:
        ModemProtocolError: the line does not start with the prefix.
    """
    head, colon, rest = text.partition(":")
    if not colon or head.strip().upper() != prefix.upper():
        raise ModemProtocolError(f"expected {prefix}: in {_short(text)}")
    out: list[str] = []
    field, quoted = "", False
    for ch in rest.strip():
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            out.append(field.strip())
            field = ""
        else:
            field += ch
    out.append(field.strip())
    return out


def only(lines: Sequence[str], prefix: str) -> list[str]:
    """The fields of the last line with `prefix` (an answer may be preceded by a URC of the same
    prefix; the answer is the last).

    Raises:
        ModemProtocolError: no such line.
    """
    for text in reversed(lines):
        if text.upper().startswith(prefix.upper() + ":"):
            return fields(text, prefix)
    raise ModemProtocolError(f"no {prefix} line in the answer {_short(' | '.join(lines))}")


def sim_state(lines: Sequence[str]) -> SimState:
    """+CPIN? -> the SIM's state."""
    value = only(lines, "+CPIN")[0].upper()
    return {"READY": SimState.READY, "SIM PIN": SimState.PIN_REQUIRED, "SIM PUK": SimState.PUK_REQUIRED,
            "NOT INSERTED": SimState.MISSING, "NOT READY": SimState.UNKNOWN}.get(value, SimState.UNKNOWN)


def pin_attempts(lines: Sequence[str]) -> tuple[int | None, int | None]:
    """+CPINR="SIM PIN" / +CPINR="SIM PUK" lines, or +QPINC="SC" -> (PIN attempts, PUK attempts)."""
    pin = puk = None
    for text in lines:
        head = text.partition(":")[0].strip().upper()
        if head == "+CPINR":
            f = fields(text, "+CPINR")
            if len(f) >= 2:
                n = _int(f[1], 0, 10)
                if f[0].upper() == "SIM PIN":
                    pin = n
                elif f[0].upper() == "SIM PUK":
                    puk = n
        elif head == "+QPINC":
            f = fields(text, "+QPINC")
            if len(f) >= 3 and f[0].upper() == "SC":
                pin, puk = _int(f[1], 0, 10), _int(f[2], 0, 10)
    return pin, puk


def sim_status(state: SimState, attempts: tuple[int | None, int | None]) -> SimStatus:
    """The SIM's status from its state and the attempts left."""
    return SimStatus(state, attempts[0], attempts[1])


def registration(lines: Sequence[str], prefix: str = "+CEREG") -> tuple[RegState, str, str, str]:
    """+CEREG? (or +CREG?, +CGREG?) -> (state, tac, cell id, technology).

    The answer is ``<n>,<stat>[,<tac>,<ci>[,<AcT>]]``; a URC of the same prefix, without `<n>`, is
    taken too (`registration_urc`).
    """
    f = only(lines, prefix)
    if len(f) < 2:
        return registration_urc(f)
    n = _int(f[0], 0, 5)
    if n is None:
        raise ModemProtocolError(f"{prefix}: <n> is not a number in {f!r:.60}")
    return registration_urc(f[1:])


def registration_urc(f: Sequence[str]) -> tuple[RegState, str, str, str]:
    """The fields of a +CEREG URC (``<stat>[,<tac>,<ci>[,<AcT>]]``) -> (state, tac, cell id, technology)."""
    stat = _int(f[0], 0, 11) if f else None
    if stat is None:
        raise ModemProtocolError(f"registration: <stat> is not a number in {list(f)!r:.60}")
    tac = f[1].upper() if len(f) > 1 and _HEX_RE.fullmatch(f[1]) else ""
    cell = f[2].upper() if len(f) > 2 and _HEX_RE.fullmatch(f[2]) else ""
    act = _int(f[3], 0, 13) if len(f) > 3 else None
    return _REG_STATES.get(stat, RegState.UNKNOWN), tac, cell, _ACT.get(act, "") if act is not None else ""


def operator(lines: Sequence[str]) -> tuple[str, str]:
    """+COPS? -> (operator name or numeric code, technology). With no operator: ("", "")."""
    f = only(lines, "+COPS")
    if len(f) < 3:
        return "", ""
    act = _int(f[3], 0, 13) if len(f) > 3 else None
    return _text(f[2]), _ACT.get(act, "") if act is not None else ""


def csq(lines: Sequence[str]) -> Signal:
    """+CSQ: <rssi>,<ber> -> RSSI in dBm (0..31 -> -113..-51; 99 unknown)."""
    rssi = _int(only(lines, "+CSQ")[0], 0, 99)
    return Signal(rssi_dbm=None if rssi is None or rssi > 31 else -113.0 + 2 * rssi)


def cesq(lines: Sequence[str]) -> Signal:
    """+CESQ: <rxlev>,<ber>,<rscp>,<ecno>,<rsrq>,<rsrp> -> RSRQ and RSRP (27.007 §8.69; 255 unknown)."""
    f = only(lines, "+CESQ")
    if len(f) < 6:
        raise ModemProtocolError(f"+CESQ: 6 fields expected, got {len(f)}")
    rsrq, rsrp = _int(f[4], 0, 255), _int(f[5], 0, 255)
    return Signal(tech="lte" if rsrp is not None and rsrp <= 97 else "",
                  rsrq_db=-20.0 + rsrq * 0.5 if rsrq is not None and rsrq <= 34 else None,
                  rsrp_dbm=-141.0 + rsrp if rsrp is not None and rsrp <= 97 else None)


def qcsq(lines: Sequence[str]) -> Signal:
    """Quectel +QCSQ: "LTE",<rssi>,<rsrp>,<sinr>,<rsrq> (SINR in fifths of a dB, offset 20 dB);
    "WCDMA",<rssi>,<rscp>,<ecio>; "GSM",<rssi>; "NOSERVICE"."""
    f = only(lines, "+QCSQ")
    tech = _QCSQ_TECH.get(f[0].upper(), "")
    values = [_num(v, -200, 300) for v in f[1:5]]
    values += [None] * (4 - len(values))
    if tech in ("lte", "lte-m", "nb-iot"):
        rssi, rsrp, sinr, rsrq = values
        return Signal(tech, _dbm(rssi), _dbm(rsrp), _range(rsrq, -40, 0),
                      None if sinr is None or not 0 <= sinr <= 250 else sinr / 5 - 20)
    return Signal(tech, _dbm(values[0]))


def qnwinfo(lines: Sequence[str]) -> tuple[str, str]:
    """Quectel +QNWINFO: <act>,<oper>,<band>,<channel> -> (band, numeric operator)."""
    f = only(lines, "+QNWINFO")
    band = _text(f[2]) if len(f) > 2 else ""
    plmn = f[1] if len(f) > 1 and f[1].isdigit() and len(f[1]) in (5, 6) else ""
    return band, plmn


def bearer_active(lines: Sequence[str], cid: int) -> bool:
    """+CGACT?: one "<cid>,<state>" line per context -> whether context `cid` is active."""
    for text in lines:
        if text.upper().startswith("+CGACT:"):
            f = fields(text, "+CGACT")
            if len(f) >= 2 and _int(f[0], 1, 32) == cid:
                return _int(f[1], 0, 1) == 1
    return False


def address(lines: Sequence[str]) -> str:
    """+CGPADDR: <cid>,<address> -> the IPv4 address ("" when none)."""
    f = only(lines, "+CGPADDR")
    value = f[1] if len(f) > 1 else ""
    return value if _IP_RE.fullmatch(value) and value != "0.0.0.0" else ""  # noqa: S104 - no address


def imei(lines: Sequence[str]) -> str:
    """+CGSN: the IMEI (a bare line of 15 digits; some modems prefix it)."""
    for text in lines:
        value = text.partition(":")[2].strip().strip('"') if ":" in text else text.strip()
        if _DIGITS_RE.fullmatch(value):
            return value
    raise ModemProtocolError(f"no IMEI in {_short(' | '.join(lines))}")


def iccid(lines: Sequence[str]) -> str:
    """+CCID / +QCCID / ^ICCID: the SIM's ICCID (18 to 22 digits, a trailing F dropped)."""
    for text in lines:
        value = text.partition(":")[2].strip().strip('"') if ":" in text else text.strip()
        if _ICCID_RE.fullmatch(value):
            return value.upper().rstrip("F")
    raise ModemProtocolError(f"no ICCID in {_short(' | '.join(lines))}")


def qgdcnt(lines: Sequence[str]) -> ByteCounters:
    """Quectel +QGDCNT: <bytes sent>,<bytes received> -> counters."""
    f = only(lines, "+QGDCNT")
    sent, received = (_int(f[0], 0, 2**63) if f else None), (_int(f[1], 0, 2**63) if len(f) > 1 else None)
    if sent is None or received is None:
        raise ModemProtocolError(f"+QGDCNT: two counters expected in {f!r:.60}")
    return ByteCounters(rx=received, tx=sent)


def text_line(lines: Sequence[str]) -> str:
    """A bare one-line answer (+CGMI, +CGMM, +CGMR), bounded and printable ("" when there is none)."""
    for text in lines:
        value = text.partition(":")[2] if text.startswith("+") else text
        if value.strip():
            return _text(value.strip())
    return ""


# -- helpers -----------------------------------------------------------------------------


def _int(text: str, lo: int, hi: int) -> int | None:
    t = text.strip()
    if not t.lstrip("-").isdigit() or len(t) > 20:
        return None
    v = int(t)
    return v if lo <= v <= hi else None


def _num(text: str, lo: float, hi: float) -> float | None:
    v = _int(text, int(lo), int(hi))
    return float(v) if v is not None else None


def _dbm(v: float | None) -> float | None:
    return _range(v, -150, -20)


def _range(v: float | None, lo: float, hi: float) -> float | None:
    return v if v is not None and lo <= v <= hi else None


def _text(value: str) -> str:
    clean = "".join(ch for ch in value.strip().strip('"') if ch.isprintable())
    return clean[:MAX_TEXT]


def _short(text: str) -> str:
    return repr(text[:60] + ("..." if len(text) > 60 else ""))
