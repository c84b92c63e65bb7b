"""Box status monitoring: online/offline, health, and the alerts an operator needs to see.

Fed by the receiver (status, health, events, batches) and by a periodic `check()`.
Alerts (kind, subject):

- ``offline``: the Box's Last Will or its own "offline" arrived, or heartbeats stopped
  (3 missed). One alert per Box: devices behind an offline Box raise nothing.
- ``no_data``: the Box sends heartbeats but no data.
- ``sequence``: its batch sequence went backwards (same queue epoch, lower sequence),
  the queue epoch changed (storage reset or replaced: worth a look, can mean tampering),
  or a batch number came again with different content.
- ``gap``: batches the Box has had acknowledged are neither stored nor reported evicted.
- ``clock``: the Box's clock is more than `CLOCK_SKEW_S` off the platform's.
- ``evicted``: the Box's queue overflowed during an outage and dropped its oldest samples.
- ``device``, subject <device>: a field device behind an online Box stopped answering.
- ``config``, subject <version>: the Box rolled a pushed configuration back (closed by an operator,
  `boxcloud alerts ack`, or by a later configuration that is kept).
- ``rate``: the Box sends more messages or bytes than its limits (the broker refused some, or
  the receiver put some aside to decode later); closes after `RATE_QUIET_S` without excess.
- ``modem_config``, ``sim_changed``, ``roaming``, ``signal``, ``data_budget``, ``modem_recovery``,
  ``wan_failover``: the Box's 4G modem (`cloud._modem_alerts`).

A planned stop (the Box restarting for a `restart` command, an update or a certificate renewal:
status reason "restarting") opens no ``offline`` alert unless the Box is not back within
`PLANNED_GRACE_S` (or three heartbeats, if longer).

An alert opens once and closes when its cause is gone. This module holds rules,
not I/O: it reads and writes the store.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from cloud import _modem_alerts
from cloud.pacing import Lru
from cloud.store import Store
from proto.modem import ModemEvent, ModemReport, WanEvent
from proto.points import Quality
from proto.uplink import Evicted

log = logging.getLogger("boxcloud.monitor")

CLOCK_SKEW_S = 300
PLANNED_GRACE_S = 120.0
PLANNED = frozenset({"restarting"})  # status reasons of a stop the Box announced as planned
DEVICE_GRACE_S = 60
COMM_FAULTS = frozenset({Quality.NO_ANSWER, Quality.NOT_CONNECTED, Quality.BAD_FRAME})
RATE_QUIET_S = 600
MAX_TRACKED_DEVICES = 200_000


@dataclass
class Monitor:
    """The rules, over one store."""

    store: Store
    device_grace_s: float = DEVICE_GRACE_S
    # (box, device) -> answers; only a way to write changes alone, so bounded (a Box whose tables
    # name a million devices costs database writes, not memory)
    _answering: Lru[tuple[str, str], bool] = field(default_factory=lambda: Lru(MAX_TRACKED_DEVICES))
    _over_rate: dict[str, float] = field(default_factory=dict)  # Box -> when it was last over its rate

    def _alert(self, box_id: str, kind: str, subject: str, message: str, *, refresh: bool = False) -> None:
        if self.store.open_alert(box_id, kind, subject, message, refresh=refresh):
            log.warning("ALERT %s %s%s: %s", box_id, kind, f" {subject}" if subject else "", message)

    def _clear(self, box_id: str, kind: str, subject: str | None = None) -> None:
        if self.store.close_alert(box_id, kind, subject):
            log.info("resolved %s %s%s", box_id, kind, f" {subject}" if subject else "")

    # -- fed by the receiver ----------------------------------------------------------------

    def on_status(self, box_id: str, online: bool, reason: str) -> None:
        """The retained status (or the Last Will) changed."""
        if online:
            self._clear(box_id, "offline")
        elif reason in PLANNED:
            log.info("Box %s is %s (planned: no alert unless it is not back in %.0f s)", box_id, reason,
                     PLANNED_GRACE_S)
        else:
            why = {"stopped": "boxd was stopped", "connection lost": "connection lost (Last Will)"}.get(reason, reason)
            self._alert(box_id, "offline", "", f"Box went offline: {why}")

    def on_health(self, box_id: str, doc: dict[str, object], now: float | None = None) -> None:
        """A heartbeat: the Box is alive; check its clock and its sequence."""
        now = now or time.time()
        prev = self.store.put_health(box_id, doc)
        box = self.store.box(box_id)
        if box is not None and not box.online and not box.revoked:
            self.store.set_status(box_id, True, now, "heartbeat", None)
            self._clear(box_id, "offline")
        ts = doc.get("ts")
        if isinstance(ts, int) and doc.get("clock_ok") is True:
            skew = ts / 1000 - now
            if abs(skew) > CLOCK_SKEW_S:
                self._alert(box_id, "clock", "", f"the Box's clock is {abs(skew):.0f} s "
                                                 f"{'ahead' if skew > 0 else 'behind'}")
            else:
                self._clear(box_id, "clock")
        self._check_sequence(box_id, doc, prev)

    def _check_sequence(self, box_id: str, doc: dict[str, object], prev: dict[str, object] | None) -> None:
        epoch, last, oldest = doc.get("epoch"), doc.get("last_seq"), doc.get("oldest_seq")
        if not (isinstance(epoch, int) and isinstance(last, int) and isinstance(oldest, int)):
            return
        if prev is not None and isinstance(prev.get("last_seq"), int):
            if prev.get("epoch") != epoch:
                self._alert(box_id, "sequence", "", "the Box's queue was reset (new epoch): storage replaced?")
            elif last < int(str(prev["last_seq"])):
                self._alert(box_id, "sequence", "",
                            f"the Box's batch sequence went backwards ({prev['last_seq']} -> {last})")
        # everything below the oldest batch still waiting on the Box has been acknowledged
        below = oldest if oldest else last + 1
        start = self.store.first_seq(box_id, epoch)
        missing = [s for s in self.store.missing_seqs(box_id, epoch, below) if s >= start] if start else []
        evicted, told = doc.get("evicted"), (prev or {}).get("evicted_told")
        if missing and isinstance(evicted, int) and evicted > (told if isinstance(told, int) else 0):
            return  # the Box evicted more than its events told yet: they are on their way (a gap or not: later)
        if missing:
            self._alert(box_id, "gap", str(epoch), f"batches acknowledged but never stored: {missing[:10]}")
        else:
            self._clear(box_id, "gap", str(epoch))

    def on_config_answer(self, box_id: str, version: int, status: str, reasons: list[str]) -> None:
        """A Box's answer to a pushed configuration: a rollback is an alert; a later one kept closes it."""
        if status == "rolled_back":
            why = reasons[0] if reasons else "no reason given"
            self._alert(box_id, "config", str(version), f"configuration version {version} was rolled back: {why}")
        elif status == "kept" or (status == "applied" and not reasons):
            self._clear(box_id, "config")

    def on_conflict(self, box_id: str, epoch: int, seq: int) -> None:
        """A batch number came again with other content: the Box lost its queue state, or worse."""
        self._alert(box_id, "sequence", f"conflict:{epoch}",
                    f"batch {seq} of epoch {epoch:x} was sent again with different content", refresh=True)

    def on_evicted(self, box_id: str, ev: Evicted) -> None:
        """The Box's queue overflowed: what it dropped (the batches too), and an alert."""
        self.store.put_evicted(box_id, ev.epoch, [list(r) for r in ev.seqs], ev.samples)
        # the largest total told: events may arrive out of order (one sent again after a refusal)
        total = self.store.note_evicted_told(box_id, ev.total)
        self._alert(box_id, "evicted", "", f"the Box's queue was full: {total} oldest "
                                           f"samples dropped in all (latest: {ev.samples})", refresh=True)

    def on_modem(self, box_id: str, report: ModemReport) -> None:
        """The modem's part of a heartbeat (`cloud._modem_alerts`)."""
        _modem_alerts.on_report(self, box_id, report)

    def on_modem_event(self, box_id: str, event: ModemEvent | WanEvent) -> None:
        """A ``modem`` or ``wan`` event (`cloud._modem_alerts`)."""
        _modem_alerts.on_event(self, box_id, event)

    def on_limits(self, box_id: str, refused: int, reason: str, now: float | None = None) -> None:
        """The Box went over its rate: `refused` messages refused or put aside, and why."""
        self._over_rate[box_id] = now or time.time()
        self._alert(box_id, "rate", "", f"the Box sends too much: {refused} message(s) {reason}", refresh=True)

    def on_samples(self, box_id: str, samples: list[tuple[str, int, object, int]], now: float | None = None) -> None:
        """A stored batch, as (point, ts_ms, value, quality): which devices answered."""
        devices: dict[str, tuple[int, int]] = {}  # device -> (comm faults, samples)
        for point, _, _, q in samples:
            dev = point.split(".", 1)[0]
            bad, n = devices.get(dev, (0, 0))
            devices[dev] = (bad + (q in COMM_FAULTS), n + 1)
        self.on_devices(box_id, devices, now)

    def on_devices(self, box_id: str, devices: dict[str, tuple[int, int]], now: float | None = None) -> None:
        """A stored batch, summed up by device: (samples with a communication fault, samples)."""
        now = now or time.time()
        if self._answering.get((box_id, "")) is None:  # first data since start: clear a stale no_data
            self._clear(box_id, "no_data")
            self._answering.put((box_id, ""), True)
        unknown = [dev for dev in devices if self._answering.get((box_id, dev)) is None]
        if unknown:  # since start (or forgotten): what the store says, one read, not a write a device
            stored_bad = {d for d, _, _ in self.store.bad_devices(box_id)}
            for dev in unknown:
                self._answering.put((box_id, dev), dev not in stored_bad)
        for dev, (bad, n) in devices.items():
            answers = bad < n
            if self._answering.get((box_id, dev)) == answers:
                continue  # only changes touch the database
            self._answering.put((box_id, dev), answers)
            self.store.device_state(box_id, dev, None if answers else "no answer", now)
            if answers:
                self._clear(box_id, "device", dev)

    # -- periodic -------------------------------------------------------------------------

    def check(self, now: float | None = None) -> None:
        """Missed heartbeats, silent Boxes, unreachable devices."""
        now = now or time.time()
        for box_id, when in list(self._over_rate.items()):
            if now - when > RATE_QUIET_S:
                del self._over_rate[box_id]
                self._clear(box_id, "rate")
        # three queries a check whatever the fleet's size (not two a Box: 20,000 a second at 10,000 Boxes)
        healths, bad = self.store.healths(), self.store.all_bad_devices()
        for box in self.store.boxes():
            if not box.revoked and not box.online and box.status_reason in PLANNED:
                self._planned_stop(box.box_id, box.status_ts, now)
            if box.revoked or not box.online:
                continue
            h = healths.get(box.box_id)
            if h is None:
                continue
            received, doc = h
            hb = doc.get("hb_s")
            hb_s = float(hb) if isinstance(hb, int | float) else 60.0
            if now - received > 3 * hb_s + 5:
                self.store.set_offline(box.box_id, "missed heartbeats")
                self._alert(box.box_id, "offline", "", f"no heartbeat for {now - received:.0f} s")
                continue
            if box.last_seen is None or now - box.last_seen > 3 * hb_s + 5:
                self._alert(box.box_id, "no_data", "", "the Box is online but sends no data")
                self._answering.pop((box.box_id, ""))
            for dev, since, reason in bad.get(box.box_id, ()):
                if now - since > self.device_grace_s:
                    self._alert(box.box_id, "device", dev, f"field device {dev} behind the Box: {reason} "
                                                           f"for {now - since:.0f} s")

    def _planned_stop(self, box_id: str, since: float | None, now: float) -> None:
        """A Box that said it was restarting: an alert only once it has been away too long."""
        h = self.store.health(box_id)
        hb = h[1].get("hb_s") if h else None
        grace = max(PLANNED_GRACE_S, 3 * float(hb) + 5 if isinstance(hb, int | float) else 0.0)
        if since is not None and now - since > grace:
            self._alert(box_id, "offline", "", f"Box went offline: restarting, and not back after {now - since:.0f} s")
