"""Enrollment tokens and Box certificates in the cloud store: what the platform vouches for.

Rules (see docs/architecture.md, "Trust chain"):

- A serial has at most one live (unused, unexpired) token: issuing a new one cancels the others.
  Checking a token (`check_token`) only reads, so that guesses never take the write lock; a
  token is claimed in a write transaction only once it is known to be valid.
- A Box has one *current* certificate and, during a rotation, at most one *pending* one (issued
  by a renewal, not yet seen in use). Only these two authenticate the Box at the HTTPS endpoints,
  and only they may renew. The pending one becomes current when the Box uses it there (a renewal
  or a confirmation); the one it replaces is revoked at that moment.
- Re-enrolment and revocation end every certificate the Box ever had (current, pending, and any
  it renewed away from that has not expired): they go on the revocation list.

This module is part of `cloud.store.Store` (a mixin over its connection); it does no network I/O.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal

from cloud.errors import EnrollmentError, StoreError

CertState = Literal["current", "pending"]


@dataclass(frozen=True)
class TokenRow:
    """A pending enrollment token (its hash is never shown)."""

    serial: str
    created: float
    expires: float


@dataclass(frozen=True)
class CertChange:
    """What a renewal or confirmation changed: certificates put on the revocation list."""

    revoked: list[int]


class Credentials:
    """Token and certificate rules over the store's database (a mixin of `Store`)."""

    def _db(self) -> sqlite3.Connection:
        raise NotImplementedError

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    # -- tokens -------------------------------------------------------------------------------

    def add_token(self, token_hash: str, serial: str, ttl_s: float) -> tuple[float, int]:
        """Record a new token for `serial`, cancelling its other live ones.

        Returns:
            the token's expiry time, and how many earlier tokens were cancelled.
        """
        now = time.time()
        with self._tx() as db:
            cancelled = db.execute("DELETE FROM tokens WHERE serial=? AND used IS NULL", (serial,)).rowcount
            db.execute("INSERT INTO tokens VALUES (?, ?, ?, ?, NULL)", (token_hash, serial, now, now + ttl_s))
        return now + ttl_s, cancelled

    def pending_tokens(self, now: float | None = None) -> list[TokenRow]:
        """Tokens not used and not expired, by serial."""
        rows = self._db().execute(
            "SELECT serial, created, expires FROM tokens WHERE used IS NULL AND expires > ? ORDER BY serial, created",
            (time.time() if now is None else now,))
        return [TokenRow(str(s), float(c), float(e)) for s, c, e in rows]

    def cancel_tokens(self, serial: str) -> int:
        """Cancel the unused tokens of a serial; returns how many."""
        with self._tx() as db:
            return db.execute("DELETE FROM tokens WHERE serial=? AND used IS NULL", (serial,)).rowcount

    def check_token(self, token_hash: str) -> str:
        """The serial a token was issued for, if it can be used now (a read: no write lock taken).

        Raises:
            EnrollmentError: the token is unknown, expired or already used (401).
        """
        row = self._db().execute("SELECT serial, expires, used FROM tokens WHERE token_hash=?",
                                 (token_hash,)).fetchone()
        if row is None:
            raise EnrollmentError("the enrollment token is not valid", 401)
        serial, expires, used = row
        if used is not None:
            raise EnrollmentError("the enrollment token has already been used", 401)
        if expires < time.time():
            raise EnrollmentError("the enrollment token has expired", 401)
        return str(serial)

    def claim_token(self, token_hash: str) -> str:
        """Check a token and mark it used; returns the Box serial it was issued for.

        Raises:
            EnrollmentError: the token is unknown, expired or already used.
        """
        self.check_token(token_hash)  # a guess is refused here, before the write lock
        with self._tx() as db:
            row = db.execute("SELECT serial, expires FROM tokens WHERE token_hash=? AND used IS NULL",
                             (token_hash,)).fetchone()
            if row is None or row[1] < time.time():
                raise EnrollmentError("the enrollment token has already been used", 401)
            db.execute("UPDATE tokens SET used=? WHERE token_hash=?", (time.time(), token_hash))
        return str(row[0])

    def release_token(self, token_hash: str) -> None:
        """Make a claimed token usable again (the enrollment failed on our side, or the request)."""
        with self._tx() as db:
            db.execute("UPDATE tokens SET used=NULL WHERE token_hash=?", (token_hash,))

    # -- certificates -------------------------------------------------------------------------

    def enroll_box(self, box_id: str, serial: str, cert_serial: int, not_after: float) -> list[int]:
        """Record a (re-)enrolled Box with its new certificate.

        Every certificate the Box had before (current, pending, renewed away from and not
        expired) goes on the revocation list: one Box, one valid certificate.

        Returns:
            the serials revoked now (empty for a first enrolment).
        """
        now = time.time()
        with self._tx() as db:
            ended = self._box_certs(db, box_id, now) - {cert_serial}
            db.execute(
                """INSERT INTO boxes (box_id, serial, enrolled, cert_serial, cert_not_after)
                   VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT (box_id) DO UPDATE SET enrolled=excluded.enrolled,
                     cert_serial=excluded.cert_serial, cert_not_after=excluded.cert_not_after,
                     revoked=NULL""",
                (box_id, serial, now, str(cert_serial), not_after),
            )
            db.execute("DELETE FROM pending_certs WHERE box_id=?", (box_id,))
            self._revoke_serials(db, box_id, ended, now)
        return sorted(ended)

    def revoke(self, box_id: str) -> int:
        """Mark a Box revoked and every certificate it has (current, pending, renewed away from and
        not expired) on the revocation list; returns the current certificate's serial."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT cert_serial FROM boxes WHERE box_id=?", (box_id,)).fetchone()
            if row is None:
                raise StoreError(f"no Box {box_id!r}")
            db.execute("UPDATE boxes SET revoked=? WHERE box_id=?", (now, box_id))
            self._revoke_serials(db, box_id, self._box_certs(db, box_id, now), now)
            db.execute("DELETE FROM pending_certs WHERE box_id=?", (box_id,))
        return int(row[0])

    def cert_state(self, box_id: str, cert_serial: int) -> CertState | None:
        """Whether a certificate is the Box's current or pending one (None: it may not authenticate)."""
        db = self._db()
        row = db.execute("SELECT cert_serial, revoked FROM boxes WHERE box_id=?", (box_id,)).fetchone()
        if row is None or row[1] is not None:
            return None
        if db.execute("SELECT 1 FROM revoked_certs WHERE cert_serial=?", (str(cert_serial),)).fetchone():
            return None
        if int(row[0]) == cert_serial:
            return "current"
        pending = db.execute("SELECT cert_serial FROM pending_certs WHERE box_id=? AND not_after > ?",
                             (box_id, time.time())).fetchone()
        return "pending" if pending and int(pending[0]) == cert_serial else None

    def renew_cert(self, box_id: str, presented: int, new_serial: int, not_after: float) -> CertChange:
        """Record a certificate issued by a renewal as the Box's pending one.

        `presented` must be the Box's current or pending certificate. A pending one presented here
        is in use: it becomes current first (the previous current is revoked). Any other pending
        certificate (an earlier renewal never used) is revoked.

        Raises:
            StoreError: no such Box, revoked, or `presented` is neither its current nor its pending
                certificate (a certificate the platform no longer vouches for).
        """
        now = time.time()
        with self._tx() as db:
            revoked = self._promote_if_pending(db, box_id, presented, now)
            old = db.execute("SELECT cert_serial FROM pending_certs WHERE box_id=?", (box_id,)).fetchone()
            if old is not None:
                self._revoke_serials(db, box_id, {int(old[0])}, now)
                revoked.append(int(old[0]))
            db.execute("INSERT INTO pending_certs VALUES (?, ?, ?, ?) ON CONFLICT (box_id) DO UPDATE SET "
                       "cert_serial=excluded.cert_serial, not_after=excluded.not_after, issued=excluded.issued",
                       (box_id, str(new_serial), not_after, now))
        return CertChange(revoked)

    def confirm_cert(self, box_id: str, presented: int) -> CertChange:
        """The Box uses `presented`: if it is the pending certificate, it becomes current and the
        previous current one is revoked. Nothing changes for the current one.

        Raises:
            StoreError: `presented` is neither the current nor the pending certificate.
        """
        with self._tx() as db:
            return CertChange(self._promote_if_pending(db, box_id, presented, time.time()))

    def revoke_cert(self, cert_serial: int, owner: str) -> None:
        """Put one certificate on the revocation list (e.g. a server's: owner "server:broker")."""
        with self._tx() as db:
            self._revoke_serials(db, owner, {cert_serial}, time.time())

    def revoked_certs(self) -> list[tuple[int, float]]:
        """(certificate serial, revocation time) of every revoked certificate."""
        return [(int(s), float(t)) for s, t in self._db().execute("SELECT cert_serial, revoked FROM revoked_certs")]

    # -- inside a transaction -------------------------------------------------------------------

    @staticmethod
    def _promote_if_pending(db: sqlite3.Connection, box_id: str, presented: int, now: float) -> list[int]:
        row = db.execute("SELECT cert_serial, cert_not_after, revoked FROM boxes WHERE box_id=?",
                         (box_id,)).fetchone()
        if row is None or row[2] is not None:
            raise StoreError(f"Box {box_id!r} is not enrolled or is revoked")
        if db.execute("SELECT 1 FROM revoked_certs WHERE cert_serial=?", (str(presented),)).fetchone():
            raise StoreError(f"certificate {presented:x} is revoked")
        if int(row[0]) == presented:
            return []
        pending = db.execute("SELECT cert_serial, not_after FROM pending_certs WHERE box_id=? AND not_after > ?",
                             (box_id, now)).fetchone()
        if pending is None or int(pending[0]) != presented:
            raise StoreError(f"certificate {presented:x} is not the current certificate of Box {box_id}")
        db.execute("INSERT INTO superseded_certs VALUES (?, ?, ?, ?)", (box_id, row[0], row[1], now))
        db.execute("UPDATE boxes SET cert_serial=?, cert_not_after=? WHERE box_id=?",
                   (pending[0], pending[1], box_id))
        db.execute("DELETE FROM pending_certs WHERE box_id=?", (box_id,))
        Credentials._revoke_serials(db, box_id, {int(row[0])}, now)
        return [int(row[0])]

    @staticmethod
    def _box_certs(db: sqlite3.Connection, box_id: str, now: float) -> set[int]:
        """Every certificate of a Box that is not revoked yet: current, pending, superseded."""
        revoked = {int(s) for (s,) in db.execute("SELECT cert_serial FROM revoked_certs WHERE box_id=?", (box_id,))}
        out = {int(s) for (s,) in db.execute("SELECT cert_serial FROM boxes WHERE box_id=?", (box_id,))}
        out |= {int(s) for (s,) in db.execute("SELECT cert_serial FROM pending_certs WHERE box_id=?", (box_id,))}
        out |= {int(s) for (s,) in db.execute(
            "SELECT cert_serial FROM superseded_certs WHERE box_id=? AND not_after > ?", (box_id, now))}
        return out - revoked

    @staticmethod
    def _revoke_serials(db: sqlite3.Connection, box_id: str, serials: set[int], now: float) -> None:
        db.executemany("INSERT OR IGNORE INTO revoked_certs VALUES (?, ?, ?)",
                       [(str(s), box_id, now) for s in serials])
