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

Tables `tokens`, `revoked_certs`, `pending_certs`, `superseded_certs` (and the certificate
columns of `boxes`). No network I/O.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cloud.errors import EnrollmentError, StoreError
from cloud.store._base import SECONDS, AnyRow, StoreBase, metadata
from cloud.store._dialect import Upsert
from cloud.store._fleet import boxes

CertState = Literal["current", "pending"]

tokens = sa.Table(
    "tokens", metadata,
    sa.Column("token_hash", sa.Text, primary_key=True),
    sa.Column("serial", sa.Text, nullable=False),
    sa.Column("created", SECONDS, nullable=False),
    sa.Column("expires", SECONDS, nullable=False),
    sa.Column("used", SECONDS),
)
revoked_certs = sa.Table(
    "revoked_certs", metadata,
    sa.Column("cert_serial", sa.Text, primary_key=True),
    sa.Column("box_id", sa.Text, nullable=False),  # or "server:<name>" for a server's certificate
    sa.Column("revoked", SECONDS, nullable=False),
)
pending_certs = sa.Table(
    "pending_certs", metadata,
    sa.Column("box_id", sa.Text, primary_key=True),
    sa.Column("cert_serial", sa.Text, nullable=False),
    sa.Column("not_after", SECONDS, nullable=False),
    sa.Column("issued", SECONDS, nullable=False),
)
superseded_certs = sa.Table(
    "superseded_certs", metadata,
    sa.Column("box_id", sa.Text, nullable=False),
    sa.Column("cert_serial", sa.Text, nullable=False),
    sa.Column("not_after", SECONDS, nullable=False),
    sa.Column("superseded", SECONDS, nullable=False),
)
_ENROLL = Upsert(boxes, ["box_id"], lambda new: {
    "enrolled": new.enrolled, "cert_serial": new.cert_serial, "cert_not_after": new.cert_not_after,
    "revoked": None})
_PENDING = Upsert(pending_certs, ["box_id"], lambda new: {
    "cert_serial": new.cert_serial, "not_after": new.not_after, "issued": new.issued})
_REVOKE = Upsert(revoked_certs)  # revoked already: nothing


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


class Credentials(StoreBase):
    """Token and certificate rules (a part of `Store`)."""

    # -- tokens -------------------------------------------------------------------------------

    def add_token(self, token_hash: str, serial: str, ttl_s: float) -> tuple[float, int]:
        """Record a new token for `serial`, cancelling its other live ones.

        Returns:
            the token's expiry time, and how many earlier tokens were cancelled.
        """
        now = time.time()
        with self._tx() as db:
            cancelled = db.execute(tokens.delete().where(tokens.c.serial == serial, tokens.c.used.is_(None))).rowcount
            db.execute(tokens.insert().values(token_hash=token_hash, serial=serial, created=now, expires=now + ttl_s))
        return now + ttl_s, cancelled

    def pending_tokens(self, now: float | None = None) -> list[TokenRow]:
        """Tokens not used and not expired, by serial."""
        t = tokens.c
        with self._read() as db:
            rows = db.execute(sa.select(t.serial, t.created, t.expires)
                              .where(t.used.is_(None), t.expires > (time.time() if now is None else now))
                              .order_by(t.serial, t.created))
            return [TokenRow(str(s), float(c), float(e)) for s, c, e in rows]

    def cancel_tokens(self, serial: str) -> int:
        """Cancel the unused tokens of a serial; returns how many."""
        with self._tx() as db:
            return db.execute(tokens.delete().where(tokens.c.serial == serial, tokens.c.used.is_(None))).rowcount

    def check_token(self, token_hash: str) -> str:
        """The serial a token was issued for, if it can be used now (a read: no write lock taken).

        Raises:
            EnrollmentError: the token is unknown, expired or already used (401).
        """
        t = tokens.c
        with self._read() as db:
            row = db.execute(sa.select(t.serial, t.expires, t.used).where(t.token_hash == token_hash)).first()
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
        t = tokens.c
        with self._tx() as db:
            row = db.execute(sa.select(t.serial, t.expires).where(t.token_hash == token_hash, t.used.is_(None))).first()
            if row is None or row.expires < time.time():
                raise EnrollmentError("the enrollment token has already been used", 401)
            db.execute(tokens.update().where(t.token_hash == token_hash).values(used=time.time()))
        return str(row.serial)

    def release_token(self, token_hash: str) -> None:
        """Make a claimed token usable again (the enrollment failed on our side, or the request)."""
        with self._tx() as db:
            db.execute(tokens.update().where(tokens.c.token_hash == token_hash).values(used=None))

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
            ended = _box_certs(db, box_id, now) - {cert_serial}
            db.execute(_ENROLL(db), {"box_id": box_id, "serial": serial, "enrolled": now,
                                     "cert_serial": str(cert_serial), "cert_not_after": not_after})
            db.execute(pending_certs.delete().where(pending_certs.c.box_id == box_id))
            _revoke_serials(db, box_id, ended, now)
        return sorted(ended)

    def revoke(self, box_id: str) -> int:
        """Mark a Box revoked and every certificate it has (current, pending, renewed away from and
        not expired) on the revocation list; returns the current certificate's serial."""
        now = time.time()
        with self._tx() as db:
            current = db.execute(sa.select(boxes.c.cert_serial).where(boxes.c.box_id == box_id)).scalar()
            if current is None:
                raise StoreError(f"no Box {box_id!r}")
            db.execute(boxes.update().where(boxes.c.box_id == box_id).values(revoked=now))
            _revoke_serials(db, box_id, _box_certs(db, box_id, now), now)
            db.execute(pending_certs.delete().where(pending_certs.c.box_id == box_id))
        return int(current)

    def cert_state(self, box_id: str, cert_serial: int) -> CertState | None:
        """Whether a certificate is the Box's current or pending one (None: it may not authenticate)."""
        with self._read() as db:
            row = db.execute(sa.select(boxes.c.cert_serial, boxes.c.revoked).where(boxes.c.box_id == box_id)).first()
            if row is None or row.revoked is not None or _is_revoked(db, cert_serial):
                return None
            if int(row.cert_serial) == cert_serial:
                return "current"
            pending = _pending(db, box_id, time.time())
        return "pending" if pending and int(pending.cert_serial) == cert_serial else None

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
            revoked = _promote_if_pending(db, box_id, presented, now)
            old = db.execute(sa.select(pending_certs.c.cert_serial).where(pending_certs.c.box_id == box_id)).scalar()
            if old is not None:
                _revoke_serials(db, box_id, {int(old)}, now)
                revoked.append(int(old))
            db.execute(_PENDING(db), {"box_id": box_id, "cert_serial": str(new_serial), "not_after": not_after,
                                      "issued": now})
        return CertChange(revoked)

    def confirm_cert(self, box_id: str, presented: int) -> CertChange:
        """The Box uses `presented`: if it is the pending certificate, it becomes current and the
        previous current one is revoked. Nothing changes for the current one.

        Raises:
            StoreError: `presented` is neither the current nor the pending certificate.
        """
        with self._tx() as db:
            return CertChange(_promote_if_pending(db, box_id, presented, time.time()))

    def revoke_cert(self, cert_serial: int, owner: str) -> None:
        """Put one certificate on the revocation list (e.g. a server's: owner "server:broker")."""
        with self._tx() as db:
            _revoke_serials(db, owner, {cert_serial}, time.time())

    def revoked_certs(self) -> list[tuple[int, float]]:
        """(certificate serial, revocation time) of every revoked certificate."""
        with self._read() as db:
            return [(int(s), float(t)) for s, t in db.execute(sa.select(revoked_certs.c.cert_serial,
                                                                        revoked_certs.c.revoked))]


