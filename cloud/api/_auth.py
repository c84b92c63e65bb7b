"""Authentication of the users' API: Basic (users, with a TOTP code when they have 2FA) and API keys
(``Authorization: Bearer boxk_...``), with a cache of good password checks and lockouts.

- A good Basic check is remembered `CACHE_S` under a digest of (name, stored hash, password) with
  a per-process key: the next request with the same password skips Argon2, and a password changed
  (a new stored hash) or a user deleted (no row) makes the entry useless at once.
- Each credential (a login name, or a key id) may fail `FREE_FAILURES` times; then it is locked for
  2, 4, 8 ... seconds (at most `MAX_LOCK_S`) after each failure, answered 429 with Retry-After
  without checking anything. Names that are no user's lock the same way, and fail after the same
  Argon2 work: neither the answer nor its time says whether a user exists. Each client address
  may fail `SOURCE_BURST` times in a row, then `SOURCE_RATE` a second (what bounds the audit
  records of failures one client can cause).
- Every request reads the user's row and, with a key, the key's: a revoked or expired key, a
  deleted user, a new password, a lost role work at the next request.

In memory, per process (one `boxcloud run` serves the API). No network I/O; the store's reads.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cloud.api import _secrets
from cloud.api._authz import BUILTIN_ROLES, Grants, grants
from cloud.api.errors import ApiError
from cloud.pacing import Budgets, Lru
from cloud.store import KeyRow, Store, UserRow

CACHE_S = 60.0
FREE_FAILURES = 5
MAX_LOCK_S = 900.0
SOURCE_RATE, SOURCE_BURST = 1.0, 100
OTP_HEADER = "X-Box-OTP"
CHALLENGE = {"WWW-Authenticate": 'Basic realm="boxcloud", charset="UTF-8", Bearer'}


@dataclass(frozen=True)
class Caller:
    """Who made a request, and what it may do."""

    user: UserRow
    key: KeyRow | None
    grants: Grants
    must_enrol_2fa: bool = False  # its account requires 2FA and it has none: only enrolment is open

    @property
    def actor(self) -> str:
        return f"key:{self.key.id}" if self.key else f"user:{self.user.name}"

    @property
    def account_id(self) -> int:
        return self.user.account_id


class Authenticator:
    """Checks credentials for the API. The constructor does no I/O."""

    def __init__(self, store: Store, seeds: _secrets.Seeds, clock: Callable[[], float] = time.time) -> None:
        self._store, self._seeds, self._clock = store, seeds, clock
        self.ticks: Callable[[], float] = time.monotonic  # the lockouts' and rate limits' clock (tests hold it)
        self._pepper = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._good: Lru[bytes, float] = Lru(10_000)  # digest -> until (monotonic)
        self._failures: Lru[str, tuple[int, float]] = Lru(100_000)  # credential -> (failures, locked until)
        self._sources = Budgets(SOURCE_RATE, SOURCE_BURST, max_keys=100_000)
        self.argon2_checks = 0  # how many slow checks ran (tests and benchmarks)

    def authenticate(self, authorization: str | None, otp: str | None, source: str) -> Caller:
        """The caller of a request, or ApiError 401 (429 when locked out)."""
        if not authorization:
            raise ApiError(401, "credentials required: HTTP Basic (user and password) or "
                                "'Authorization: Bearer <API key>'", headers=CHALLENGE)
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer":
            return self._by_key(value.strip(), source)
        if scheme.lower() == "basic":
            return self._by_password(value.strip(), otp, source)
        raise ApiError(401, f"unknown authorization scheme {scheme[:20]!r}: Basic or Bearer", headers=CHALLENGE)

    # -- API keys ------------------------------------------------------------------------------

    def _by_key(self, text: str, source: str) -> Caller:
        parsed = _secrets.parse_key(text)
        if parsed is None:
            self._fail(f"key:?{source}", source, None, "-", "a malformed API key")
            raise ApiError(401, "not an API key (boxk_..., with a valid checksum): check it was copied whole",
                           headers=CHALLENGE)
        key_id, secret = parsed
        credential = f"key:{key_id}"
        self._check_lock(credential, source)
        row = self._store.key(key_id)
        good = row is not None and hmac.compare_digest(row.secret_hash, _secrets.key_hash(secret))
        user = self._store.user(row.user_id) if row is not None and good else None
        if row is None or not good or user is None:
            self._fail(credential, source, user.account_id if user else None, credential, "a wrong API key")
            raise ApiError(401, "invalid credentials", headers=CHALLENGE)
        now = self._clock()
        if row.revoked is not None:
            self._fail(credential, source, user.account_id, credential, "a revoked API key")
            raise ApiError(401, "this API key was revoked", headers=CHALLENGE)
        if row.expires <= now:
            self._fail(credential, source, user.account_id, credential, "an expired API key")
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(row.expires))
            raise ApiError(401, f"this API key expired on {when}", headers=CHALLENGE)
        self._succeeded(credential)
        return Caller(user, row, self._grants(user, row.scopes))

    # -- Basic -----------------------------------------------------------------------------------

    def _by_password(self, value: str, otp: str | None, source: str) -> Caller:
        try:
            name, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            name, sep, password = "", "", ""
        if not sep or not name or len(name) > 200 or len(password) > 1024:
            raise ApiError(401, "malformed Basic credentials (base64 of user:password)", headers=CHALLENGE)
        credential = f"user:{name.lower()}"
        self._check_lock(credential, source)
        user = self._store.user(name=name)
        stored = user.pw_hash if user is not None else None
        if not self._password_ok(name, stored, password) or user is None:
            account_id = user.account_id if user else None
            self._fail(credential, source, account_id, f"user:{name}", "a wrong user or password")
            raise ApiError(401, "invalid credentials", headers=CHALLENGE)
        account = self._store.account(user.account_id)
        must_enrol = False
        if user.totp is not None:
            self._check_otp(user, otp, credential, source)
        elif account is not None and account.require_2fa:
            must_enrol = True
        self._succeeded(credential)
        return Caller(user, None, self._grants(user, None), must_enrol)

    def _password_ok(self, name: str, stored: str | None, password: str) -> bool:
        digest = hmac.new(self._pepper, f"{name}\0{stored}\0{password}".encode(), hashlib.sha256).digest()
        now = self.ticks()
        with self._lock:
            until = self._good.get(digest)
        if stored is not None and until is not None and until > now:
            return True
        self.argon2_checks += 1
        if not _secrets.check_password(stored, password):
            return False
        with self._lock:
            self._good.put(digest, now + CACHE_S)
        return True

    def _check_otp(self, user: UserRow, otp: str | None, credential: str, source: str) -> None:
        if not otp:
            raise ApiError(401, f"this user has two-factor authentication: send the current code (or a recovery "
                                f"code) in the {OTP_HEADER} header", headers=CHALLENGE)
        code = otp.strip()
        if len(code) > 6:  # a recovery code
            if self._store.use_recovery(user.id, _secrets.recovery_hash(code)):
                self._store.audit(user.account_id, f"user:{user.name}", "login.recovery-code", f"user:{user.name}")
                return
            self._fail(credential, source, user.account_id, f"user:{user.name}", "a wrong or spent recovery code")
            raise ApiError(401, "invalid one-time code", headers=CHALLENGE)
        seed = self._seeds.open(user.totp) if user.totp else None
        step = _secrets.totp_step(seed, code, self._clock()) if seed else None
        if step is None:
            self._fail(credential, source, user.account_id, f"user:{user.name}", "a wrong one-time code")
            raise ApiError(401, "invalid one-time code", headers=CHALLENGE)
        if not self._store.use_totp_step(user.id, step):
            self._fail(credential, source, user.account_id, f"user:{user.name}", "a one-time code used again")
            raise ApiError(401, "this one-time code was used already: wait for the next one", headers=CHALLENGE)

    # -- what every path shares ----------------------------------------------------------------

    def grants_of(self, user: UserRow) -> Grants:
        """A user's grants, as a Basic request of theirs would have them."""
        return self._grants(user, None)

    def _grants(self, user: UserRow, key_scopes: tuple[str, ...] | None) -> Grants:
        bound = self._store.bindings(user.account_id, user.id)
        custom = (self._store.custom_roles(user.account_id) if any(b.role not in BUILTIN_ROLES for b in bound)
                  else {})  # most callers hold built-in roles only: one read less a request
        return grants(user.account_id, bound, custom, key_scopes)

    def _check_lock(self, credential: str, source: str) -> None:
        now = self.ticks()
        if self._sources.tokens(source, now) < 1:
            wait = max(1, int(self._sources.wait_s(source, now)) + 1)
            raise ApiError(429, "too many failed logins from this address: wait", headers={"Retry-After": str(wait)})
        with self._lock:
            _, until = self._failures.get(credential) or (0, 0.0)
        if until > now:
            raise ApiError(429, "too many failed logins with these credentials: wait before trying again",
                           headers={"Retry-After": str(int(until - now) + 1)})

    def _fail(self, credential: str, source: str, account_id: int | None, actor: str, why: str) -> None:
        now = self.ticks()
        self._sources.admit(source, 1, now)
        with self._lock:
            n, _ = self._failures.get(credential) or (0, 0.0)
            n += 1
            until = now + min(2.0 ** (n - FREE_FAILURES), MAX_LOCK_S) if n >= FREE_FAILURES else 0.0
            self._failures.put(credential, (n, until))
        self._store.audit(account_id, actor, "login", actor, "failed", reason=why, source=source)

    def _succeeded(self, credential: str) -> None:
        with self._lock:
            if credential in self._failures:
                self._failures.pop(credential)

    def forget(self) -> None:
        """Drop the cache of good checks (tests: measure the cold path)."""
        with self._lock:
            self._good = Lru(10_000)
