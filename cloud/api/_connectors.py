"""Routes of the users' API on connectors (webhooks): create, list, confirm, rotate the signing
secret, delete; the dead letters and their replay.

A connector belongs to an account and acts as one of its service accounts: it sends only the
data of the Boxes that service account may read (`box.data.read`, its role bindings, read again
at every pass of the worker: a binding removed stops the data at once). Nobody makes a connector
that sees more than they may see themselves: the service account's reach for `box.data.read`
and `box.command.send` must be within the caller's. Secrets (the signing secret, a Basic
password, an OAuth client secret) are taken or shown once and stored sealed
(`cloud.api._secrets.Seeds`); the endpoint's URL is checked at once (`cloud.hooks.targets`:
https, an allowed port, no address of the platform's inside) and again at every connection.
An endpoint receives data only once it has answered the confirmation request (POST
/v1/connectors/{id}/confirm) with its token. Every change is audited.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Literal

from fastapi import FastAPI, Path, Response
from pydantic import BaseModel, Field

from cloud.api._auth import Caller
from cloud.api._mqtt_connectors import MqttFields, mqtt_config, mqtt_status
from cloud.api.app import Auth, Ctx, Cursor, Limit, after, page
from cloud.api.errors import ApiError
from cloud.hooks import policy, signing, targets
from cloud.hooks.errors import TargetRefusedError
from cloud.store import BoxScope, ConnectorRow

MAX_ID = 2**53
PathId = Annotated[int, Path(ge=1, le=MAX_ID)]
ROTATION_S = 86400.0  # the previous signing secret stays valid this long after a rotation
REACH = ("box.data.read", "box.command.send")


class ConnectorIn(MqttFields):
    name: str = Field(min_length=1, max_length=100)
    kind: Literal["webhook", "mqtt"] = "webhook"
    service_account_id: int = Field(ge=1, le=MAX_ID, description="the service account it acts as")
    url: str = Field("", max_length=targets.MAX_URL,
                     description="webhook: https://, port 443 or 8443, a public address")
    auth: Literal["none", "basic", "oauth", "certificate"] = "none"
    username: str = Field("", max_length=200, description="basic")
    password: str = Field("", max_length=1000, description="basic: shown never again")
    token_url: str = Field("", max_length=targets.MAX_URL, description="oauth: the token endpoint (https)")
    client_id: str = Field("", max_length=200, description="oauth")
    client_secret: str = Field("", max_length=1000, description="oauth: shown never again")
    scope: str = Field("", max_length=500, description="oauth: the scope asked for, if any")
    points: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list, max_length=100, description="shell patterns of the points sent (none: all)")


class ReplayIn(BaseModel):
    ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] | None = Field(None, max_length=1000,
                                                                     description="dead letters (none: all)")


def _public(c: ConnectorRow, depth: dict[str, object] | None = None) -> dict[str, object]:
    out: dict[str, object] = {"id": c.id, "name": c.name, "kind": c.kind, "service_account_id": c.service_account_id,
                              "state": c.state, "last_error": c.last_error, "failing_since": c.failing_since,
                              "delivered": c.delivered, "created": c.created, "breaker": _breaker(c),
                              **c.config}
    if depth is not None:
        out["outbox"] = depth
    return out


def _breaker(c: ConnectorRow) -> dict[str, object]:
    """The circuit breaker as the worker left it (kept in the database)."""
    failures, until, _ = c.breaker
    tripped = failures >= policy.TRIP_AFTER
    state = "closed" if not tripped else "open" if time.time() < until else "half-open"
    return {"state": state, "failures": failures, "open_until": until if tripped else None}


def covers(mine: BoxScope, theirs: BoxScope) -> bool:
    """Whether one reach holds another (conservatively: tags within tags, ids within ids or tags
    are not compared through the Boxes: a narrower binding is asked for then)."""
    if mine.everything:
        return True
    if theirs.everything:
        return False
    return theirs.tags <= mine.tags and theirs.box_ids <= mine.box_ids


def add_routes(app: FastAPI, ctx: Ctx) -> None:  # noqa: PLR0915 - one route after the other
    store = ctx.store

    def need(caller: Caller, permission: str) -> None:
        ctx.need(caller, permission)

    def owned(caller: Caller, cid: int, c: ConnectorRow | None) -> ConnectorRow:
        """`c`, the connector `cid` as read, if it is the caller's account's; else a 404."""
        if c is None or c.account_id != caller.account_id:
            raise ApiError(404, f"no connector {cid} here")
        return c

    def mine(caller: Caller, cid: int) -> ConnectorRow:
        return owned(caller, cid, store.connector(cid))

    def checked(url: str, what: str) -> str:
        try:
            return targets.parse(url, ctx.hook_reach).url
        except TargetRefusedError as e:
            raise ApiError(422, f"{what}: {e}") from None

    @app.get("/v1/connectors", tags=["connectors"], summary="the account's connectors (connector.read)")
    def list_connectors(caller: Auth, limit: Limit = 100, cursor: Cursor = None) -> dict[str, object]:
        need(caller, "connector.read")
        rows = store.connectors(caller.account_id, after(cursor, 0), limit + 1)
        return page([_public(c) for c in rows], limit, lambda c: c["id"])

    @app.post("/v1/connectors", tags=["connectors"], status_code=201,
              summary="a new webhook connector acting as a service account; its signing secret, shown once "
                      "(connector.manage)")
    def add_connector(caller: Auth, body: ConnectorIn) -> dict[str, object]:
        need(caller, "connector.manage")
        sa = store.user(body.service_account_id)
        if sa is None or sa.account_id != caller.account_id or sa.kind != "service":
            raise ApiError(400, f"user {body.service_account_id} is not a service account of this account")
        theirs = ctx.auth.grants_of(sa)
        beyond = [p for p in REACH if not covers(caller.grants.scope(p), theirs.scope(p))]
        if beyond:
            ctx.audit(caller, "denied", "escalation", "denied", permissions=beyond)
            raise ApiError(403, "the service account reaches Boxes you do not, for: " + ", ".join(beyond))
        if body.kind == "mqtt":
            return add_mqtt(caller, body, sa.id, sa.name)
        config: dict[str, object] = {"url": checked(body.url, "url"), "auth": body.auth, "points": body.points}
        sealed: dict[str, object] = {"signing": [signing.new_secret()], "old_until": 0}
        if body.auth == "basic":
            if not body.username or not body.password:
                raise ApiError(400, "basic authentication needs a username and a password")
            config["username"], sealed["password"] = body.username, body.password
        elif body.auth == "oauth":
            if not body.client_id or not body.client_secret or not body.token_url:
                raise ApiError(400, "oauth needs token_url, client_id and client_secret")
            config |= {"token_url": checked(body.token_url, "token_url"), "client_id": body.client_id,
                       "scope": body.scope}
            sealed["client_secret"] = body.client_secret
        cid = store.add_connector(caller.account_id, body.name, body.kind, service_account_id=sa.id, config=config,
                                  sealed=ctx.seeds.seal(json.dumps(sealed)))
        ctx.audit(caller, "connector.create", f"connector:{cid}", name=body.name, url=config["url"],
                  service_account=sa.name, auth=body.auth)
        row = store.connector(cid)
        assert row is not None
        return _public(row) | {"signing_secret": sealed["signing"][0],  # type: ignore[index]
                               "next": f"POST /v1/connectors/{cid}/confirm: the endpoint must answer with the token"}

    def add_mqtt(caller: Caller, body: ConnectorIn, sa_id: int, sa_name: str) -> dict[str, object]:
        """An MQTT connector: enabled at once (the broker's TLS and credentials are the customer's)."""
        config, sealed = mqtt_config(body, body.auth, body.username, body.password, body.points, reach=ctx.mqtt_reach)
        cid = store.add_connector(caller.account_id, body.name, "mqtt", service_account_id=sa_id, config=config,
                                  sealed=ctx.seeds.seal(json.dumps(sealed)))
        store.update_connector(cid, expect_state="unconfirmed", state="enabled")
        ctx.audit(caller, "connector.create", f"connector:{cid}", name=body.name, kind="mqtt",
                  broker=f"{config['host']}:{config['port']}", service_account=sa_name, auth=body.auth)
        got = store.mqtt_connector(cid)
        assert got is not None
        return _public(got[0]) | mqtt_status(*got)

    @app.get("/v1/connectors/{connector_id}", tags=["connectors"],
             summary="a connector: state, last error, items delivered and waiting (connector.read)")
    def get_connector(caller: Auth, connector_id: PathId) -> dict[str, object]:
        need(caller, "connector.read")
        row, link = store.mqtt_connector(connector_id) or (None, None)  # with its link's state, as of one moment
        c = owned(caller, connector_id, row)
        if c.kind == "mqtt":
            return _public(c) | mqtt_status(c, link)
        return _public(c, store.outbox_depth(c.id))

    @app.delete("/v1/connectors/{connector_id}", tags=["connectors"], status_code=204,
                summary="delete a connector and what it had not delivered (connector.manage)")
    def delete_connector(caller: Auth, connector_id: PathId) -> Response:
        need(caller, "connector.manage")
        c = mine(caller, connector_id)
        store.delete_connector(c.id)
        store.mqtt_forget(c.id)
        ctx.audit(caller, "connector.delete", f"connector:{c.id}", name=c.name)
        return Response(status_code=204)

    @app.post("/v1/connectors/{connector_id}/confirm", tags=["connectors"], status_code=202,
              summary="send the confirmation request; enabled once the endpoint answers its token "
                      "(connector.manage)")
    def confirm(caller: Auth, connector_id: PathId) -> dict[str, object]:
        need(caller, "connector.manage")
        c = mine(caller, connector_id)
        if c.kind == "mqtt":
            raise ApiError(409, f"connector {c.id} is an MQTT connector: it needs no confirmation")
        if c.state not in ("unconfirmed", "disabled"):
            raise ApiError(409, f"connector {c.id} is {c.state}")
        store.update_connector(c.id, expect_state=c.state, state="confirming", last_error="")
        ctx.audit(caller, "connector.confirm.request", f"connector:{c.id}")
        return {"id": c.id, "state": "confirming"}

    @app.post("/v1/connectors/{connector_id}/rotate", tags=["connectors"],
              summary="a new signing secret, shown once; the previous one signs too for a day (connector.manage)")
    def rotate(caller: Auth, connector_id: PathId) -> dict[str, object]:
        need(caller, "connector.manage")
        c = mine(caller, connector_id)
        if c.kind == "mqtt":
            raise ApiError(409, f"connector {c.id} is an MQTT connector: it signs nothing")
        sealed = json.loads(ctx.seeds.open(c.secrets) or "{}")
        new = signing.new_secret()
        sealed["signing"] = [new, *sealed.get("signing", [])[:1]]
        sealed["old_until"] = time.time() + ROTATION_S
        store.update_connector(c.id, secrets=ctx.seeds.seal(json.dumps(sealed)))
        ctx.audit(caller, "connector.rotate", f"connector:{c.id}")
        return {"id": c.id, "signing_secret": new, "previous_valid_until": sealed["old_until"]}

    @app.get("/v1/connectors/{connector_id}/dead", tags=["connectors"],
             summary="the dead letters: deliveries given up after about a day of failures (connector.read)")
    def dead(caller: Auth, connector_id: PathId, limit: Limit = 100, cursor: Cursor = None) -> dict[str, object]:
        need(caller, "connector.read")
        c = mine(caller, connector_id)
        rows = store.deliveries(c.id, "dead", after(cursor, 0), limit + 1)
        return page([{"id": d.id, "items": d.items, "attempts": d.attempts, "first_tried": d.created,
                      "last_error": d.last_error} for d in rows], limit, lambda d: d["id"])

    @app.post("/v1/connectors/{connector_id}/replay", tags=["connectors"],
              summary="try dead letters again, with the same webhook-id (connector.manage)")
    def replay(caller: Auth, connector_id: PathId, body: ReplayIn) -> dict[str, object]:
        need(caller, "connector.manage")
        c = mine(caller, connector_id)
        n = store.replay(c.id, body.ids, time.time())
        ctx.audit(caller, "connector.replay", f"connector:{c.id}", deliveries=n)
        return {"id": c.id, "replayed": n}
