"""The platform's users: accounts (tenants), users and service accounts, their 2FA, API keys, custom
roles, role bindings, and which account each Box belongs to.

Tables `accounts`, `users`, `recovery_codes`, `api_keys`, `roles`, `role_bindings`, `box_accounts`.
Only hashes of secrets are stored (passwords: Argon2id; API keys: SHA-256 of a 190-bit random
secret; recovery codes: Argon2id); a TOTP seed must be readable to check a code, so it is stored
encrypted by the API (`cloud.api._secrets`), never here in clear. What the hashes and roles mean
is the API's (`cloud.api`); this module only keeps rows. No network I/O.

What every request of the API reads (its key, its user, their bindings and custom roles, whether a
Box is in reach) runs statements compiled once and run on the driver's cursor (`_dialect.Prepared`):
SQLAlchemy does no work per request (building, compiling and its result objects were most of the
time of such a read).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from cloud.store._alerts import alerts
from cloud.store._base import BIGINT, ROW_ID, SECONDS, AnyRow, StoreBase, metadata
from cloud.store._connectors import connectors
from cloud.store._dialect import Prepared, no_limit_params
from cloud.store._fleet import box_tags, boxes
from cloud.store.errors import StoreError

accounts = sa.Table(
    "accounts", metadata,
    sa.Column("id", ROW_ID, primary_key=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    sa.Column("require_2fa", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("created", SECONDS, nullable=False),
)
users = sa.Table(
    "users", metadata,
    sa.Column("id", ROW_ID, primary_key=True),
    sa.Column("account_id", BIGINT, nullable=False, index=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),  # the login: unique on the platform
    sa.Column("kind", sa.Text, nullable=False),  # "user" or "service" (API keys only)
    sa.Column("pw_hash", sa.Text),  # Argon2id (PHC string); None: no password (service accounts)
    sa.Column("totp", sa.Text),  # the TOTP seed, encrypted; None: no 2FA
    sa.Column("totp_pending", sa.Text),  # a seed being enrolled (encrypted), until a code confirms it
    sa.Column("totp_step", BIGINT, nullable=False, server_default=sa.text("0")),  # last accepted time step
    sa.Column("created", SECONDS, nullable=False),
)
recovery_codes = sa.Table(
    "recovery_codes", metadata,
    sa.Column("user_id", BIGINT, primary_key=True),
    sa.Column("code_hash", sa.Text, primary_key=True),
)
api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("id", sa.Text, primary_key=True),  # the key's public id (in the key itself)
    sa.Column("user_id", BIGINT, nullable=False, index=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("secret_hash", sa.Text, nullable=False),
    sa.Column("scopes", sa.Text, nullable=False),  # permissions, space-separated
    sa.Column("created", SECONDS, nullable=False),
    sa.Column("expires", SECONDS, nullable=False),
    sa.Column("revoked", SECONDS),
)
roles = sa.Table(
    "roles", metadata,
    sa.Column("account_id", BIGINT, primary_key=True),
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("permissions", sa.Text, nullable=False),  # space-separated
)
role_bindings = sa.Table(
    "role_bindings", metadata,
    sa.Column("id", ROW_ID, primary_key=True),
    sa.Column("account_id", BIGINT, nullable=False),
    sa.Column("user_id", BIGINT, nullable=False, index=True),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("scope_kind", sa.Text, nullable=False),  # "account", "tag" or "box"
    sa.Column("scope", sa.Text, nullable=False),  # "" for the account, else the tag or the Box id
    sa.Column("created", SECONDS, nullable=False),
)
box_accounts = sa.Table(
    "box_accounts", metadata,
    sa.Column("box_id", sa.Text, primary_key=True),
    sa.Column("account_id", BIGINT, nullable=False, index=True),
)


def _mapping(r: AnyRow | Mapping[str, Any]) -> Mapping[str, Any]:
    """A row's columns by name: SQLAlchemy's row, or `Prepared.mappings`' dict."""
    m: Mapping[str, Any] = r if isinstance(r, Mapping) else r._mapping  # type: ignore[assignment]
    return m


@dataclass(frozen=True)
class AccountRow:
    id: int
    name: str
    require_2fa: bool
    created: float


@dataclass(frozen=True)
class UserRow:
    id: int
    account_id: int
    name: str
    kind: str
    pw_hash: str | None
    totp: str | None
    totp_pending: str | None
    totp_step: int
    created: float

    @classmethod
    def of(cls, r: AnyRow | Mapping[str, Any]) -> UserRow:
        m = _mapping(r)
        return cls(int(m["id"]), int(m["account_id"]), m["name"], m["kind"], m["pw_hash"], m["totp"],
                   m["totp_pending"], int(m["totp_step"]), float(m["created"]))


