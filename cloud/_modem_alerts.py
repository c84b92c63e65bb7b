"""Alerts from a Box's 4G modem (rules only: they read and write the store through the monitor).

Fed by `cloud.monitor`: the modem's part of a heartbeat (``health["modem"]``, sent by the Box only
when something changed, at most every few minutes; kept in the store's `modem` table) and the
Box's ``modem`` and ``wan`` events (durable on the Box: they arrive even after an outage).

- ``modem_config`` (subject: the cause): the Box reports a configuration fault (no SIM, a PIN it will
  not try or that was refused, a locked SIM, the APN refused, registration denied); closed when the
  Box reports it cleared.
- ``sim_changed``: the SIM's ICCID differs from the last one reported (a swap, or tampering); closed
  by an operator.
- ``roaming``: registered on a visited network (cost); closed when home again.
- ``signal``: the Box reports its signal poor for longer than its ``weak_signal_s``; closed when better.
- ``data_budget``: the period's data at 90 % of the budget (the Box saves data); closed in a new period.
- ``modem_recovery`` (subject: the rung): the recovery ladder power-cycled the modem or rebooted the
  Box; closed by an operator.
- ``wan_failover``: the Box moved from its preferred uplink to 4G; closed when it is back.
"""

from __future__ import annotations

from typing import Protocol

from cloud.store import Store


class _Alerts(Protocol):
    store: Store

    def _alert(self, box_id: str, kind: str, subject: str, message: str, *, refresh: bool = False) -> None: ...

    def _clear(self, box_id: str, kind: str, subject: str | None = None) -> None: ...


def _text(doc: dict[str, object], key: str, limit: int = 200) -> str:
    value = doc.get(key)
    return value[:limit] if isinstance(value, str) else ""


def on_report(m: _Alerts, box_id: str, doc: dict[str, object]) -> None:
    """The modem's part of a heartbeat."""
    prev = m.store.put_modem(box_id, doc)
    iccid, before = _text(doc, "iccid", 32), _text(prev or {}, "iccid", 32)
    if iccid and before and iccid != before:
        m._alert(box_id, "sim_changed", "", f"the SIM card changed ({before} -> {iccid}): a swap, or tampering",
                 refresh=True)
    reg = doc.get("reg")
    if reg == "roaming":
        m._alert(box_id, "roaming", "", f"the modem is roaming on {_text(doc, 'operator', 64) or 'a visited network'}")
    elif reg == "home":
        m._clear(box_id, "roaming")
    signal = doc.get("signal")
    if doc.get("weak") is True and isinstance(signal, dict):
        shown = ", ".join(f"{k.upper()} {v}" for k, v in signal.items() if k in ("rsrp", "rsrq", "sinr", "rssi")
                          and isinstance(v, int))
        m._alert(box_id, "signal", "", f"weak 4G signal for a while ({shown or 'no measurement'}): check the "
                                       "antenna and its place", refresh=True)
    elif doc.get("weak") is False:
        m._clear(box_id, "signal")
    usage = doc.get("usage")
    if isinstance(usage, dict):
        used = sum(v for k, v in usage.items() if k in ("rx", "tx") and isinstance(v, int))
        if usage.get("near") is True and isinstance(usage.get("budget"), int) and usage["budget"]:
            m._alert(box_id, "data_budget", "", f"{used / 1e6:.1f} MB of the {usage['budget'] / 1e6:.0f} MB data "
                                                "budget used this period: the Box is saving data", refresh=True)
        else:
            m._clear(box_id, "data_budget")
    if doc.get("fault") == "":
        m._clear(box_id, "modem_config")


def on_event(m: _Alerts, box_id: str, doc: dict[str, object]) -> None:
    """A ``modem`` or ``wan`` event."""
    if doc.get("kind") == "wan":
        if doc.get("active") == "cellular":
            m._alert(box_id, "wan_failover", "", f"the Box runs on 4G: {_text(doc, 'why')}", refresh=True)
        elif doc.get("active") == "preferred":
            m._clear(box_id, "wan_failover")
        return
    event = doc.get("event")
    if event == "fault":
        cause = _text(doc, "cause", 32)
        m._alert(box_id, "modem_config", cause, f"modem: {_text(doc, 'words', 300) or cause}", refresh=True)
    elif event == "fault_cleared":
        m._clear(box_id, "modem_config")
    elif event == "recovery" and doc.get("rung") in ("power_cycle", "reboot"):
        what = "power-cycled the modem" if doc["rung"] == "power_cycle" else "rebooted the Box"
        m._alert(box_id, "modem_recovery", str(doc["rung"]), f"the 4G link failed and the Box {what} "
                                                             f"({_text(doc, 'why')})", refresh=True)
