"""What the operator does on the cloud host (`boxcloud account|user|key|audit`), over the store:
bootstrap an account and its first owner, put Boxes in accounts, reset a lost password or 2FA,
make an API key for a machine, verify the audit trail. Every change is in the audit trail, by
"operator". Everything else users do goes through the API. No network I/O.
"""

from __future__ import annotations

import re
import time

from cloud.api import _secrets
from cloud.api._authz import PERMISSIONS, grants, unknown_permissions
from cloud.errors import CloudError, StoreError, UnknownError
from cloud.store import AccountRow, Store, UserRow

OPERATOR = "operator"
ACCOUNT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")
LOGIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9@._+-]{0,127}")
MIN_PASSWORD = 12


def check_password_text(password: str) -> str:
    """A password as typed (one trailing newline of a file or pipe dropped), or CloudError."""
    password = password.removesuffix("\n").removesuffix("\r")
    if len(password) < MIN_PASSWORD or len(password) > 1024:
        raise CloudError(f"a password is {MIN_PASSWORD} to 1024 characters (this one has {len(password)})")
    return password


def create_account(store: Store, name: str, owner: str, password: str) -> tuple[AccountRow, UserRow]:
    """A new account and its first user, owner of the whole account.

    Raises:
        CloudError: a malformed or taken name, a password too short.
    """
    if not ACCOUNT_NAME.fullmatch(name):
        raise CloudError(f"not an account name: {name!r} (letters, digits, ' ._-', at most 64)")
    if not LOGIN.fullmatch(owner):
        raise CloudError(f"not a login: {owner!r} (letters, digits, '@._+-', e.g. an e-mail address)")
    if store.user(name=owner) is not None:
        raise CloudError(f"a user named {owner!r} exists already: choose another login")
    pw_hash = _secrets.hash_password(check_password_text(password))
    try:
        account_id = store.add_account(name)
    except StoreError as e:
        raise CloudError(str(e)) from None
    user_id = store.add_user(account_id, owner, "user", pw_hash)
    store.bind(account_id, user_id, "owner", "account", "")
    store.audit(account_id, OPERATOR, "account.create", f"account:{name}", owner=owner)
    a, u = store.account(account_id), store.user(user_id)
    assert a is not None and u is not None
    return a, u


def account(store: Store, name: str) -> AccountRow:
    row = store.account(name=name)
    if row is None:
        raise UnknownError(f"no account {name!r} here ('boxcloud account list' shows them)")
    return row


def user(store: Store, login: str) -> UserRow:
    row = store.user(name=login)
    if row is None:
        raise UnknownError(f"no user {login!r} here ('boxcloud user list ACCOUNT' shows them)")
    return row


def assign_box(store: Store, box_id: str, account_name: str) -> None:
    """Put a Box in an account (out of the one it was in)."""
    a = account(store, account_name)
    if store.box(box_id) is None:
        raise UnknownError(f"no Box {box_id!r} here ('boxcloud box list' shows them)")
    before = store.box_account(box_id)
    store.assign_box(box_id, a.id)
    store.audit(a.id, OPERATOR, "box.assign", f"box:{box_id}", previous_account=before)


def reset_password(store: Store, login: str, password: str) -> None:
    u = user(store, login)
    if u.kind != "user":
        raise CloudError(f"{login} is a service account: it has no password (it uses API keys)")
    store.set_password(u.id, _secrets.hash_password(check_password_text(password)))
    store.audit(u.account_id, OPERATOR, "user.password.reset", f"user:{login}")


def reset_2fa(store: Store, login: str) -> bool:
    """Clear a user's 2FA (a lost device); False if it had none."""
    u = user(store, login)
    if u.totp is None and u.totp_pending is None:
        return False
    store.set_totp(u.id, clear=True)
    store.audit(u.account_id, OPERATOR, "2fa.reset", f"user:{login}")
    return True


def create_key(store: Store, login: str, name: str, scopes: list[str], days: int) -> tuple[str, str, float]:
    """An API key for a user or service account, within its permissions; returns (id, key, expiry).
    The key is shown once (only its hash is kept)."""
    u = user(store, login)
    if not 1 <= days <= 365:
        raise CloudError("a key expires in 1 to 365 days")
    unknown = unknown_permissions(scopes)
    if unknown:
        raise CloudError(f"unknown permission(s): {', '.join(unknown)} (one of {', '.join(PERMISSIONS)})")
    held = set(grants(u.account_id, store.bindings(u.account_id, u.id), store.custom_roles(u.account_id)).names())
    beyond = sorted(set(scopes) - held)
    if beyond:
        raise CloudError(f"{login} does not hold {', '.join(beyond)}: a key is never wider than its owner "
                         "(bind a role first)")
    key_id, key, digest = _secrets.new_key()
    expires = time.time() + days * 86400
    store.add_key(key_id, u.id, name, digest, scopes=scopes, expires=expires)
    store.audit(u.account_id, OPERATOR, "key.create", f"key:{key_id}", owner=login, scopes=sorted(scopes))
    return key_id, key, expires

