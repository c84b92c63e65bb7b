"""Data used over the modem, per direction and per billing period, across resets and reboots (pure).

An interface's counters start again at zero whenever the modem re-enumerates on USB (a reset, a
power-cycle, a reboot of the Box): the interface is a new one, with a new index. `Usage.take` adds
what the counters moved since they were last read: the difference while the interface is the same
one and its counters grew, the whole reading when it is a new interface (another index) or its
counters went back. The caller keeps the record on disk (`to_doc`/`from_doc`) so that a daemon
restart neither loses nor counts twice: a daemon that starts on the same interface adds only what
moved since the last record. What can be missed: the bytes between the last reading and a reset
nobody announced (the caller reads the counters just before every reset it does itself).

The billing period starts on `billing_day` of each month (local time). `budget_state` says whether
the soft budget asks the Box to save data: over 80 % of it, or on pace to exceed it (projected over
the whole period once two days of it have passed). `slowed` is what saving data does to the
configuration that runs: points that are not critical are polled less often.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from drivers.modem import ByteCounters

if TYPE_CHECKING:
    from boxconfig import BoxConfig
    from drivers.modbus._config import ModbusPoint

DEGRADE_AT = 0.8  # of the budget: save data from here on
ALERT_AT = 0.9  # of the budget: the report says "near the limit"
MIN_PACE_DAYS = 2.0


def period_start(when: dt.datetime, billing_day: int) -> dt.date:
    """The first day of the billing period that holds `when`."""
    day = min(billing_day, 28)
    if when.day >= day:
        return dt.date(when.year, when.month, day)
    year, month = (when.year, when.month - 1) if when.month > 1 else (when.year - 1, 12)
    return dt.date(year, month, day)


def period_end(start: dt.date) -> dt.date:
    """The first day of the next period."""
    year, month = (start.year, start.month + 1) if start.month < 12 else (start.year + 1, 1)
    return dt.date(year, month, min(start.day, calendar.monthrange(year, month)[1]))


@dataclass
class Usage:
    """Bytes counted in the current period, and what is needed to count the next reading."""

    period: str = ""  # ISO date of the period's first day
    rx: int = 0
    tx: int = 0
    last_index: int = 0  # the interface the last reading came from (0: none yet)
    last_rx: int = 0
    last_tx: int = 0
    previous: dict[str, int | str] = field(default_factory=dict)  # the period before: {"period", "rx", "tx"}

    @property
    def total(self) -> int:
        """Both directions."""
        return self.rx + self.tx

    def roll(self, period: str) -> None:
        """A new billing period: what was counted becomes the previous period's."""
        if period != self.period:
            if self.period:
                self.previous = {"period": self.period, "rx": self.rx, "tx": self.tx}
            self.period, self.rx, self.tx = period, 0, 0

    def take(self, reading: ByteCounters | None, index: int) -> int:
        """Add what the counters of interface `index` moved; returns the bytes added (None: the
        interface is not there now; nothing is added and the last reading is kept)."""
        if reading is None or index <= 0:
            return 0
        if index == self.last_index and reading.rx >= self.last_rx and reading.tx >= self.last_tx:
            drx, dtx = reading.rx - self.last_rx, reading.tx - self.last_tx
        else:  # a new interface (re-enumerated), or counters that went back: they started again at zero
            drx, dtx = reading.rx, reading.tx
        self.rx += drx
        self.tx += dtx
        self.last_index, self.last_rx, self.last_tx = index, reading.rx, reading.tx
        return drx + dtx

    def to_doc(self) -> dict[str, object]:
        """For the state file."""
        return {"v": 1, "period": self.period, "rx": self.rx, "tx": self.tx, "last_index": self.last_index,
                "last_rx": self.last_rx, "last_tx": self.last_tx, "previous": dict(self.previous)}

    @classmethod
    def from_doc(cls, doc: object) -> Usage:
        """From the state file; a malformed one starts afresh (and says nothing: the caller logs)."""
        if not isinstance(doc, dict) or doc.get("v") != 1:
            return cls()

        def n(key: str) -> int:
            v = doc.get(key)
            return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63 else 0

        period = doc.get("period")
        prev = doc.get("previous")
        previous = {k: v for k, v in prev.items() if k in ("period", "rx", "tx") and isinstance(v, int | str)} \
            if isinstance(prev, dict) else {}
        return cls(period if isinstance(period, str) and len(period) <= 10 else "", n("rx"), n("tx"),
                   n("last_index"), n("last_rx"), n("last_tx"), previous)


@dataclass(frozen=True, slots=True)
class BudgetState:
    """Where the period's use stands against the soft budget."""

    budget: int  # bytes; 0: no budget
    used: int
    projected: int  # at the period's end at the pace so far (0 until the pace is known)
    save: bool  # save data now (bigger batches, slower points that are not critical)
    near: bool  # near the limit (reported)

    @property
    def fraction(self) -> float:
        """Used over budget (0 without a budget)."""
        return self.used / self.budget if self.budget else 0.0


def budget_state(usage: Usage, budget_mb: int, now: dt.datetime, billing_day: int) -> BudgetState:
    """The soft budget's verdict on the current period."""
    budget = budget_mb * 1_000_000
    if not budget:
        return BudgetState(0, usage.total, 0, False, False)
    start = period_start(now, billing_day)
    length = (period_end(start) - start).days * 86400.0
    elapsed = (now - dt.datetime.combine(start, dt.time(), now.tzinfo)).total_seconds()
    projected = int(usage.total * length / elapsed) if elapsed >= MIN_PACE_DAYS * 86400 else 0
    save = usage.total >= DEGRADE_AT * budget or projected > budget
    return BudgetState(budget, usage.total, projected, save, usage.total >= ALERT_AT * budget)


def slowed(cfg: BoxConfig, factor: int, critical: Callable[[str], bool]) -> BoxConfig:
    """`cfg` with every point that is not critical polled `factor` times less often (saving data):
    Modbus points one by one, a BACnet device as a whole when none of its points is critical (its
    COV subscriptions, the BACnet way of alarms, go on as they are)."""
    if factor <= 1:
        return cfg

    def points(device: str, interval: float, pts: tuple[ModbusPoint, ...]) -> tuple[ModbusPoint, ...]:
        return tuple(p if critical(f"{device}.{p.name}") else
                     dataclasses.replace(p, poll_interval_s=min(86400.0, (p.poll_interval_s or interval) * factor))
                     for p in pts)

    tcp = tuple(dataclasses.replace(d, points=points(d.name, d.poll_interval_s, d.points)) for d in cfg.modbus_tcp)
    rtu = tuple(dataclasses.replace(line, devices=tuple(
        dataclasses.replace(d, points=points(d.name, d.poll_interval_s, d.points)) for d in line.devices))
        for line in cfg.modbus_rtu)
    bacnet = tuple(dataclasses.replace(n, devices=tuple(
        d if any(critical(f"{d.name}.{p.name}") for p in d.points)
        else dataclasses.replace(d, poll_interval_s=min(86400.0, d.poll_interval_s * factor)) for d in n.devices))
        for n in cfg.bacnet)
    return dataclasses.replace(cfg, modbus_tcp=tcp, modbus_rtu=rtu, bacnet=bacnet)
