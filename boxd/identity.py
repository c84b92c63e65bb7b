"""The Box's identity on disk: who it is, its key and certificate, whom it trusts.

Layout, under the state directory (`/var/lib/boxd` on a Box)::

    identity/identity.json   {"box_id", "broker_host", "broker_port", "enrolled_at", "server"}
    identity/box.key         the Box's private key (0600, generated on the Box, never leaves it)
    identity/box.crt         its certificate chain, issued by the platform
    identity/ca.crt          the platform CA (trust anchor for the broker)

`provisioning` writes it (atomically, as a whole directory); the daemon reads it.
This module only reads and validates; it does not enroll.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from boxd.errors import IdentityError

BOX_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
IDENTITY_DIR = "identity"


@dataclass(frozen=True, slots=True)
class Identity:
    """A provisioned Box's identity."""

    box_id: str
    broker_host: str
    broker_port: int
    directory: Path

    @property
    def key_file(self) -> Path:
        """The private key."""
        return self.directory / "box.key"

    @property
    def cert_file(self) -> Path:
        """The certificate chain."""
        return self.directory / "box.crt"

    @property
    def ca_file(self) -> Path:
        """The platform CA."""
        return self.directory / "ca.crt"

    def certificate(self) -> x509.Certificate:
        """The Box's own (leaf) certificate.

        Raises:
            IdentityError: the file is missing or not a certificate.
        """
        try:
            return x509.load_pem_x509_certificate(self.cert_file.read_bytes())
        except (OSError, ValueError) as e:
            raise IdentityError(f"cannot read the Box certificate {self.cert_file}: {e}") from e

    def not_after(self) -> datetime:
        """When the Box's certificate expires (UTC)."""
        return self.certificate().not_valid_after_utc

    def days_left(self, now: datetime | None = None) -> float:
        """Days until the certificate expires (negative once expired)."""
        now = now or datetime.now(UTC)
        return (self.not_after() - now).total_seconds() / 86400


def load(state_dir: Path) -> Identity:
    """Read and check the identity in `state_dir`.

    Raises:
        IdentityError: not provisioned, or the identity is incomplete or invalid.
    """
    d = state_dir / IDENTITY_DIR
    meta = d / "identity.json"
    if not meta.exists():
        raise IdentityError(f"this Box is not provisioned (no {meta}); run 'boxctl provision'")
    try:
        raw = json.loads(meta.read_text())
        box_id, host, port = raw["box_id"], raw["broker_host"], raw["broker_port"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise IdentityError(f"the identity file {meta} is unreadable: {e}") from e
    if not (isinstance(box_id, str) and BOX_ID_RE.match(box_id)):
        raise IdentityError(f"the identity file {meta} holds an invalid Box ID")
    if not (isinstance(host, str) and host and isinstance(port, int) and 0 < port < 65536):
        raise IdentityError(f"the identity file {meta} holds an invalid broker address")
    ident = Identity(box_id, host, port, d)
    for f in (ident.key_file, ident.cert_file, ident.ca_file):
        if not f.exists():
            raise IdentityError(f"the identity is incomplete: {f} is missing")
    return ident
