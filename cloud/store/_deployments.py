"""Deployments of software releases to Boxes, wave by wave, and the `ota` events Boxes send about them.

What a deployment does is `cloud.deploy`'s; here, its rows and the transactions that keep them
consistent between the cloud's threads and `boxcloud` processes: a deployment is recorded only
if none of its Boxes is in another running one, and ending a deployment cancels its Boxes not
yet sent in the same transaction. For the users' API, the deployments a `BoxScope` reaches (every
Box of them in reach), filtered in the database. Tables `deployments`, `deployment_boxes`,
`ota_events`. No network I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from cloud.store._base import SECONDS, AnyRow, StoreBase, metadata
from cloud.store._dialect import Upsert
from cloud.store._fleet import boxes
from cloud.store._users import BoxScope, box_accounts

deployments = sa.Table(
    "deployments", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("version", sa.Text, nullable=False),
    sa.Column("selector", sa.Text, nullable=False),  # JSON
    sa.Column("waves", sa.Text, nullable=False),  # JSON
    sa.Column("max_failures", sa.Integer, nullable=False),
    sa.Column("health_s", sa.Integer, nullable=False),
    sa.Column("box_timeout_s", SECONDS, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("created", SECONDS, nullable=False),
    sa.Column("updated", SECONDS, nullable=False),
)
deployment_boxes = sa.Table(
    "deployment_boxes", metadata,
    sa.Column("deployment", sa.Text, primary_key=True),
    sa.Column("box_id", sa.Text, primary_key=True),
    sa.Column("wave", sa.Integer, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=False, server_default=sa.text("''")),
    sa.Column("cmd_id", sa.Text),
    sa.Column("sent", SECONDS),
    sa.Column("updated", SECONDS, nullable=False),
    sa.Index("boxes_deployments", "box_id"),
)
ota_events = sa.Table(
    "ota_events", metadata,
    sa.Column("deployment", sa.Text, primary_key=True),
    sa.Column("box_id", sa.Text, primary_key=True),
    sa.Column("received", SECONDS, nullable=False),
    sa.Column("doc", sa.Text, nullable=False),  # JSON
)
_OTA_EVENT = Upsert(ota_events, ["deployment", "box_id"], lambda new: {"received": new.received, "doc": new.doc})
UNDER_WAY = ("sent", "downloading", "installing", "restarting")  # a Box's states between sent and an outcome


@dataclass(frozen=True)
class DeploymentRow:
    """A deployment of a software release to a set of Boxes, in waves."""

    id: str
    target: str  # the TUF target file name
    version: str
    selector: dict[str, object]  # {"boxes": [...]} or {"tag": "x"}
    waves: list[int]  # cumulative Box counts, resolved at creation
    max_failures: int  # more failures than this halts the deployment
    health_s: int
    box_timeout_s: float
    status: str  # "running", "completed", "halted", "stopped"
    reason: str | None
    created: float
    updated: float

    @classmethod
    def of(cls, r: AnyRow) -> DeploymentRow:
        m = r._mapping
        return cls(m["id"], m["target"], m["version"], json.loads(m["selector"]), json.loads(m["waves"]),
                   int(m["max_failures"]), int(m["health_s"]), float(m["box_timeout_s"]), m["status"], m["reason"],
                   float(m["created"]), float(m["updated"]))


@dataclass(frozen=True)
class DeploymentBoxRow:
    """One Box in a deployment: its wave and where it is (see cloud.deploy for the states)."""

    deployment: str
    box_id: str
    wave: int  # 1, 2, ...
    state: str
    detail: str
    cmd_id: str | None  # the update command
    sent: float | None
    updated: float

    @classmethod
    def of(cls, r: AnyRow) -> DeploymentBoxRow:
        m = r._mapping
        return cls(m["deployment"], m["box_id"], int(m["wave"]), m["state"], m["detail"], m["cmd_id"], m["sent"],
                   float(m["updated"]))


class Deployments(StoreBase):
    """Deployments and their Boxes (a part of `Store`)."""

    def add_deployment(self, d: DeploymentRow, boxes: Sequence[tuple[str, int]]) -> list[tuple[str, str]]:
        """Record a new deployment and its (Box, wave)s, all pending, unless one of the Boxes is in
        another running deployment (checked in the same transaction).

        Returns:
            (Box, deployment) of each such conflict; the deployment was not recorded when any.
        """
        b, dep = deployment_boxes.c, deployments.c
        running = (sa.select(b.deployment).join(deployments, dep.id == b.deployment)
                   .where(b.box_id == sa.bindparam("box"), dep.status == "running"))
        with self._tx() as db:
            conflicts = [(box_id, str(other)) for box_id, _ in boxes
                         for other in db.execute(running, {"box": box_id}).scalars()]
            if conflicts:
                return conflicts
            db.execute(deployments.insert().values(
                id=d.id, target=d.target, version=d.version, selector=json.dumps(d.selector), waves=json.dumps(d.waves),
                max_failures=d.max_failures, health_s=d.health_s, box_timeout_s=d.box_timeout_s, status=d.status,
                reason=d.reason, created=d.created, updated=d.updated))
            if boxes:
                db.execute(deployment_boxes.insert(), [
                    {"deployment": d.id, "box_id": box_id, "wave": wave, "state": "pending", "detail": "",
                     "cmd_id": None, "sent": None, "updated": d.created} for box_id, wave in boxes])
        return []

    def deployments(self, status: str | None = None) -> list[DeploymentRow]:
        """Deployments (of a status), newest first."""
        query = sa.select(deployments)
        if status is not None:
            query = query.where(deployments.c.status == status)
        with self._read() as db:
            return [DeploymentRow.of(r) for r in db.execute(query.order_by(deployments.c.created.desc(),
                                                                           deployments.c.id))]

    def deployments_in(self, scope: BoxScope, after: tuple[float, str] | None, limit: int) -> list[DeploymentRow]:
        """The deployments whose every Box the scope reaches, newest first, after `after` ((created, id) of the
        last of the page before), at most `limit`: filtered in the database."""
        dep = deployments.c
        query = sa.select(deployments).where(_reached(scope))
        if after is not None:
            query = query.where(sa.or_(dep.created < after[0], sa.and_(dep.created == after[0], dep.id > after[1])))
        with self._read() as db:
            return [DeploymentRow.of(r) for r in db.execute(query.order_by(dep.created.desc(), dep.id).limit(limit))]

    def deployment_in(self, scope: BoxScope, dep_id: str) -> DeploymentRow | None:
        """A deployment, if the scope reaches every Box of it."""
        with self._read() as db:
            r = db.execute(sa.select(deployments).where(deployments.c.id == dep_id, _reached(scope))).first()
        return DeploymentRow.of(r) if r else None

    def boxes_reached(self, scope: BoxScope, box_ids: Sequence[str]) -> set[str]:
        """Which of these Boxes the scope reaches."""
        with self._read() as db:
            return {str(b) for b in db.execute(sa.select(boxes.c.box_id).where(
                scope.where(), boxes.c.box_id.in_(sorted(set(box_ids))))).scalars()}

    def accounts_of(self, box_ids: Sequence[str]) -> dict[int, list[str]]:
        """account -> its Boxes among these (Boxes of no account are left out), each list sorted."""
        a = box_accounts.c
        out: dict[int, list[str]] = {}
        with self._read() as db:
            for account, box in db.execute(sa.select(a.account_id, a.box_id).where(a.box_id.in_(sorted(set(box_ids))))
                                           .order_by(a.box_id)):
                out.setdefault(int(account), []).append(str(box))
        return out

    def ended_with_open_boxes(self) -> list[DeploymentRow]:
        """Halted or stopped deployments with Boxes still under way (sent, downloading...)."""
        b = deployment_boxes.c
        query = sa.select(deployments).where(deployments.c.status.in_(("halted", "stopped")), sa.exists().where(
            b.deployment == deployments.c.id, b.state.in_(UNDER_WAY)))
        with self._read() as db:
            return [DeploymentRow.of(r) for r in db.execute(query)]

    def deployment(self, dep_id: str) -> DeploymentRow | None:
        with self._read() as db:
            r = db.execute(sa.select(deployments).where(deployments.c.id == dep_id)).first()
        return DeploymentRow.of(r) if r else None

    def end_deployment(self, dep_id: str, status: str, reason: str | None, now: float,
                       cancel_pending: str | None = None) -> bool:
        """Move a running deployment to `status`; False when it was not running. With `cancel_pending`
        (the detail), its Boxes not sent yet are cancelled in the same transaction: nobody sees the
        deployment ended with Boxes still waiting to be sent."""
        dep, b = deployments.c, deployment_boxes.c
        with self._tx() as db:
            ended = db.execute(deployments.update().where(dep.id == dep_id, dep.status == "running")
                               .values(status=status, reason=reason, updated=now)).rowcount > 0
            if ended and cancel_pending is not None:
                db.execute(deployment_boxes.update().where(b.deployment == dep_id, b.state == "pending")
                           .values(state="cancelled", detail=cancel_pending, updated=now))
            return ended

    def deployment_boxes(self, dep_id: str) -> list[DeploymentBoxRow]:
        """The Boxes of a deployment, by wave then Box."""
        b = deployment_boxes.c
        with self._read() as db:
            return [DeploymentBoxRow.of(r) for r in db.execute(
                sa.select(deployment_boxes).where(b.deployment == dep_id).order_by(b.wave, b.box_id))]

    def set_box_state(self, dep_id: str, box_id: str, state: str, detail: str | None, now: float, *,
                      only_from: Iterable[str], cmd_id: str | None = None) -> bool:
        """Move a Box of a deployment to `state` if it is in one of `only_from` (checked in the same
        transaction: the cloud's threads and `boxcloud` processes share the table). With `cmd_id`, the
        update command sent to it (and the time it was sent). `detail` None keeps the detail.

        Returns:
            whether the Box moved.
        """
        b = deployment_boxes.c
        values: dict[str, object] = {"state": state, "updated": now}
        if detail is not None:
            values["detail"] = detail
        if cmd_id is not None:
            values |= {"cmd_id": cmd_id, "sent": now}
        with self._tx() as db:
            return db.execute(deployment_boxes.update().where(b.deployment == dep_id, b.box_id == box_id,
                                                              b.state.in_(list(only_from)))
                              .values(values)).rowcount > 0

    def put_ota_event(self, dep_id: str, box_id: str, doc: dict[str, object], now: float) -> None:
        """Keep the latest `ota` event of a Box in a deployment."""
        with self._tx() as db:
            db.execute(_OTA_EVENT(db), {"deployment": dep_id, "box_id": box_id, "received": now,
                                        "doc": json.dumps(doc)})

    def ota_events(self, dep_id: str) -> dict[str, tuple[float, dict[str, object]]]:
        """Box -> (time received, document) of the latest `ota` event of each Box in a deployment."""
        e = ota_events.c
        with self._read() as db:
            return {str(b): (float(t), json.loads(d)) for b, t, d in db.execute(
                sa.select(e.box_id, e.received, e.doc).where(e.deployment == dep_id))}


def _reached(scope: BoxScope) -> sa.ColumnElement[bool]:
    """A deployment has Boxes, and none out of the scope's reach."""
    b = deployment_boxes.c
    reached = sa.select(boxes.c.box_id).where(scope.where())
    return sa.and_(sa.exists().where(b.deployment == deployments.c.id),
                   ~sa.exists().where(b.deployment == deployments.c.id, b.box_id.not_in(reached)))
