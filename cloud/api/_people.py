"""Routes of the users' API on people and machines: me (password, 2FA), users and service accounts,
API keys, roles and bindings, the audit trail, the account's settings.

Nobody grants more than they hold: a custom role, a binding or an API key's scopes must be within
the caller's own account-wide permissions. Secrets (a password, a new key, a TOTP seed, recovery
codes) are taken or shown once, in the response that creates them, never again and never logged.
What changes credentials or rights needs a person (Basic, with 2FA when they have it), not a key.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import FastAPI, Path, Query, Response
from pydantic import BaseModel, Field

from cloud.api import _secrets
from cloud.api._auth import Caller
from cloud.api._authz import BUILTIN_ROLES, PERMISSIONS, SCOPE_KINDS, role_permissions, unknown_permissions
from cloud.api.app import Auth, Ctx, Cursor, Limit, after, page
from cloud.api.errors import ApiError
from cloud.errors import StoreError
from cloud.store import KeyRow, UserRow

NAME = r"^[A-Za-z0-9][A-Za-z0-9@._+-]{0,127}$"
MIN_PASSWORD = 12
MAX_KEY_DAYS = 365
MAX_ID = 2**53  # ids are 64-bit in the database; beyond, a request is malformed (not a database error)
RowId = Annotated[int, Field(ge=1, le=MAX_ID)]
PathId = Annotated[int, Path(ge=1, le=MAX_ID)]


class UserIn(BaseModel):
    name: str = Field(pattern=NAME, description="the login (unique on the platform), e.g. an e-mail address")
    kind: Literal["user", "service"] = "user"
    password: str | None = Field(None, min_length=MIN_PASSWORD, max_length=1024,
                                 description="a user's; a service account has none (API keys only)")


class PasswordIn(BaseModel):
    current: str = Field(max_length=1024)
    new: str = Field(min_length=MIN_PASSWORD, max_length=1024)


class CodeIn(BaseModel):
    code: str = Field(pattern=r"^\d{6}$")


class KeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    scopes: list[str] = Field(min_length=1, max_length=len(PERMISSIONS))
    expires_in_days: int = Field(90, ge=1, le=MAX_KEY_DAYS, description="mandatory: a key always expires")
    user_id: RowId | None = Field(None, description="a service account of the account (user.manage); default: me")


class RoleIn(BaseModel):
    permissions: list[str] = Field(min_length=1, max_length=len(PERMISSIONS))


class BindingIn(BaseModel):
    user_id: RowId
    role: str = Field(min_length=1, max_length=64)
    scope_kind: Literal["account", "tag", "box"] = "account"
    scope: str = Field("", max_length=64, description="the tag or the Box id ('' for the account)")


class AccountIn(BaseModel):
    require_2fa: bool


def _user(u: UserRow) -> dict[str, object]:
    return {"id": u.id, "name": u.name, "kind": u.kind, "two_factor": u.totp is not None, "created": u.created}


def _key(k: KeyRow) -> dict[str, object]:
    return {"id": k.id, "user_id": k.user_id, "name": k.name, "scopes": list(k.scopes), "created": k.created,
            "expires": k.expires, "revoked": k.revoked}


def add_routes(app: FastAPI, ctx: Ctx) -> None:  # noqa: PLR0915 - one route after the other
    store = ctx.store

    def need(caller: Caller, permission: str) -> None:
        ctx.need(caller, permission)

    def person(caller: Caller, what: str) -> None:
        if caller.key is not None:
            raise ApiError(403, f"{what} needs a person's credentials (Basic), not an API key")

    def within(caller: Caller, permissions: list[str]) -> None:
        unknown = unknown_permissions(permissions)
        if unknown:
            raise ApiError(400, f"unknown permission(s): {', '.join(unknown)} (GET /v1/roles lists them)")
        beyond = sorted(p for p in permissions if not caller.grants.can(p))
        if beyond:
            ctx.audit(caller, "denied", "escalation", "denied", permissions=beyond)
            raise ApiError(403, f"you cannot grant what you do not hold over the whole account: {', '.join(beyond)}")

    def member(caller: Caller, user_id: int) -> UserRow:
        u = store.user(user_id)
        if u is None or u.account_id != caller.account_id:
            raise ApiError(404, f"no user {user_id} here")
        return u

    # -- me ------------------------------------------------------------------------------------

    @app.get("/v1/me", tags=["me"], summary="who I am and what I may do")
    def me(caller: Auth) -> dict[str, object]:
        account = store.account(caller.account_id)
        return {"user": _user(caller.user),
                "account": {"id": caller.account_id, "name": account.name if account else "",
                            "require_2fa": bool(account and account.require_2fa)},
                "key": _key(caller.key) if caller.key else None, "permissions": caller.grants.names(),
                "must_enrol_2fa": caller.must_enrol_2fa}

    @app.post("/v1/me/password", tags=["me"], status_code=204, summary="change my password")
    def password(caller: Auth, body: PasswordIn) -> Response:
        person(caller, "changing a password")
        if not _secrets.check_password(caller.user.pw_hash, body.current):
            raise ApiError(403, "the current password is wrong")
        store.set_password(caller.user.id, _secrets.hash_password(body.new))
        ctx.audit(caller, "user.password", f"user:{caller.user.name}")
        return Response(status_code=204)

    @app.post("/v1/me/2fa", tags=["me"],
              summary="begin TOTP enrolment: the seed, its otpauth URI and QR code (an SVG data: URI), shown once")
    def enrol(caller: Auth) -> dict[str, object]:
        person(caller, "enrolling 2FA")
        if caller.user.totp is not None:
            raise ApiError(409, "you have 2FA already (a lost device: the operator resets it with "
                                "'boxcloud user reset-2fa')")
        seed = _secrets.new_seed()
        store.set_totp(caller.user.id, pending=ctx.seeds.seal(seed))
        ctx.audit(caller, "2fa.enrol.begin", f"user:{caller.user.name}")
        uri = _secrets.otpauth_uri(seed, caller.user.name)
        return {"secret": seed, "otpauth_uri": uri, "qr_svg": _secrets.otpauth_qr(uri),
                "next": "POST /v1/me/2fa/confirm with a code from the app (scan qr_svg, or paste otpauth_uri)"}

    @app.post("/v1/me/2fa/confirm", tags=["me"], summary="confirm enrolment with a code: recovery codes, shown once")
    def confirm(caller: Auth, body: CodeIn) -> dict[str, object]:
        person(caller, "enrolling 2FA")
        fresh = store.user(caller.user.id)
        seed = ctx.seeds.open(fresh.totp_pending) if fresh and fresh.totp_pending else None
        if seed is None:
            raise ApiError(409, "no enrolment in progress: POST /v1/me/2fa first")
        step = _secrets.totp_step(seed, body.code, time.time())
        if step is None or not store.use_totp_step(caller.user.id, step):
            raise ApiError(400, "that code does not match the new seed (check the device's clock)")
        codes = _secrets.new_recovery_codes()
        store.set_totp(caller.user.id, confirmed=ctx.seeds.seal(seed), codes=[_secrets.recovery_hash(c) for c in codes])
        ctx.audit(caller, "2fa.enrol", f"user:{caller.user.name}")
        return {"two_factor": True, "recovery_codes": codes}

    # -- the account ---------------------------------------------------------------------------

    @app.patch("/v1/account", tags=["account"], summary="the account's settings (account.manage)")
    def account(caller: Auth, body: AccountIn) -> dict[str, object]:
        need(caller, "account.manage")
        person(caller, "changing the account's settings")
        store.set_require_2fa(caller.account_id, body.require_2fa)
        ctx.audit(caller, "account.settings", f"account:{caller.account_id}", require_2fa=body.require_2fa)
        return {"id": caller.account_id, "require_2fa": body.require_2fa}

    # -- users -----------------------------------------------------------------------------------

    @app.get("/v1/users", tags=["users"], summary="the account's users and service accounts (user.read)")
    def users(caller: Auth, limit: Limit = 100, cursor: Cursor = None) -> dict[str, object]:
        need(caller, "user.read")
        rows = store.users(caller.account_id, after(cursor, 0), limit + 1)
        return page([_user(u) for u in rows], limit, lambda u: u["id"])

    @app.post("/v1/users", tags=["users"], status_code=201, summary="a new user or service account (user.manage)")
    def add_user(caller: Auth, body: UserIn) -> dict[str, object]:
        need(caller, "user.manage")
        person(caller, "creating users")
        if (body.kind == "user") != (body.password is not None):
            raise ApiError(400, "a user needs a password; a service account has none (it uses API keys)")
        try:
            uid = store.add_user(caller.account_id, body.name, body.kind,
                                 _secrets.hash_password(body.password) if body.password else None)
        except StoreError as e:
            if "exists already" in str(e):
                raise ApiError(409, "this name is taken: choose another") from None
            raise
        ctx.audit(caller, "user.create", f"user:{body.name}", kind=body.kind)
        u = store.user(uid)
        assert u is not None
        return _user(u)

    @app.get("/v1/users/{user_id}", tags=["users"], summary="a user and its role bindings (user.read)")
    def get_user(caller: Auth, user_id: PathId) -> dict[str, object]:
        need(caller, "user.read")
        u = member(caller, user_id)
        return _user(u) | {"bindings": [b.__dict__ for b in store.bindings(caller.account_id, u.id)]}

    @app.delete("/v1/users/{user_id}", tags=["users"], status_code=204,
                summary="delete a user: its keys stop working at once (user.manage)")
    def delete_user(caller: Auth, user_id: PathId) -> Response:
        need(caller, "user.manage")
        person(caller, "deleting users")
        u = member(caller, user_id)
        if u.id == caller.user.id:
            raise ApiError(409, "you cannot delete yourself")
        store.delete_user(u.id)
        ctx.audit(caller, "user.delete", f"user:{u.name}")
        return Response(status_code=204)

    # -- API keys ------------------------------------------------------------------------------

    @app.get("/v1/keys", tags=["keys"], summary="my keys; with user.manage, a user's (never their secrets)")
    def keys(caller: Auth, user_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None, limit: Limit = 100,
             cursor: Cursor = None) -> dict[str, object]:
        if user_id is not None and user_id != caller.user.id:
            need(caller, "user.manage")
            member(caller, user_id)
        rows = store.keys([user_id or caller.user.id], after(cursor, ""), limit + 1)
        return page([_key(k) for k in rows], limit, lambda k: k["id"])

    @app.post("/v1/keys", tags=["keys"], status_code=201,
              summary="a new API key, shown once; scopes within its owner's and mine")
    def add_key(caller: Auth, body: KeyIn) -> dict[str, object]:
        person(caller, "creating API keys")
        owner = caller.user
        if body.user_id is not None and body.user_id != caller.user.id:
            need(caller, "user.manage")
            owner = member(caller, body.user_id)
            if owner.kind != "service":
                raise ApiError(400, "keys are made for yourself or for a service account, not for another person")
            within(caller, body.scopes)
        unknown = unknown_permissions(body.scopes)
        if unknown:
            raise ApiError(400, f"unknown permission(s): {', '.join(unknown)} (GET /v1/roles lists them)")
        mine = set(ctx.auth.grants_of(owner).names())
        beyond = sorted(set(body.scopes) - mine)
        if beyond:
            raise ApiError(403, f"a key's scopes stay within its owner's permissions: not {', '.join(beyond)}")
        key_id, key, digest = _secrets.new_key()
        expires = time.time() + body.expires_in_days * 86400
        store.add_key(key_id, owner.id, body.name, digest, scopes=body.scopes, expires=expires)
        ctx.audit(caller, "key.create", f"key:{key_id}", owner=owner.name, scopes=sorted(body.scopes),
                  expires=expires)
        row = store.key(key_id)
        assert row is not None
        return _key(row) | {"key": key, "note": "shown once: store it now"}

    @app.delete("/v1/keys/{key_id}", tags=["keys"], status_code=204,
                summary="revoke a key: refused from the next request on")
    def revoke_key(caller: Auth, key_id: str) -> Response:
        row = store.key(key_id)
        if row is None:
            raise ApiError(404, f"no key {key_id!r} here")
        if row.user_id != caller.user.id:
            owner = store.user(row.user_id)
            if owner is None or owner.account_id != caller.account_id or not caller.grants.can("user.manage"):
                raise ApiError(404, f"no key {key_id!r} here")
        store.revoke_key(key_id)
        ctx.audit(caller, "key.revoke", f"key:{key_id}")
        return Response(status_code=204)

    # -- roles and bindings --------------------------------------------------------------------

    @app.get("/v1/roles", tags=["roles"], summary="the permissions, built-in and custom roles")
    def roles(caller: Auth) -> dict[str, object]:
        custom = store.custom_roles(caller.account_id)
        return {"permissions": PERMISSIONS, "builtin": {r: sorted(p) for r, p in BUILTIN_ROLES.items()},
                "custom": {r: list(p) for r, p in custom.items()}}

    @app.put("/v1/roles/{name}", tags=["roles"], summary="define a custom role (role.manage)")
    def put_role(caller: Auth, name: Annotated[str, Path(pattern=r"^[a-z][a-z0-9_-]{0,63}$")],
                 body: RoleIn) -> dict[str, object]:
        need(caller, "role.manage")
        if name in BUILTIN_ROLES:
            raise ApiError(409, f"{name} is a built-in role")
        within(caller, body.permissions)
        store.put_role(caller.account_id, name, body.permissions)
        ctx.audit(caller, "role.define", f"role:{name}", permissions=sorted(body.permissions))
        return {"name": name, "permissions": sorted(body.permissions)}

    @app.get("/v1/bindings", tags=["roles"], summary="the account's role bindings (user.read)")
    def bindings(caller: Auth) -> dict[str, object]:
        need(caller, "user.read")
        return {"items": [b.__dict__ for b in store.bindings(caller.account_id)]}

    @app.post("/v1/bindings", tags=["roles"], status_code=201,
              summary="give a user a role over the account, a tag or a Box (role.manage)")
    def bind(caller: Auth, body: BindingIn) -> dict[str, object]:
        need(caller, "role.manage")
        person(caller, "granting roles")
        member(caller, body.user_id)
        custom = store.custom_roles(caller.account_id)
        if body.role not in BUILTIN_ROLES and body.role not in custom:
            raise ApiError(400, f"no role {body.role!r}: one of {', '.join([*BUILTIN_ROLES, *custom])}")
        if (body.scope_kind == "account") != (body.scope == ""):
            raise ApiError(400, "scope is '' for the account, else the tag or the Box id")
        if body.scope_kind == "box" and store.box_account(body.scope) != caller.account_id:
            raise ApiError(404, f"no Box {body.scope!r} here")
        within(caller, sorted(role_permissions(body.role, custom)))
        bid = store.bind(caller.account_id, body.user_id, body.role, body.scope_kind, body.scope)
        ctx.audit(caller, "role.bind", f"user:{body.user_id}", role=body.role, scope_kind=body.scope_kind,
                  scope=body.scope, binding=bid)
        return {"id": bid, **body.model_dump()}

    @app.delete("/v1/bindings/{binding_id}", tags=["roles"], status_code=204, summary="unbind a role (role.manage)")
    def unbind(caller: Auth, binding_id: PathId) -> Response:
        need(caller, "role.manage")
        if not store.unbind(caller.account_id, binding_id):
            raise ApiError(404, f"no binding {binding_id} here")
        ctx.audit(caller, "role.unbind", f"binding:{binding_id}")
        return Response(status_code=204)

    # -- audit ---------------------------------------------------------------------------------

    @app.get("/v1/audit", tags=["audit"], summary="the account's audit trail, oldest first (audit.read)")
    def audit(caller: Auth, limit: Limit = 100, cursor: Cursor = None) -> dict[str, object]:
        need(caller, "audit.read")
        rows = store.audit_records(caller.account_id, after(cursor, 0), limit + 1)
        return page([r.public() for r in rows], limit, lambda r: r["seq"])

    assert SCOPE_KINDS  # the kinds BindingIn takes
