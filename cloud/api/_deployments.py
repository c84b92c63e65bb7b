"""Routes of the users' API on Box software: the releases the platform can deploy, deployments in
waves to chosen Boxes or a tag, each Box's progress, the emergency stop.

The rules are `cloud.deploy`'s (the running cloud sends the waves); here, who may do what. A
deployment is within a caller's reach for a permission when every Box of it is (one Box out of
reach, and it is not found: 404, as a Box out of reach is); a new deployment names only Boxes in
the caller's reach for ``deployment.manage`` (a Box out of it is a 404 worded as for one that does
not exist), and a tag reaches only the tagged Boxes in that reach. Creations and stops are in the
audit trail of the accounts whose Boxes are in the deployment (`cloud.deploy` writes them, so that
the operator's are too), with the waves the running cloud starts.

Publishing a release is not here: it signs TUF metadata with keys kept on the operator's host,
which an API reachable from the Internet must never hold (`boxcloud release publish`).
"""

from __future__ import annotations

import logging
import time
from typing import Annotated

from fastapi import Body, FastAPI, Path
from pydantic import BaseModel, Field, model_validator

from cloud import deploy
from cloud import tufrepo as repository
from cloud.api._auth import Caller
from cloud.api.app import Auth, Ctx, Cursor, Limit, after, page
from cloud.api.errors import ApiError
from cloud.store import DeploymentBoxRow, DeploymentRow
from proto import names
from proto.commands import DEFAULT_HEALTH_S, MAX_HEALTH_S, MIN_HEALTH_S

log = logging.getLogger("boxcloud.api")

BOX_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
MAX_BOXES = 1000
MAX_BOX_TIMEOUT_S = 7 * 86400
DepId = Annotated[str, Path(min_length=1, max_length=64)]


class DeploymentIn(BaseModel):
    release: str = Field(min_length=1, max_length=200, description="the release's target name or its version "
                         "(GET /v1/releases)")
    version: str | None = Field(None, max_length=64, description="refused unless the release is this version")
    boxes: list[Annotated[str, Field(pattern=BOX_ID)]] | None = Field(
        None, min_length=1, max_length=MAX_BOXES, description="the Boxes, in order (the first ones go first)")
    tag: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$",
                            description="every unrevoked Box with this tag within your reach (instead of boxes)")
    waves: str = Field(deploy.DEFAULT_WAVES, min_length=1, max_length=200,
                       description="cumulative Box counts or percents of the Boxes")
    max_failures: str = Field("0", pattern=r"^\d{1,6}(\.\d{1,3})?%?$",
                              description="failures tolerated before it halts: a count or a percent")
    health_s: int = Field(DEFAULT_HEALTH_S, ge=MIN_HEALTH_S, le=MAX_HEALTH_S,
                          description="each Box's deadline to become healthy on the new version, else it rolls back")
    box_timeout_s: float = Field(deploy.DEFAULT_BOX_TIMEOUT_S, ge=deploy.MIN_BOX_TIMEOUT_S, le=MAX_BOX_TIMEOUT_S,
                                 description="a Box with no final answer this long after it was sent has failed")

    @model_validator(mode="after")
    def _one_selector(self) -> DeploymentIn:
        if (self.boxes is None) == (self.tag is None):
            raise ValueError("name the Boxes (boxes) or a tag (tag), not both and not neither")
        return self


STOP_REASON = "stopped through the API"


class StopIn(BaseModel):
    reason: str = Field(STOP_REASON, min_length=1, max_length=500)


def _deployment(d: DeploymentRow, boxes: list[DeploymentBoxRow]) -> dict[str, object]:
    return {"id": d.id, "status": d.status, "reason": d.reason, "release": d.target, "version": d.version,
            "selector": d.selector if "tag" in d.selector else {"boxes": len(boxes)}, "waves": d.waves,
            "max_failures": d.max_failures, "health_s": d.health_s, "box_timeout_s": d.box_timeout_s,
            "created": d.created, "updated": d.updated, "box_count": len(boxes),
            "wave": min((b.wave for b in boxes if b.state not in deploy.BOX_TERMINAL), default=None),
            "committed": sum(b.state == "committed" for b in boxes),
            "failed": sum(b.state in deploy.FAILURES for b in boxes)}