# -- inside a transaction ---------------------------------------------------------------------


def _is_revoked(db: Connection, cert_serial: int) -> bool:
    return db.execute(sa.select(revoked_certs.c.cert_serial)
                      .where(revoked_certs.c.cert_serial == str(cert_serial))).first() is not None


def _pending(db: Connection, box_id: str, now: float) -> AnyRow | None:
    p = pending_certs.c
    return db.execute(sa.select(p.cert_serial, p.not_after).where(p.box_id == box_id, p.not_after > now)).first()


def _promote_if_pending(db: Connection, box_id: str, presented: int, now: float) -> list[int]:
    b = boxes.c
    row = db.execute(sa.select(b.cert_serial, b.cert_not_after, b.revoked).where(b.box_id == box_id)).first()
    if row is None or row.revoked is not None:
        raise StoreError(f"Box {box_id!r} is not enrolled or is revoked")
    if _is_revoked(db, presented):
        raise StoreError(f"certificate {presented:x} is revoked")
    if int(row.cert_serial) == presented:
        return []
    pending = _pending(db, box_id, now)
    if pending is None or int(pending.cert_serial) != presented:
        raise StoreError(f"certificate {presented:x} is not the current certificate of Box {box_id}")
    db.execute(superseded_certs.insert().values(box_id=box_id, cert_serial=row.cert_serial,
                                                not_after=row.cert_not_after, superseded=now))
    db.execute(boxes.update().where(b.box_id == box_id).values(cert_serial=pending.cert_serial,
                                                               cert_not_after=pending.not_after))
    db.execute(pending_certs.delete().where(pending_certs.c.box_id == box_id))
    _revoke_serials(db, box_id, {int(row.cert_serial)}, now)
    return [int(row.cert_serial)]


def _box_certs(db: Connection, box_id: str, now: float) -> set[int]:
    """Every certificate of a Box that is not revoked yet: current, pending, superseded."""
    def serials(query: sa.Select[Any]) -> set[int]:
        return {int(s) for s in db.execute(query).scalars()}

    s = superseded_certs.c
    revoked = serials(sa.select(revoked_certs.c.cert_serial).where(revoked_certs.c.box_id == box_id))
    out = serials(sa.select(boxes.c.cert_serial).where(boxes.c.box_id == box_id))
    out |= serials(sa.select(pending_certs.c.cert_serial).where(pending_certs.c.box_id == box_id))
    out |= serials(sa.select(s.cert_serial).where(s.box_id == box_id, s.not_after > now))
    return out - revoked


def _revoke_serials(db: Connection, box_id: str, serials: set[int], now: float) -> None:
    if serials:
        db.execute(_REVOKE(db), [{"cert_serial": str(s), "box_id": box_id, "revoked": now} for s in sorted(serials)])
