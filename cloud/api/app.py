"""The users' API as a FastAPI app: authentication on every route, RFC 9457 problems, paging.

`make_app(ctx)` builds the app; the routes are in `_boxes` (Boxes, data, configurations,
commands, alerts), `_deployments` (releases, deployments) and `_people` (me and 2FA, users, keys,
roles, bindings, audit, the account).
Every route is a plain function that FastAPI runs in its thread pool: the store's reads and
Argon2 never run on the event loop. A route's `caller: Auth` is authenticated in the same worker
thread as the route's body, just before it (`_Route`): one hand-over to the thread pool a
request, not one for the credentials and another for the route (each costs a wake-up of a worker
thread and one of the loop). A request without credentials is refused on the loop, before anything
else is read. Every error, ours or FastAPI's (a bad parameter, an unknown route), is
``application/problem+json`` with the status, a title and a detail saying what was wrong; an
unexpected exception is a 500 whose detail says nothing of the inside (it is logged).

The OpenAPI schema is at /v1/openapi.json and its pages at /v1/docs: they need no credentials
(they describe the API, nothing in it).
"""

from __future__ import annotations

import base64
import binascii
import functools
import inspect
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from cloud.api._auth import CHALLENGE, OTP_HEADER, Authenticator, Caller
from cloud.api._secrets import Seeds
from cloud.api.errors import ApiError, title
from cloud.deploy import Deployments
from cloud.errors import CloudError, StoreError, UnknownError
from cloud.hooks import targets
from cloud.mqttconn.link import PUBLIC_ONLY as MQTT_PUBLIC_ONLY
from cloud.store import Store

log = logging.getLogger("boxcloud.api")

MAX_PAGE = 1000
PROBLEM = "application/problem+json"


class Fleet(Protocol):
    """What the API asks of the running cloud (`cloud.platform.Cloud`)."""

    deployer: Deployments

    def push_config(self, box_id: str, toml_text: str, *, check: bool = True, allow_empty: bool = False) -> int: ...
    def send_command(self, box_id: str, name: str, args: dict[str, object], ttl_s: float = 300) -> str: ...
    def tag(self, box_id: str, tags: Sequence[str]) -> None: ...
    def untag(self, box_id: str, tags: Sequence[str]) -> int: ...
    def revoke(self, box_id: str) -> bool: ...


@dataclass
class Ctx:
    """What the routes share."""

    store: Store
    fleet: Fleet
    auth: Authenticator
    seeds: Seeds
    hook_reach: targets.Reach = targets.PUBLIC_ONLY  # where webhooks may go (the operator's settings)
    mqtt_reach: targets.Reach = MQTT_PUBLIC_ONLY  # where MQTT connectors' brokers may be (the operator's settings)

    def audit(self, caller: Caller, action: str, target: str, outcome: str = "ok", **detail: object) -> None:
        self.store.audit(caller.account_id, caller.actor, action, target, outcome, **detail)

    def need(self, caller: Caller, permission: str) -> None:
        """An account permission, else 403 (and the denial is audited)."""
        if not caller.grants.can(permission):
            self.audit(caller, "denied", permission, "denied")
            raise ApiError(403, f"this needs the permission {permission} over the account")


def problem(status: int, detail: str, headers: dict[str, str] | None = None, **extra: object) -> JSONResponse:
    return JSONResponse({"type": "about:blank", "title": title(status), "status": status, "detail": detail, **extra},
                        status_code=status, media_type=PROBLEM, headers=headers)


def make_app(ctx: Ctx) -> FastAPI:
    """The users' API over one context."""
    from cloud.api import _boxes, _connectors, _deployments, _people  # the routes need `Ctx` and the dependencies below

    app = FastAPI(title="boxcloud API", version="1", openapi_url="/v1/openapi.json", docs_url="/v1/docs",
                  redoc_url=None, description="The platform's users: Boxes, their data, configurations, "
                  "commands and alerts; releases and deployments; users, roles, API keys, 2FA and the audit "
                  "trail. Publishing a release stays the operator's command on the cloud host ('boxcloud "
                  "release publish': it signs with keys kept there). Authenticate with HTTP Basic "
                  f"(and the {OTP_HEADER} header with 2FA) or 'Authorization: Bearer boxk_...'.")

    @app.exception_handler(ApiError)
    async def api_error(_: Request, e: ApiError) -> JSONResponse:
        return problem(e.status, str(e), e.headers, **e.extra)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, e: RequestValidationError) -> JSONResponse:
        errors = [{"where": ".".join(str(x) for x in err.get("loc", ())), "problem": str(err.get("msg", ""))}
                  for err in e.errors()[:20]]
        said = "; ".join(f"{x['where']}: {x['problem']}" for x in errors[:3])
        return problem(400, f"malformed request: {said}", errors=errors)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, e: HTTPException) -> JSONResponse:
        detail = {404: "no such resource", 405: "this resource does not take this method"}.get(e.status_code,
                                                                                               str(e.detail))
        return problem(e.status_code, detail, dict(e.headers or {}))

    @app.exception_handler(UnknownError)
    async def unknown(_: Request, e: UnknownError) -> JSONResponse:
        return problem(404, str(e).split(" ('boxcloud", 1)[0])

    @app.exception_handler(StoreError)
    async def store_error(_: Request, e: StoreError) -> JSONResponse:
        log.error("request failed: %s", e)
        return problem(503, "the platform cannot do this right now: try again later")

    @app.exception_handler(CloudError)
    async def refused(_: Request, e: CloudError) -> JSONResponse:
        reasons = getattr(e, "reasons", None)
        return problem(422, str(e), **({"reasons": reasons} if reasons else {}))

    @app.exception_handler(Exception)
    async def bug(_: Request, e: Exception) -> JSONResponse:
        log.exception("unexpected error in the API")
        return problem(500, "an unexpected error: it was logged")

    app.state.ctx = ctx
    app.router.route_class = _Route
    _boxes.add_routes(app, ctx)
    _deployments.add_routes(app, ctx)
    _people.add_routes(app, ctx)
    _connectors.add_routes(app, ctx)
    app.openapi = lambda: _schema(app)  # type: ignore[method-assign]
    return app


