"""The fleet: Boxes as the cloud knows them, their status and its history, and their tags.

Tables `boxes`, `status_history`, `box_tags`. A Box's row is written by its enrolment
(`cloud.store._credentials`); here, what happens to it after. No network I/O.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from cloud.store._base import SECONDS, AnyRow, StoreBase, metadata
from cloud.store._dialect import Upsert

boxes = sa.Table(
    "boxes", metadata,
    sa.Column("box_id", sa.Text, primary_key=True),
    sa.Column("serial", sa.Text, nullable=False),
    sa.Column("enrolled", SECONDS, nullable=False),
    sa.Column("cert_serial", sa.Text, nullable=False),  # decimal text: up to 159 bits, too big for an integer
    sa.Column("cert_not_after", SECONDS, nullable=False),
    sa.Column("revoked", SECONDS),
    sa.Column("online", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("status_ts", SECONDS),
    sa.Column("status_reason", sa.Text),
    sa.Column("last_seen", SECONDS),
    sa.Column("version", sa.Text),
)
status_history = sa.Table(
    "status_history", metadata,
    sa.Column("box_id", sa.Text, nullable=False),
    sa.Column("ts", SECONDS, nullable=False),
    sa.Column("online", sa.Integer, nullable=False),
    sa.Column("reason", sa.Text),
)
box_tags = sa.Table(
    "box_tags", metadata,
    sa.Column("box_id", sa.Text, primary_key=True),
    sa.Column("tag", sa.Text, primary_key=True),
)
_TAG = Upsert(box_tags)  # a tag the Box has already: nothing


@dataclass(frozen=True)
class BoxRow:
    """A Box as the cloud knows it."""

    box_id: str
    serial: str
    enrolled: float
    cert_serial: int
    cert_not_after: float
    revoked: float | None
    online: bool
    status_ts: float | None
    status_reason: str | None
    last_seen: float | None
    version: str | None

    @classmethod
    def of(cls, r: AnyRow) -> BoxRow:
        m = r._mapping
        return cls(m["box_id"], m["serial"], m["enrolled"], int(m["cert_serial"]), m["cert_not_after"],
                   m["revoked"], bool(m["online"]), m["status_ts"], m["status_reason"], m["last_seen"],
                   m["version"])


class Fleet(StoreBase):
    """Boxes, status and tags (a part of `Store`)."""

    def boxes(self) -> list[BoxRow]:
        """Every Box, by ID."""
        with self._read() as db:
            return [BoxRow.of(r) for r in db.execute(sa.select(boxes).order_by(boxes.c.box_id))]

    def box(self, box_id: str) -> BoxRow | None:
        """One Box, or None."""
        with self._read() as db:
            r = db.execute(sa.select(boxes).where(boxes.c.box_id == box_id)).first()
        return BoxRow.of(r) if r else None

    def set_status(self, box_id: str, online: bool, ts: float, reason: str, version: str | None) -> None:
        """Record a Box's online/offline status and keep its history."""
        with self._tx() as db:
            db.execute(boxes.update().where(boxes.c.box_id == box_id).values(
                online=int(online), status_ts=ts, status_reason=reason,
                version=sa.func.coalesce(sa.literal(version, sa.Text), boxes.c.version)))
            db.execute(status_history.insert().values(box_id=box_id, ts=ts, online=int(online), reason=reason))

    def set_offline(self, box_id: str, reason: str) -> None:
        """Mark a Box offline by the platform's own judgement (missed heartbeats)."""
        self.set_status(box_id, False, time.time(), reason, None)

    def status_history(self, box_id: str, limit: int = 20) -> list[tuple[float, bool, str]]:
        """The latest status changes of a Box, newest first."""
        h = status_history.c
        with self._read() as db:
            rows = db.execute(sa.select(h.ts, h.online, h.reason).where(h.box_id == box_id)
                              .order_by(h.ts.desc()).limit(limit))
            return [(float(t), bool(o), r or "") for t, o, r in rows]

    def tag_box(self, box_id: str, tags: Iterable[str]) -> None:
        rows = [{"box_id": box_id, "tag": t} for t in tags]
        if rows:
            with self._tx() as db:
                db.execute(_TAG(db), rows)

    def untag_box(self, box_id: str, tags: Iterable[str]) -> int:
        """Remove tags from a Box; returns how many it had."""
        with self._tx() as db:
            return sum(db.execute(box_tags.delete().where(box_tags.c.box_id == box_id, box_tags.c.tag == t)).rowcount
                       for t in tags)

    def tags(self) -> dict[str, list[str]]:
        """Each tagged Box's tags, sorted."""
        out: dict[str, list[str]] = {}
        with self._read() as db:
            for box_id, tag in db.execute(sa.select(box_tags).order_by(box_tags.c.box_id, box_tags.c.tag)):
                out.setdefault(str(box_id), []).append(str(tag))
        return out

    def tagged(self, tag: str) -> list[str]:
        """The Boxes with a tag (revoked or not), sorted."""
        with self._read() as db:
            return [str(b) for b in db.execute(sa.select(box_tags.c.box_id).where(box_tags.c.tag == tag)
                                               .order_by(box_tags.c.box_id)).scalars()]
