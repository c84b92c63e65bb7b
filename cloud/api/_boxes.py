"""Routes of the users' API on Boxes: status and tags, revocation, data (latest, history,
aggregates, JSON or CSV), configurations, commands, alerts (and their acknowledgement, with a note:
who acknowledged it, when and why are kept with the alert, and in the audit trail).

The reads users make most (latest values, history) answer a `JSONResponse` made in the route's
thread: FastAPI would otherwise run its `jsonable_encoder` over the document on the event loop
(300 µs for 25 points, every other connection waiting).

Every route names the permission it needs; a Box outside the caller's reach for that permission
is a 404 worded as for a Box that does not exist (nothing says it does), and the lists are filtered
in the database (`cloud.store.BoxScope`).
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import Body, FastAPI, Path, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from cloud.api._auth import Caller
from cloud.api.app import Auth, Ctx, Cursor, Limit, after, page
from cloud.api.errors import ApiError
from cloud.store import Alert, BoxRow

POINT = r"^[A-Za-z0-9_.:/-]{1,128}$"
MAX_RANGE = timedelta(days=366)
MAX_POINTS = 50
MAX_CONFIG = 256 * 1024


class Tags(BaseModel):
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(min_length=1, max_length=32)


class ConfigIn(BaseModel):
    toml: str = Field(max_length=MAX_CONFIG, description="the whole configuration (TOML)")
    allow_empty: bool = Field(False, description="a configuration without points is refused unless this is set")


class AckIn(BaseModel):
    note: str = Field(min_length=1, max_length=500, description="what was seen or done (kept with the alert)")
    close: bool = Field(False, description="also close it (else the monitor closes it when the cause is gone)")


class CommandIn(BaseModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_.-]*$")
    args: dict[str, Any] = Field(default_factory=dict, max_length=32)
    ttl_s: int = Field(300, ge=5, le=86400, description="the command expires unless sent within this")


def _box(row: BoxRow, tags: list[str], full: bool = False) -> dict[str, object]:
    out: dict[str, object] = {"id": row.box_id, "online": row.online, "status_since": row.status_ts,
                              "status_reason": row.status_reason, "last_seen": row.last_seen,
                              "version": row.version, "revoked": row.revoked, "tags": tags}
    if full:
        out |= {"serial": row.serial, "enrolled": row.enrolled, "certificate": {
            "serial": str(row.cert_serial), "not_after": row.cert_not_after}}
    return out


def _csv(header: list[str], rows: list[list[object]]) -> Response:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return Response(buf.getvalue(), media_type="text/csv; charset=utf-8")


def add_routes(app: FastAPI, ctx: Ctx) -> None:  # noqa: PLR0915 - one route after the other
    store = ctx.store

    def reach(caller: Caller, box_id: str, permission: str) -> None:
        """The Box is within the caller's reach for the permission, else 404 (and the denial is audited)."""
        if not store.in_scope(caller.grants.scope(permission), box_id):
            if store.box_account(box_id) == caller.account_id:  # a Box of its account: a denial worth a record
                ctx.audit(caller, "denied", f"box:{box_id}", "denied", permission=permission)
            raise ApiError(404, f"no Box {box_id!r} here")


    @app.get("/v1/boxes", tags=["boxes"], summary="the Boxes the caller may see (box.read)")
    def list_boxes(caller: Auth, limit: Limit = 100, cursor: Cursor = None) -> dict[str, object]:
        ids = store.visible_boxes(caller.grants.scope("box.read"), after(cursor, ""), limit + 1)
        tags = store.tags()
        rows = [_box(r, tags.get(r.box_id, [])) for r in (store.box(i) for i in ids) if r is not None]
        return page(rows, limit, lambda b: b["id"])

    @app.get("/v1/boxes/{box_id}", tags=["boxes"], summary="a Box: status, tags, certificate (box.read)")
    def get_box(caller: Auth, box_id: str) -> dict[str, object]:
        reach(caller, box_id, "box.read")
        row = store.box(box_id)
        if row is None:
            raise ApiError(404, f"no Box {box_id!r} here")
        return _box(row, store.tags().get(box_id, []), full=True)

    @app.post("/v1/boxes/{box_id}/tags", tags=["boxes"], summary="tag a Box (box.manage)")
    def tag_box(caller: Auth, box_id: str, body: Tags) -> dict[str, object]:
        reach(caller, box_id, "box.manage")
        ctx.fleet.tag(box_id, body.tags)
        ctx.audit(caller, "box.tag", f"box:{box_id}", tags=body.tags)
        return {"id": box_id, "tags": store.tags().get(box_id, [])}

    @app.delete("/v1/boxes/{box_id}/tags/{tag}", tags=["boxes"], summary="untag a Box (box.manage)")
    def untag_box(caller: Auth, box_id: str, tag: str) -> dict[str, object]:
        reach(caller, box_id, "box.manage")
        ctx.fleet.untag(box_id, [tag])
        ctx.audit(caller, "box.untag", f"box:{box_id}", tag=tag)
        return {"id": box_id, "tags": store.tags().get(box_id, [])}

    @app.post("/v1/boxes/{box_id}/revoke", tags=["boxes"], summary="revoke a Box's certificate (box.manage)")
    def revoke_box(caller: Auth, box_id: str) -> dict[str, object]:
        reach(caller, box_id, "box.manage")
        cut = ctx.fleet.revoke(box_id)
        ctx.audit(caller, "box.revoke", f"box:{box_id}", session_cut=cut)
        return {"id": box_id, "revoked": True, "session_cut": cut}

    @app.get("/v1/boxes/{box_id}/latest", tags=["data"], summary="each point's latest value (box.data.read)",
             responses={200: {"content": {"application/json": {}, "text/csv": {}}}})
    def latest(caller: Auth, box_id: str, format: Literal["json", "csv"] = "json") -> Any:
        reach(caller, box_id, "box.data.read")
        rows = store.latest(box_id)
        # report on change: the newest poll that found the value unchanged
        seen = store.confirmed(box_id, {p: t for p, t, *_ in rows})
        if format == "csv":
            return _csv(["point", "ts_ms", "value", "quality", "unit", "confirmed_ms"],
                        [[*r, seen.get(r[0], r[1])] for r in rows])
        return JSONResponse({"box": box_id, "points": [{"point": p, "ts_ms": t, "value": v, "quality": q, "unit": u,
                                                        "confirmed_ms": seen.get(p, t)} for p, t, v, q, u in rows]})

    @app.get("/v1/boxes/{box_id}/history", tags=["data"],
             summary="points' samples over a time range, paged; with `bucket_s`, aggregates (box.data.read)",
             responses={200: {"content": {"application/json": {}, "text/csv": {}}}})
    def history(caller: Auth, box_id: str,  # noqa: PLR0917 - the query's parameters
                point: Annotated[list[Annotated[str, Field(pattern=POINT)]], Query(max_length=MAX_POINTS)] = [],  # noqa: B006
                since: datetime | None = None, until: datetime | None = None,
                bucket_s: Annotated[int | None, Query(ge=1, le=86400 * 31)] = None,
                format: Literal["json", "csv"] = "json",
                limit: Limit = 1000, cursor: Cursor = None) -> Any:
        reach(caller, box_id, "box.data.read")
        end = _utc(until) if until else datetime.now(UTC)
        start = _utc(since) if since else end - timedelta(hours=1)
        if not start < end or end - start > MAX_RANGE:
            raise ApiError(400, f"since must be before until, at most {MAX_RANGE.days} days apart")
        lo, hi = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
        mark = after(cursor, [0, ""])
        key = (mark[0], mark[1]) if cursor else None
        if bucket_s is None:
            rows: list[Any] = store.history(box_id, point, lo, hi, after=key, limit=limit + 1)
            header = ["point", "ts_ms", "value", "quality"]
            items = [dict(zip(header, r, strict=True)) for r in rows]
            ordering = lambda r: [r["ts_ms"], r["point"]]  # noqa: E731
        else:
            rows = store.aggregates(box_id, point, lo, hi, bucket_s * 1000, after=key, limit=limit + 1)
            header = ["point", "start_ms", "count", "min", "max", "mean"]
            items = [dict(zip(header, r, strict=True)) for r in rows]
            ordering = lambda r: [r["start_ms"], r["point"]]  # noqa: E731
        out = page(items, limit, ordering)
        if format == "csv":
            resp = _csv(header, [[i[h] for h in header] for i in out["items"]])  # type: ignore[attr-defined]
            if out["next"]:
                resp.headers["X-Next-Cursor"] = str(out["next"])
            return resp
        return JSONResponse({"box": box_id, "since": start.isoformat(), "until": end.isoformat(), "bucket_s": bucket_s,
                             **out})

    @app.get("/v1/boxes/{box_id}/config", tags=["configuration"],
             summary="a Box's configurations, newest first, and what it answered (box.config.read)")
    def configs(caller: Auth, box_id: str, limit: Annotated[int, Query(ge=1, le=100)] = 10) -> dict[str, object]:
        reach(caller, box_id, "box.config.read")
        return {"box": box_id, "items": [
            {"version": c.version, "toml": c.toml, "created": c.created, "published": c.published,
             "status": c.status, "reasons": c.reasons, "answered": c.answered}
            for c in store.configs(box_id, limit)]}

    @app.post("/v1/boxes/{box_id}/config", tags=["configuration"], status_code=202,
              summary="push a whole configuration; the Box answers later (box.config.write)")
    def push_config(caller: Auth, box_id: str, body: Annotated[ConfigIn, Body()]) -> dict[str, object]:
        reach(caller, box_id, "box.config.write")
        version = ctx.fleet.push_config(box_id, body.toml, allow_empty=body.allow_empty)
        ctx.audit(caller, "config.push", f"box:{box_id}", version=version, bytes=len(body.toml))
        return {"box": box_id, "version": version, "status": "queued"}

    @app.post("/v1/boxes/{box_id}/commands", tags=["commands"], status_code=202,
              summary="send a command; its result comes later (box.command.send)")
    def send(caller: Auth, box_id: str, body: CommandIn) -> dict[str, object]:
        reach(caller, box_id, "box.command.send")
        cmd_id = ctx.fleet.send_command(box_id, body.name, body.args, body.ttl_s)
        ctx.audit(caller, "command.send", f"box:{box_id}", command=cmd_id, name=body.name)
        return {"box": box_id, "id": cmd_id, "status": "queued"}

    def _cmd(c: Any) -> dict[str, object]:
        return {"id": c.id, "name": c.name, "args": c.args, "created": c.created, "expires": c.expires,
                "sent": c.published, "status": c.status or ("sent" if c.published else "queued"), "reply": c.reply,
                "answered": c.answered}

    @app.get("/v1/boxes/{box_id}/commands", tags=["commands"], summary="a Box's latest commands (box.command.send)")
    def commands(caller: Auth, box_id: str, limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, object]:
        reach(caller, box_id, "box.command.send")
        return {"box": box_id, "items": [_cmd(c) for c in store.commands(box_id, limit)]}

    @app.get("/v1/boxes/{box_id}/commands/{cmd_id}", tags=["commands"],
             summary="a command and its result (box.command.send)")
    def command(caller: Auth, box_id: str, cmd_id: str) -> dict[str, object]:
        reach(caller, box_id, "box.command.send")
        c = store.command(cmd_id)
        if c is None or c.box_id != box_id:
            raise ApiError(404, f"no command {cmd_id!r} for Box {box_id!r}")
        return _cmd(c)

    @app.get("/v1/alerts", tags=["alerts"], summary="alerts of the Boxes the caller may see (box.read), and of "
             "the account's connectors (connector.read: `box` is connector:<id>)")
    def alerts(caller: Auth, include_closed: bool = False, limit: Limit = 100,
               cursor: Cursor = None) -> dict[str, object]:
        hooks = caller.account_id if caller.grants.can("connector.read") else None
        rows = store.alerts_in(caller.grants.scope("box.read"), include_closed, after(cursor, 0), limit + 1, hooks)
        items = [_alert(Alert.of(r)) for r in rows]
        return page(items, limit, lambda a: a["id"])

    @app.post("/v1/alerts/{alert_id}/ack", tags=["alerts"],
              summary="acknowledge an open alert with a note, kept with it and in the audit trail (box.alert.ack)",
              description="The alert keeps its first acknowledgement (`acked`, `acked_by`, `ack_note`); with "
                          "`close`, an acknowledged alert can be closed (the close is in the audit trail).")
    def ack(caller: Auth, alert_id: Annotated[int, Path(ge=1, le=2**53)], body: AckIn) -> dict[str, object]:
        a = store.alert(alert_id)
        if a is not None and a.box_id.startswith("connector:"):  # a connector's: connector.manage over the account
            number = a.box_id.split(":", 1)[1]
            c = store.connector(int(number)) if number.isdigit() and len(number) < 16 else None
            if c is None or c.account_id != caller.account_id:
                raise ApiError(404, f"no alert {alert_id} here")
            ctx.need(caller, "connector.manage")
        elif a is None or not store.in_scope(caller.grants.scope("box.alert.ack"), a.box_id):
            if a is not None and store.box_account(a.box_id) == caller.account_id:
                ctx.audit(caller, "denied", f"alert:{alert_id}", "denied", permission="box.alert.ack")
            raise ApiError(404, f"no alert {alert_id} here")
        if a.closed is not None or (a.acked is not None and not body.close):
            raise ApiError(409, f"alert {alert_id} is {'closed' if a.closed is not None else 'acknowledged'} already")
        if not store.ack_alert(alert_id, body.close, caller.actor, body.note):
            raise ApiError(409, f"alert {alert_id} changed meanwhile: read it again")
        ctx.audit(caller, "alert.ack", f"alert:{alert_id}", box=a.box_id, kind=a.kind, subject=a.subject,
                  note=body.note, closed=body.close)
        now = store.alert(alert_id)
        assert now is not None
        return _alert(now)



def _alert(a: Alert) -> dict[str, object]:
    return {"id": a.id, "box": a.box_id, "kind": a.kind, "subject": a.subject, "message": a.message,
            "opened": a.opened, "closed": a.closed, "acked": a.acked, "acked_by": a.acked_by, "ack_note": a.ack_note}


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


