"""Alerts from a Box's 4G modem (rules only: they read and write the store through the monitor).

Fed by `cloud.monitor`: the modem's part of a heartbeat (``health["modem"]``, sent by the Box only
when something changed, at most every few minutes; kept in the store's `modem` table) and the
Box's ``modem`` and ``wan`` events (durable on the Box: they arrive even after an outage).

- ``modem_config`` (subject: the cause): the Box reports a configuration fault (no SIM, a PIN it will
  not try or that was refused, a locked SIM, the APN refused, registration denied); closed when the
  Box reports it cleared.
- ``sim_changed``: the SIM's ICCID differs from the last one reported, also across reports without a
  SIM (a swap, or tampering); closed by an operator.
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
from proto.modem import ModemEvent, ModemReport, WanEvent


class _Alerts(Protocol):
    store: Store

    def _alert(self, box_id: str, kind: str, subject: str, message: str, *, refresh: bool = False) -> None: ...

    def _clear(self, box_id: str, kind: str, subject: str | None = None) -> None: ...


def on_report(m: _Alerts, box_id: str, report: ModemReport) -> None:
    """The modem's part of a heartbeat (decoded and checked by `proto.modem`)."""
    # the last ICCID seen is kept across reports without one (a SIM taken out): a SIM swapped for
    # another is a change even when the Box reported no SIM in between
    prev = m.store.modem(box_id)
    known = prev[1].get("known_iccid") or prev[1].get("iccid") if prev else None
    before = known if isinstance(known, str) else ""
    m.store.put_modem(box_id, {**report.to_doc(), "known_iccid": report.iccid or before})
    if report.iccid and before and report.iccid != before:
        m._alert(box_id, "sim_changed", "", f"the SIM card changed ({before[:24]} -> {report.iccid}): a swap, "
                                            "or tampering", refresh=True)
    if report.reg == "roaming":
        m._alert(box_id, "roaming", "", f"the modem is roaming on {report.operator or 'a visited network'}")
    elif report.reg == "home":
        m._clear(box_id, "roaming")
    if report.weak:
        sig = report.signal
        shown = ", ".join(f"{k.upper()} {v}" for k, v in (("rsrp", sig.rsrp), ("rsrq", sig.rsrq), ("sinr", sig.sinr),
                                                          ("rssi", sig.rssi)) if v is not None)
        m._alert(box_id, "signal", "", f"weak 4G signal for a while ({shown or 'no measurement'}): check the "
                                       "antenna and its place", refresh=True)
    else:
        m._clear(box_id, "signal")
    usage = report.usage
    if usage.near and usage.budget:
        m._alert(box_id, "data_budget", "", f"{(usage.rx + usage.tx) / 1e6:.1f} MB of the {usage.budget / 1e6:.0f} "
                                            "MB data budget used this period: the Box is saving data", refresh=True)
    else:
        m._clear(box_id, "data_budget")
    if not report.fault:
        m._clear(box_id, "modem_config")


def on_event(m: _Alerts, box_id: str, event: ModemEvent | WanEvent) -> None:
    """A ``modem`` or ``wan`` event (decoded and checked by `proto.modem`)."""
    if isinstance(event, WanEvent):
        if event.active == "cellular":
            m._alert(box_id, "wan_failover", "", f"the Box runs on 4G: {event.why}", refresh=True)
        else:
            m._clear(box_id, "wan_failover")
    elif event.event == "fault":
        m._alert(box_id, "modem_config", event.cause, f"modem: {event.words or event.cause}", refresh=True)
    elif event.event == "fault_cleared":
        m._clear(box_id, "modem_config")
    elif event.event == "recovery" and event.rung in ("power_cycle", "reboot"):
        what = "power-cycled the modem" if event.rung == "power_cycle" else "rebooted the Box"
        m._alert(box_id, "modem_recovery", event.rung, f"the 4G link failed and the Box {what} ({event.why})",
                 refresh=True)
