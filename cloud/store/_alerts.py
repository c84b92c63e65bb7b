"""Alerts about Boxes, and what the monitor watches to open and close them: each Box's latest
health report, its 4G modem's latest report, and which devices behind it answer.

The rules are `cloud.monitor`'s; here, the rows. An alert is open until closed; at most one
alert of a (Box, kind, subject) is open at a time (checked in the write transaction that opens
it). Tables `alerts`, `health`, `modem`, `devices`. No network I/O.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import sqlalchemy as sa

from cloud.store._base import ROW_ID, SECONDS, AnyRow, StoreBase, metadata
from cloud.store._dialect import Upsert

alerts = sa.Table(
    "alerts", metadata,
    sa.Column("id", ROW_ID, primary_key=True),
    sa.Column("box_id", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("opened", SECONDS, nullable=False),
    sa.Column("closed", SECONDS),
    sa.Column("acked", SECONDS),
    sa.Column("acked_by", sa.Text),  # who acknowledged it: "user:NAME", "key:ID" (the API) or "operator"
    sa.Column("ack_note", sa.Text),  # and what they said
)
sa.Index("open_alerts", alerts.c.box_id, alerts.c.kind, alerts.c.subject,
         sqlite_where=alerts.c.closed.is_(None), postgresql_where=alerts.c.closed.is_(None))
health = sa.Table(
    "health", metadata,
    sa.Column("box_id", sa.Text, primary_key=True),
    sa.Column("received", SECONDS, nullable=False),
    sa.Column("doc", sa.Text, nullable=False),  # JSON: the Box's report
)
modem = sa.Table(
    "modem", metadata,
    sa.Column("box_id", sa.Text, primary_key=True),
    sa.Column("received", SECONDS, nullable=False),
    sa.Column("doc", sa.Text, nullable=False),  # JSON: the modem's report (`proto.modem.ModemReport`)
)
devices = sa.Table(
    "devices", metadata,
    sa.Column("box_id", sa.Text, primary_key=True),
    sa.Column("device", sa.Text, primary_key=True),
    sa.Column("bad_since", SECONDS),  # None while it answers
    sa.Column("reason", sa.Text),
    sa.Column("last_good", SECONDS),
)
_HEALTH = Upsert(health, ["box_id"], lambda new: {"received": new.received, "doc": new.doc})
_MODEM = Upsert(modem, ["box_id"], lambda new: {"received": new.received, "doc": new.doc})
_DEVICE_GOOD = Upsert(devices, ["box_id", "device"], lambda new: {
    "bad_since": None, "reason": None, "last_good": new.last_good})
_DEVICE_BAD = Upsert(devices, ["box_id", "device"], lambda new: {
    "bad_since": sa.func.coalesce(devices.c.bad_since, new.bad_since), "reason": new.reason})


@dataclass(frozen=True)
class Alert:
    """An alert about a Box (or a device behind it)."""

    id: int
    box_id: str
    kind: str
    subject: str
    message: str
    opened: float
    closed: float | None
    acked: float | None = None
    acked_by: str | None = None
    ack_note: str | None = None

    @classmethod
    def of(cls, r: AnyRow) -> Alert:
        m = r._mapping
        return cls(int(m["id"]), m["box_id"], m["kind"], m["subject"], m["message"], m["opened"], m["closed"],
                   m["acked"], m["acked_by"], m["ack_note"])


class Alerts(StoreBase):
    """Alerts, health reports and devices (a part of `Store`)."""

    def put_health(self, box_id: str, doc: dict[str, object]) -> dict[str, object] | None:
        """Keep a Box's latest health report; returns the previous one. The platform's own
        ``evicted_told`` (`note_evicted_told`) is carried over into the new report, both with it;
        where it was never set, it starts at the count the Box reported before (those were told)."""
        with self._tx() as db:
            before = db.execute(sa.select(health.c.doc).where(health.c.box_id == box_id)).scalar()
            prev = json.loads(before) if before else None
            told = (prev.get("evicted_told", prev.get("evicted")) if prev else doc.get("evicted")) or 0
            if prev is not None:
                prev["evicted_told"] = told
            db.execute(_HEALTH(db), {"box_id": box_id, "received": time.time(),
                                     "doc": json.dumps({**doc, "evicted_told": told})})
        return prev

    def note_evicted_told(self, box_id: str, total: int) -> int:
        """The largest count of evicted samples a Box's ``evicted`` events told (kept in its health
        row as ``evicted_told``, beside the heartbeat's own ``evicted``; the row's time of receipt is
        the heartbeat's, unchanged); returns it."""
        with self._tx() as db:
            before = db.execute(sa.select(health.c.received, health.c.doc).where(health.c.box_id == box_id)).first()
            if before is None:  # no heartbeat yet: the first one's count is taken as told (put_health)
                return total
            doc = json.loads(before.doc)
            told = max(total, int(doc.get("evicted_told") or 0))
            db.execute(_HEALTH(db), {"box_id": box_id, "received": float(before.received),  # not a heartbeat
                                     "doc": json.dumps({**doc, "evicted_told": told})})
        return told

    def health(self, box_id: str) -> tuple[float, dict[str, object]] | None:
        """(time received, report) of a Box's latest health report."""
        with self._read() as db:
            row = db.execute(sa.select(health.c.received, health.c.doc).where(health.c.box_id == box_id)).first()
        return (float(row.received), json.loads(row.doc)) if row else None

    def put_modem(self, box_id: str, doc: dict[str, object]) -> dict[str, object] | None:
        """Keep a Box's latest modem report (it comes only when something changed); returns the previous one."""
        with self._tx() as db:
            before = db.execute(sa.select(modem.c.doc).where(modem.c.box_id == box_id)).scalar()
            db.execute(_MODEM(db), {"box_id": box_id, "received": time.time(), "doc": json.dumps(doc)})
        return json.loads(before) if before else None

    def modem(self, box_id: str) -> tuple[float, dict[str, object]] | None:
        """(time received, report) of a Box's latest modem report."""
        with self._read() as db:
            row = db.execute(sa.select(modem.c.received, modem.c.doc).where(modem.c.box_id == box_id)).first()
        return (float(row.received), json.loads(row.doc)) if row else None

    def device_state(self, box_id: str, device: str, bad_reason: str | None, now: float) -> None:
        """Record whether a device behind a Box answered (reason None) or not."""
        with self._tx() as db:
            if bad_reason is None:
                db.execute(_DEVICE_GOOD(db), {"box_id": box_id, "device": device, "bad_since": None, "reason": None,
                                              "last_good": now})
            else:
                db.execute(_DEVICE_BAD(db), {"box_id": box_id, "device": device, "bad_since": now,
                                             "reason": bad_reason, "last_good": None})

    def healths(self) -> dict[str, tuple[float, dict[str, object]]]:
        """Box -> (time received, report) of every Box's latest health report, in one query (the
        monitor's check, every second, over the whole fleet)."""
        with self._read() as db:
            rows = db.execute(sa.select(health.c.box_id, health.c.received, health.c.doc)).all()
        return {str(b): (float(r), json.loads(d)) for b, r, d in rows}

    def all_bad_devices(self) -> dict[str, list[tuple[str, float, str]]]:
        """Box -> (device, bad since, reason) of the devices that do not answer, every Box's, in one query."""
        d = devices.c
        out: dict[str, list[tuple[str, float, str]]] = {}
        with self._read() as db:
            for box, dev, t, r in db.execute(sa.select(d.box_id, d.device, d.bad_since, d.reason)
                                             .where(d.bad_since.is_not(None))):
                out.setdefault(str(box), []).append((str(dev), float(t), str(r)))
        return out

    def bad_devices(self, box_id: str) -> list[tuple[str, float, str]]:
        """(device, bad since, reason) of a Box's devices that do not answer."""
        d = devices.c
        with self._read() as db:
            rows = db.execute(sa.select(d.device, d.bad_since, d.reason)
                              .where(d.box_id == box_id, d.bad_since.is_not(None)))
            return [(str(dev), float(t), str(r)) for dev, t, r in rows]

    def open_alert(self, box_id: str, kind: str, subject: str, message: str, *, refresh: bool = False) -> bool:
        """Open an alert unless the same one is open (then, with `refresh`, update its message).

        Returns:
            whether the alert is new.
        """
        a = alerts.c
        with self._tx() as db:
            open_id = db.execute(sa.select(a.id).where(a.box_id == box_id, a.kind == kind, a.subject == subject,
                                                       a.closed.is_(None))).scalar()
            if open_id is not None:
                if refresh:
                    db.execute(alerts.update().where(a.id == open_id).values(message=message))
                return False
            db.execute(alerts.insert().values(box_id=box_id, kind=kind, subject=subject, message=message,
                                              opened=time.time()))
        return True

    def close_alert(self, box_id: str, kind: str, subject: str | None = None) -> int:
        """Close the open alerts of a kind (and subject); returns how many."""
        a = alerts.c
        which = [a.box_id == box_id, a.kind == kind, a.closed.is_(None)]
        if subject is not None:
            which.append(a.subject == subject)
        with self._tx() as db:
            return db.execute(alerts.update().where(*which).values(closed=time.time())).rowcount

    def alerts(self, box_id: str | None = None, include_closed: bool = False) -> list[Alert]:
        """Alerts, newest first."""
        a = alerts.c
        query = sa.select(alerts)
        if box_id is not None:
            query = query.where(a.box_id == box_id)
        if not include_closed:
            query = query.where(a.closed.is_(None))
        with self._read() as db:
            return [Alert.of(r) for r in db.execute(query.order_by(a.opened.desc(), a.id.desc()))]

    def alert(self, alert_id: int) -> Alert | None:
        """One alert by its number."""
        with self._read() as db:
            r = db.execute(sa.select(alerts).where(alerts.c.id == alert_id)).first()
        return Alert.of(r) if r else None

    def ack_alert(self, alert_id: int, close: bool, by: str | None = None, note: str | None = None) -> bool:
        """Acknowledge an open alert (and with `close`, close it), by whom and with what note; False when it
        was not open and unacknowledged. An alert acknowledged already and closed now keeps its first
        acknowledgement (time, by whom, note): the audit trail has the close."""
        a = alerts.c
        now = time.time()
        which = [a.id == alert_id, a.closed.is_(None)]
        if not close:
            which.append(a.acked.is_(None))
        first = a.acked.is_(None)
        values = {"acked": sa.func.coalesce(a.acked, now),
                  "acked_by": sa.case((first, by), else_=a.acked_by),
                  "ack_note": sa.case((first, note), else_=a.ack_note)} | ({"closed": now} if close else {})
        with self._tx() as db:
            return db.execute(alerts.update().where(*which).values(values)).rowcount > 0