@dataclass(frozen=True)
class KeyRow:
    id: str
    user_id: int
    name: str
    secret_hash: str
    scopes: tuple[str, ...]
    created: float
    expires: float
    revoked: float | None

    @classmethod
    def of(cls, r: AnyRow | Mapping[str, Any]) -> KeyRow:
        m = _mapping(r)
        return cls(m["id"], int(m["user_id"]), m["name"], m["secret_hash"], tuple(m["scopes"].split()),
                   float(m["created"]), float(m["expires"]), m["revoked"])


@dataclass(frozen=True)
class BindingRow:
    id: int
    account_id: int
    user_id: int
    role: str
    scope_kind: str
    scope: str

    @classmethod
    def of(cls, r: AnyRow | Mapping[str, Any]) -> BindingRow:
        m = _mapping(r)
        return cls(int(m["id"]), int(m["account_id"]), int(m["user_id"]), m["role"], m["scope_kind"], m["scope"])


@dataclass(frozen=True)
class BoxScope:
    """Which Boxes of an account a permission reaches: all of them, or those of some tags or ids."""

    account_id: int
    everything: bool = False
    tags: frozenset[str] = frozenset()
    box_ids: frozenset[str] = frozenset()

    def where(self) -> sa.ColumnElement[bool]:
        """A condition on `boxes.c.box_id`: the filter is in the database, never after."""
        in_account = boxes.c.box_id.in_(sa.select(box_accounts.c.box_id)
                                        .where(box_accounts.c.account_id == self.account_id))
        if self.everything:
            return in_account
        reach: list[sa.ColumnElement[bool]] = []
        if self.box_ids:
            reach.append(boxes.c.box_id.in_(sorted(self.box_ids)))
        if self.tags:
            reach.append(boxes.c.box_id.in_(sa.select(box_tags.c.box_id).where(box_tags.c.tag.in_(sorted(self.tags)))))
        return sa.and_(in_account, sa.or_(*reach)) if reach else sa.false()


_KEY = Prepared(lambda _: sa.select(api_keys).where(api_keys.c.id == sa.bindparam("id")), ["id"])
_USER_BY_ID = Prepared(lambda _: sa.select(users).where(users.c.id == sa.bindparam("id")), ["id"])
_USER_BY_NAME = Prepared(lambda _: sa.select(users).where(users.c.name == sa.bindparam("name")), ["name"])
_ACCOUNT_BY_ID = Prepared(lambda _: sa.select(accounts).where(accounts.c.id == sa.bindparam("id")), ["id"])
_ROLES = Prepared(lambda _: sa.select(roles.c.name, roles.c.permissions)
                  .where(roles.c.account_id == sa.bindparam("account")).order_by(roles.c.name), ["account"])
_BINDINGS = (sa.select(role_bindings).where(role_bindings.c.account_id == sa.bindparam("account"))
             .order_by(role_bindings.c.id).limit(10_000))
_USER_BINDINGS = Prepared(lambda _: no_limit_params(_BINDINGS.where(role_bindings.c.user_id == sa.bindparam("user")),
                                                    10_000), ["account", "user"])
_IN_ACCOUNT_Q = (sa.select(boxes.c.box_id).join(box_accounts, box_accounts.c.box_id == boxes.c.box_id)
                 .where(boxes.c.box_id == sa.bindparam("box"), box_accounts.c.account_id == sa.bindparam("account")))
_IN_ACCOUNT = Prepared(lambda _: _IN_ACCOUNT_Q, ["box", "account"])
_TAGGED_IN_ACCOUNT = _IN_ACCOUNT_Q.where(sa.exists().where(box_tags.c.box_id == boxes.c.box_id,
                                                           box_tags.c.tag.in_(sa.bindparam("tags", expanding=True))))