def add_routes(app: FastAPI, ctx: Ctx) -> None:
    store = ctx.store

    def reach(caller: Caller, dep_id: str, permission: str) -> DeploymentRow:
        """The deployment, if every Box of it is within the caller's reach for the permission; else 404
        (and the denial is audited when the deployment has Boxes of the caller's account)."""
        d = store.deployment_in(caller.grants.scope(permission), dep_id)
        if d is not None:
            return d
        if store.deployment(dep_id) is not None:
            ids = [b.box_id for b in store.deployment_boxes(dep_id)]
            if caller.account_id in store.accounts_of(ids):
                ctx.audit(caller, "denied", f"deployment:{dep_id}", "denied", permission=permission)
        raise ApiError(404, f"no deployment {dep_id!r} here")

    @app.get("/v1/releases", tags=["deployments"],
             summary="the releases the platform can deploy, oldest version first (release.read)",
             description="What the platform's TUF repository holds. Publishing a release signs TUF metadata with "
                         "keys kept on the operator's host: it is the operator's command on that host "
                         "('boxcloud release publish BUNDLE'), never an API call.")
    def releases(caller: Auth) -> dict[str, object]:
        if not caller.grants.anywhere("release.read"):
            ctx.audit(caller, "denied", "release.read", "denied")
            raise ApiError(403, "this needs the permission release.read")
        repo = ctx.fleet.deployer.repo
        if not (repo / "metadata" / "1.root.json").exists():  # a cloud made before it had a repository
            return {"items": [], "metadata_expires": {}}
        try:
            targets = repository.published_targets(repo)
            expires = {role: when.timestamp() for role, when in repository.expiries(repo).items()}
        except (OSError, ValueError) as e:  # the operator's repository, unreadable now: not the caller's fault
            log.error("cannot read the TUF repository %s: %s", repo, e)
            raise ApiError(503, "the platform cannot read its releases right now: try again later") from None
        ordered = sorted((t for t in targets.items() if names.VERSION.fullmatch(t[1][0])),
                         key=lambda t: names.version_key(t[1][0]))
        ordered += sorted(t for t in targets.items() if not names.VERSION.fullmatch(t[1][0]))
        items = [{"release": n, "version": v, "hardware": hw, "bytes": length} for n, (v, hw, length) in ordered]
        return {"items": items, "metadata_expires": expires}

    @app.get("/v1/deployments", tags=["deployments"],
             summary="the deployments whose every Box is in reach, newest first (deployment.read)")
    def deployments(caller: Auth, limit: Limit = 100, cursor: Cursor = None) -> dict[str, object]:
        mark = after(cursor, [0.0, ""])
        rows = store.deployments_in(caller.grants.scope("deployment.read"),
                                    (float(mark[0]), str(mark[1])) if cursor else None, limit + 1)
        docs: list[object] = [_deployment(d, store.deployment_boxes(d.id)) for d in rows[:limit]]
        return page(docs + rows[limit:], limit, lambda d: [d["created"], d["id"]])  # a row past the page: a next

    @app.post("/v1/deployments", tags=["deployments"], status_code=201,
              summary="deploy a release to chosen Boxes or a tag, in waves (deployment.manage)",
              description="The running cloud sends the first wave at once, the next when every Box of the one "
                          "before has finished and the failures are within max_failures; one failure more halts "
                          "it. The release must be published already (by the operator: 'boxcloud release publish').")
    def create(caller: Auth, body: Annotated[DeploymentIn, Body()]) -> dict[str, object]:
        try:
            d = ctx.fleet.deployer.create(
                body.release, boxes=body.boxes or (), tag=body.tag, version=body.version, waves=body.waves,
                max_failures=body.max_failures, health_s=body.health_s, box_timeout_s=body.box_timeout_s,
                now=time.time(), scope=caller.grants.scope("deployment.manage"), actor=caller.actor)
        except deploy.OutOfReachError as e:
            if store.box_account(e.box_id) == caller.account_id:
                ctx.audit(caller, "denied", f"box:{e.box_id}", "denied", permission="deployment.manage")
            raise ApiError(404, str(e)) from None
        except deploy.ConflictError as e:
            raise ApiError(409, "already in a running deployment: " + ", ".join(
                f"{b} ({d})" for b, d in e.conflicts) + " (POST /v1/deployments/ID/stop ends one)") from None
        return _deployment(d, store.deployment_boxes(d.id))

    @app.get("/v1/deployments/{dep_id}", tags=["deployments"],
             summary="a deployment and each Box's wave, state and last event (deployment.read)")
    def get(caller: Auth, dep_id: DepId) -> dict[str, object]:
        d = reach(caller, dep_id, "deployment.read")
        boxes = store.deployment_boxes(d.id)
        events = store.ota_events(d.id)
        return _deployment(d, boxes) | {"boxes": [
            {"box": b.box_id, "wave": b.wave, "state": b.state, "detail": b.detail, "sent": b.sent,
             "updated": b.updated, "last_event": ({"received": events[b.box_id][0], **events[b.box_id][1]}
                                                  if b.box_id in events else None)} for b in boxes]}

    @app.post("/v1/deployments/{dep_id}/stop", tags=["deployments"],
              summary="the emergency stop: no Box is sent it any more, downloads are aborted (deployment.manage)",
              description="A deployment that has ended already (completed, halted or stopped) is a 409 problem "
                          "saying so, with its `deployment_status` and `reason`: nothing changed.")
    def stop(caller: Auth, dep_id: DepId, body: Annotated[StopIn | None, Body()] = None) -> dict[str, object]:
        d = reach(caller, dep_id, "deployment.manage")
        reason = body.reason if body is not None else STOP_REASON
        try:
            d = ctx.fleet.deployer.stop(d.id, f"{reason} ({caller.actor})", time.time(), actor=caller.actor)
        except deploy.EndedError as e:
            raise ApiError(409, str(e), deployment_status=e.deployment.status,
                           reason=e.deployment.reason) from None
        return _deployment(d, store.deployment_boxes(d.id))
