"""Enrollment and renewal: single-use tokens for a Box serial, and the rules that sign a Box's CSR.

`new_token()` makes a token an installer can type (24 base32 characters in groups
of four, 120 bits); only its SHA-256 is stored. An enrollment (`Enroller.enroll`, served as
`POST /v1/enroll` by `cloud.endpoint`) takes `{"token", "csr", "serial"?}` and answers
`{"box_id", "certificate", "ca", "broker", "crl"}`. The Box's private key never travels: the
Box sends a CSR, and the subject of the certificate is set by the cloud (CN = the serial the
token was issued for), never taken from the CSR. Tokens never appear in logs.

A renewal (`POST /v1/renew`, `{"csr"}`) is authenticated by the Box's current certificate (or
the pending one of a rotation) in the TLS handshake; the new certificate is pending until the
Box uses it (`POST /v1/renew/confirm`), and the one it replaces is then revoked. The rules about
which certificate may do what are in `cloud.store._credentials`. This module does no HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from cloud.broker_api import BrokerControl
from cloud.errors import BrokerError, EnrollmentError, PkiError, StoreError
from cloud.pki import Pki
from cloud.store import Store
from proto import names

log = logging.getLogger("boxcloud.enroll")

_TOKEN_RE = re.compile(r"[A-Z2-7]{24}")


def new_token() -> str:
    """A fresh enrollment token, e.g. "K7QD-3MZP-TX4A-9..." (shown once, never stored)."""
    raw = base64.b32encode(secrets.token_bytes(15)).decode()
    return "-".join(raw[i : i + 4] for i in range(0, 24, 4))


def token_hash(token: str) -> str:
    """The stored form of a token; dashes, spaces and case do not matter.

    Raises:
        EnrollmentError: the text cannot be a token.
    """
    norm = re.sub(r"[\s-]", "", token).upper()
    if not _TOKEN_RE.fullmatch(norm):
        raise EnrollmentError("the enrollment token is malformed (24 letters and digits expected)", 401)
    return hashlib.sha256(norm.encode()).hexdigest()


def check_serial(serial: str) -> str:
    """Validate a Box serial (it becomes the Box ID and part of its MQTT topics).

    Raises:
        EnrollmentError: the serial has characters or a length a Box ID cannot have.
    """
    if not names.BOX_ID.fullmatch(serial):
        raise EnrollmentError(
            f"invalid serial {serial!r}: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return serial


@dataclass
class Enroller:
    """The enrollment logic, apart from HTTP.

    `revocations_changed` is called when certificates were put on the revocation list (the
    platform rewrites its CRL, reloads the broker and tells the Boxes).
    """

    pki: Pki
    store: Store
    broker: BrokerControl  # cloud.broker.Broker here (Mosquitto)
    revocations_changed: Callable[[], None] = lambda: None

    def enroll(self, token: str, csr_pem: str, serial: str | None) -> dict[str, object]:
        """Check the token, sign the CSR, give the Box its broker rights.

        Nothing is spent by a request that is malformed or whose token is not valid: the CSR is
        checked first, then the token is only read; it is claimed (a write) once both are good.
        Every certificate the Box had before ends here (re-enrolment replaces a Box).

        Raises:
            EnrollmentError: refused; the message says why (and is safe to show the installer).
        """
        h = token_hash(token)
        try:
            self.pki.load_box_csr(csr_pem)
        except PkiError as e:
            raise EnrollmentError(str(e)) from e
        box_serial = self.store.check_token(h)
        if serial is not None and serial != box_serial:
            self.store.claim_token(h)  # a token shown to the wrong Box is spent
            raise EnrollmentError(f"this token was issued for another Box (serial {box_serial})", 403)
        self.store.claim_token(h)
        try:
            chain, leaf = self.pki.sign_box_csr(csr_pem, box_serial)
            ended = self.store.enroll_box(
                box_serial, box_serial, leaf.serial_number, leaf.not_valid_after_utc.timestamp())
            if ended:  # the CRL first: a session of an old certificate kicked below cannot come back
                self.revocations_changed()
            try:
                self.broker.add_box(box_serial)
            except BrokerError as e:
                log.error("enrollment of %s: %s", box_serial, e)
                raise EnrollmentError("the platform broker is unavailable; try again in a minute", 503) from e
        except BaseException:
            self.store.release_token(h)  # our failure: the installer may try again with the same token
            raise
        log.info("enrolled Box %s (certificate serial %x%s)", box_serial, leaf.serial_number,
                 f"; {len(ended)} earlier certificate(s) revoked" if ended else "")
        return self._answer(box_serial, chain)

    def renew(self, peer: dict[str, object], csr_pem: str) -> dict[str, object]:
        """Sign a new certificate for the Box that presented `peer` (ssl's getpeercert()).

        Only the Box's current certificate, or its pending one (which then becomes current), may
        renew; the new certificate is pending until the Box uses it.

        Raises:
            EnrollmentError: no certificate, not a Box's, revoked or superseded, bad CSR.
        """
        box_id, serial = self.box_of(peer)
        try:
            self.pki.load_box_csr(csr_pem)
            chain, leaf = self.pki.sign_box_csr(csr_pem, box_id)
        except PkiError as e:
            raise EnrollmentError(str(e)) from e
        try:
            change = self.store.renew_cert(box_id, serial, leaf.serial_number, leaf.not_valid_after_utc.timestamp())
        except StoreError as e:
            raise EnrollmentError(f"renewal refused: {e}", 403) from e
        if change.revoked:
            self.revocations_changed()
        log.info("renewed the certificate of Box %s (serial %x -> %x, pending until used)", box_id, serial,
                 leaf.serial_number)
        return self._answer(box_id, chain)

    def confirm(self, peer: dict[str, object]) -> dict[str, object]:
        """The Box uses the certificate it presents: a pending one becomes current (the one before
        it is revoked).

        Raises:
            EnrollmentError: no certificate (401), not a Box's current or pending one (403).
        """
        box_id, serial = self.box_of(peer)
        try:
            change = self.store.confirm_cert(box_id, serial)
        except StoreError as e:
            raise EnrollmentError(f"confirmation refused: {e}", 403) from e
        if change.revoked:
            self.revocations_changed()
            log.info("Box %s uses its renewed certificate %x; the previous one is revoked", box_id, serial)
        return {"box_id": box_id, "certificate_serial": f"{serial:x}"}

    def box_of(self, peer: dict[str, object]) -> tuple[str, int]:
        """(Box ID, serial) of a verified client certificate that is a Box's current or pending one.

        Raises:
            EnrollmentError: no certificate (401); not a Box's, revoked, or one the Box no longer
                uses (403).
        """
        box_id, serial = _peer_identity(peer)
        if self.store.cert_state(box_id, serial) is None:
            raise EnrollmentError("the certificate presented is revoked or no longer this Box's", 403)
        return box_id, serial

    def _answer(self, box_id: str, chain: bytes) -> dict[str, object]:
        return {
            "box_id": box_id,
            "certificate": chain.decode(),
            "ca": self.pki.root_cert.read_text(),
            "broker": {"host": self.broker.host, "port": self.broker.port},
            "crl": self.pki.crl.read_text(),  # the Box checks the platform's servers against it
        }


def _peer_identity(peer: dict[str, object]) -> tuple[str, int]:
    """(Box ID, certificate serial) of a verified client certificate."""
    if not peer:
        raise EnrollmentError("this request needs the Box's current certificate in the TLS handshake", 401)
    cn = next((v for rdn in peer.get("subject", ()) for k, v in rdn if k == "commonName"), None)  # type: ignore[attr-defined]
    serial = peer.get("serialNumber")
    if not names.BOX_ID.fullmatch(cn) or not isinstance(serial, str):
        raise EnrollmentError("the certificate presented is not a Box's", 403)
    return cn, int(serial, 16)