_PROBLEMS = {400: "malformed request", 401: "no or wrong credentials", 403: "not allowed",
             404: "not found, or outside the caller's reach", 409: "conflicts with the present state",
             411: "no Content-Length", 413: "body too large", 422: "refused (the detail says why)",
             429: "too many failed logins: wait Retry-After seconds", 503: "the platform cannot do it now"}


def _schema(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, with what every operation may answer: problem documents (RFC 9457) and
    its basic or bearer security; FastAPI's own 422 (a bad parameter) is a 400 problem here."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    problem_schema = {"type": "object", "required": ["type", "title", "status", "detail"], "properties": {
        "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
        "detail": {"type": "string"}}, "additionalProperties": True}
    comps = doc.setdefault("components", {})
    comps.setdefault("schemas", {})["Problem"] = problem_schema
    comps["securitySchemes"] = {"basic": {"type": "http", "scheme": "basic"},
                                "apiKey": {"type": "http", "scheme": "bearer", "bearerFormat": "boxk_..."}}
    for methods in doc.get("paths", {}).values():
        for op in methods.values():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            for status, what in _PROBLEMS.items():
                responses.setdefault(str(status), {"description": what, "content": {
                    PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}})
            op["security"] = [{"basic": []}, {"apiKey": []}]
    comps["schemas"].pop("HTTPValidationError", None)
    comps["schemas"].pop("ValidationError", None)
    app.openapi_schema = doc
    return doc


@dataclass(frozen=True)
class Credentials:
    """What a request says of its caller, read on the loop (no I/O); `check` runs in the route's thread."""

    auth: Authenticator
    authorization: str
    otp: str | None
    source: str
    path: str

    def check(self) -> Caller:
        """Who calls (or 401/429), and the 2FA an account requires."""
        who = self.auth.authenticate(self.authorization, self.otp, self.source)
        if who.must_enrol_2fa and not self.path.startswith("/v1/me"):
            raise ApiError(403, "your account requires two-factor authentication: enrol first "
                                "(POST /v1/me/2fa, then POST /v1/me/2fa/confirm)")
        return who


async def _credentials(request: Request) -> Credentials:
    """The dependency of every route but the docs: the credentials, checked by `_Route` in the route's
    thread; none at all is a 401 here, before the request's parameters or body are looked at."""
    authorization = request.headers.get("authorization")
    if not authorization:
        raise ApiError(401, "credentials required: HTTP Basic (user and password) or "
                            "'Authorization: Bearer <API key>'", headers=CHALLENGE)
    return Credentials(request.app.state.ctx.auth, authorization, request.headers.get(OTP_HEADER),
                       request.client.host if request.client else "?", request.url.path)


class _Route(APIRoute):
    """A route whose `caller: Auth` parameter is authenticated in the route's own worker thread."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, _authenticating(endpoint), **kwargs)


def _authenticating(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    params = inspect.signature(endpoint).parameters
    authed = [n for n, p in params.items() if p.annotation in ("Auth", Auth)]
    if authed != (["caller"] if "caller" in params else []):
        raise TypeError(f"{endpoint.__name__}: the caller is the parameter `caller: Auth`, and only it")
    if not authed:
        return endpoint
    if inspect.iscoroutinefunction(endpoint):
        raise TypeError(f"{endpoint.__name__}: a route with a caller is a plain function (run in a thread)")

    @functools.wraps(endpoint)
    def with_caller(*args: Any, caller: Credentials, **kwargs: Any) -> Any:
        return endpoint(*args, caller=caller.check(), **kwargs)

    return with_caller


# Declared a `Caller` for the routes' bodies: `_Route` turns the `Credentials` into one before the body runs.
Auth = Annotated[Caller, Depends(_credentials)]


# -- paging ---------------------------------------------------------------------------------------

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"items per page (1..{MAX_PAGE})")]
Cursor = Annotated[str | None, Query(max_length=400, description="the `next` of the page before")]


def page(items: list[Any], limit: int, key: Callable[[Any], object]) -> dict[str, object]:
    """A page of items (one more than `limit` was read: whether there is a next page)."""
    more = len(items) > limit
    items = items[:limit]
    nxt = base64.urlsafe_b64encode(json.dumps(key(items[-1])).encode()).decode() if more and items else None
    return {"items": items, "next": nxt}


def after(cursor: str | None, default: Any) -> Any:
    """The key a cursor carries (of the same type as `default`), or `default` without one."""
    if cursor is None:
        return default
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ApiError(400, "malformed cursor: pass the `next` of the page before, unchanged") from None
    if not _alike(value, default):
        raise ApiError(400, "malformed cursor: pass the `next` of the page before, unchanged")
    return value


def _alike(value: Any, default: Any) -> bool:
    """The same shape as the default: its type, ints within 53 bits, lists of the same types."""
    if type(value) is not type(default):
        return False
    if isinstance(value, int):
        return abs(value) <= 2**53
    if isinstance(value, list):
        return len(value) == len(default) and all(_alike(v, d) for v, d in zip(value, default, strict=True))
    return True