class Users(StoreBase):
    """Accounts, users, keys, roles and bindings (a part of `Store`)."""

    # -- accounts ------------------------------------------------------------------------------

    def add_account(self, name: str) -> int:
        """A new account; StoreError if the name is taken."""
        with self._tx() as db:
            if db.execute(sa.select(accounts.c.id).where(accounts.c.name == name)).first():
                raise StoreError(f"an account named {name!r} exists already")
            return int(db.execute(accounts.insert().values(name=name, created=time.time())).inserted_primary_key[0])  # type: ignore[index]

    def account(self, account_id: int | None = None, name: str | None = None) -> AccountRow | None:
        with self._read() as db:
            if name is None:  # every Basic request of a user without 2FA: prepared
                found = _ACCOUNT_BY_ID.rows(db, (account_id,))
                r = found[0] if found else None
            else:
                r = db.execute(sa.select(accounts.c.id, accounts.c.name, accounts.c.require_2fa, accounts.c.created)
                               .where(accounts.c.name == name)).first()
        return AccountRow(int(r[0]), r[1], bool(r[2]), float(r[3])) if r else None

    def accounts(self) -> list[AccountRow]:
        with self._read() as db:
            return [AccountRow(int(r.id), r.name, bool(r.require_2fa), float(r.created))
                    for r in db.execute(sa.select(accounts).order_by(accounts.c.id))]

    def set_require_2fa(self, account_id: int, on: bool) -> None:
        with self._tx() as db:
            db.execute(accounts.update().where(accounts.c.id == account_id).values(require_2fa=int(on)))

    def assign_box(self, box_id: str, account_id: int) -> None:
        """The Box belongs to the account (and to no other)."""
        with self._tx() as db:
            db.execute(box_accounts.delete().where(box_accounts.c.box_id == box_id))
            db.execute(box_accounts.insert().values(box_id=box_id, account_id=account_id))

    def box_account(self, box_id: str) -> int | None:
        with self._read() as db:
            v = db.execute(sa.select(box_accounts.c.account_id).where(box_accounts.c.box_id == box_id)).scalar()
        return int(v) if v is not None else None

    # -- users ---------------------------------------------------------------------------------

    def add_user(self, account_id: int, name: str, kind: str, pw_hash: str | None) -> int:
        """A new user or service account; StoreError if the name is taken (on the whole platform)."""
        with self._tx() as db:
            if db.execute(sa.select(users.c.id).where(users.c.name == name)).first():
                raise StoreError(f"a user named {name!r} exists already")
            return int(db.execute(users.insert().values(account_id=account_id, name=name, kind=kind, pw_hash=pw_hash,
                                                        created=time.time())).inserted_primary_key[0])  # type: ignore[index]

    def user(self, user_id: int | None = None, name: str | None = None) -> UserRow | None:
        with self._read() as db:
            found = _USER_BY_ID.mappings(db, (user_id,)) if name is None else _USER_BY_NAME.mappings(db, (name,))
        return UserRow.of(found[0]) if found else None

    def users(self, account_id: int, after: int, limit: int) -> list[UserRow]:
        """An account's users by id, those after `after` (paging), at most `limit`."""
        with self._read() as db:
            return [UserRow.of(r) for r in db.execute(
                sa.select(users).where(users.c.account_id == account_id, users.c.id > after)
                .order_by(users.c.id).limit(limit))]

    def delete_user(self, user_id: int) -> None:
        """A user, its keys, bindings and recovery codes: gone at the next request."""
        with self._tx() as db:
            for table, col in ((api_keys, api_keys.c.user_id), (role_bindings, role_bindings.c.user_id),
                               (recovery_codes, recovery_codes.c.user_id), (users, users.c.id)):
                db.execute(table.delete().where(col == user_id))

    def set_password(self, user_id: int, pw_hash: str) -> None:
        with self._tx() as db:
            db.execute(users.update().where(users.c.id == user_id).values(pw_hash=pw_hash))

    def set_totp(self, user_id: int, *, pending: str | None = None, confirmed: str | None = None,
                 codes: Sequence[str] = (), clear: bool = False) -> None:
        """Begin an enrolment (`pending`), confirm it (`confirmed` and its recovery codes' hashes), or
        `clear` 2FA (a lost phone: `boxcloud user reset-2fa`)."""
        with self._tx() as db:
            u = users.update().where(users.c.id == user_id)
            if pending is not None:
                db.execute(u.values(totp_pending=pending))
            if confirmed is not None or clear:
                db.execute(u.values(totp=confirmed, totp_pending=None))
                db.execute(recovery_codes.delete().where(recovery_codes.c.user_id == user_id))
                if codes:
                    db.execute(recovery_codes.insert(), [{"user_id": user_id, "code_hash": h} for h in codes])

    def use_totp_step(self, user_id: int, step: int) -> bool:
        """Record a TOTP time step as used; False if it (or a later one) was used already: a code is
        never accepted twice (the check and the write in one transaction)."""
        with self._tx() as db:
            return db.execute(users.update().where(users.c.id == user_id, users.c.totp_step < step)
                              .values(totp_step=step)).rowcount == 1

    def recovery_hashes(self, user_id: int) -> list[str]:
        with self._read() as db:
            return [str(h) for h in db.execute(sa.select(recovery_codes.c.code_hash)
                                               .where(recovery_codes.c.user_id == user_id)).scalars()]

    def use_recovery(self, user_id: int, code_hash: str) -> bool:
        """Spend a recovery code; False if it was spent already."""
        with self._tx() as db:
            return db.execute(recovery_codes.delete().where(recovery_codes.c.user_id == user_id,
                                                            recovery_codes.c.code_hash == code_hash)).rowcount == 1

    # -- API keys ------------------------------------------------------------------------------

    def add_key(self, key_id: str, user_id: int, name: str, secret_hash: str, *, scopes: Iterable[str],
                expires: float) -> None:
        with self._tx() as db:
            db.execute(api_keys.insert().values(id=key_id, user_id=user_id, name=name, secret_hash=secret_hash,
                                                scopes=" ".join(sorted(scopes)), created=time.time(),
                                                expires=expires))

    def key(self, key_id: str) -> KeyRow | None:
        with self._read() as db:
            found = _KEY.mappings(db, (key_id,))
        return KeyRow.of(found[0]) if found else None

    def keys(self, user_ids: Sequence[int], after: str, limit: int) -> list[KeyRow]:
        """The keys of some users by id, those after `after` (paging), at most `limit`."""
        with self._read() as db:
            return [KeyRow.of(r) for r in db.execute(
                sa.select(api_keys).where(api_keys.c.user_id.in_(user_ids), api_keys.c.id > after)
                .order_by(api_keys.c.id).limit(limit))]

    def revoke_key(self, key_id: str) -> bool:
        """Revoke a key (effective at the next request); False if it was revoked already."""
        with self._tx() as db:
            return db.execute(api_keys.update().where(api_keys.c.id == key_id, api_keys.c.revoked.is_(None))
                              .values(revoked=time.time())).rowcount == 1

    # -- roles and bindings --------------------------------------------------------------------

    def put_role(self, account_id: int, name: str, permissions: Iterable[str]) -> None:
        with self._tx() as db:
            db.execute(roles.delete().where(roles.c.account_id == account_id, roles.c.name == name))
            db.execute(roles.insert().values(account_id=account_id, name=name,
                                             permissions=" ".join(sorted(permissions))))

    def custom_roles(self, account_id: int) -> dict[str, tuple[str, ...]]:
        with self._read() as db:
            return {name: tuple(perms.split()) for name, perms in _ROLES.rows(db, (account_id,))}

    def bind(self, account_id: int, user_id: int, role: str, scope_kind: str, scope: str) -> int:
        with self._tx() as db:
            return int(db.execute(role_bindings.insert().values(
                account_id=account_id, user_id=user_id, role=role, scope_kind=scope_kind, scope=scope,
                created=time.time())).inserted_primary_key[0])  # type: ignore[index]

    def unbind(self, account_id: int, binding_id: int) -> bool:
        with self._tx() as db:
            return db.execute(role_bindings.delete().where(role_bindings.c.id == binding_id,
                                                           role_bindings.c.account_id == account_id)).rowcount == 1

    def bindings(self, account_id: int, user_id: int | None = None) -> list[BindingRow]:
        with self._read() as db:
            if user_id is None:
                return [BindingRow.of(r) for r in db.execute(_BINDINGS, {"account": account_id})]
            return [BindingRow.of(r) for r in _USER_BINDINGS.mappings(db, (account_id, user_id))]

    def visible_boxes(self, scope: BoxScope, after: str, limit: int) -> list[str]:
        """The Box ids a scope reaches, after `after` (paging), at most `limit`: filtered in the database."""
        with self._read() as db:
            return [str(b) for b in db.execute(sa.select(boxes.c.box_id).where(scope.where(), boxes.c.box_id > after)
                                               .order_by(boxes.c.box_id).limit(limit)).scalars()]

    def in_scope(self, scope: BoxScope, box_id: str) -> bool:
        """Whether the scope reaches the Box (what `BoxScope.where` says, by the cheapest prebuilt statement)."""
        if scope.everything or box_id in scope.box_ids:
            with self._read() as db:
                return bool(_IN_ACCOUNT.rows(db, (box_id, scope.account_id)))
        if scope.tags:
            with self._read() as db:
                return db.execute(_TAGGED_IN_ACCOUNT, {"box": box_id, "account": scope.account_id,
                                                       "tags": sorted(scope.tags)}).first() is not None
        return False

    def alerts_in(self, scope: BoxScope, include_closed: bool, after: int, limit: int,
                  connectors_of: int | None = None) -> list[AnyRow]:
        """The alerts of the Boxes a scope reaches (and, with `connectors_of`, of that account's
        connectors: ``connector:<id>``), by id, after `after`, at most `limit`: filtered in the database."""
        a = alerts.c
        whose: sa.ColumnElement[bool] = a.box_id.in_(sa.select(boxes.c.box_id).where(scope.where()))
        if connectors_of is not None:
            c = connectors.c
            whose = sa.or_(whose, a.box_id.in_(sa.select(sa.literal("connector:") + sa.cast(c.id, sa.Text))
                                               .where(c.account_id == connectors_of)))
        query = sa.select(alerts).where(whose, a.id > after)
        if not include_closed:
            query = query.where(a.closed.is_(None))
        with self._read() as db:
            return list(db.execute(query.order_by(a.id).limit(limit)))
