"""The Box's identity on disk: who it is, its key and certificate, whom it trusts.

Layout, under the state directory (`/var/lib/boxd` on a Box)::

    identity/identity.json   {"box_id", "broker_host", "broker_port", "enrolled_at", "server"}
    identity/box.key         the Box's private key (0600, generated on the Box, never leaves it)
    identity/box.crt         its certificate chain, issued by the platform
    identity/ca.crt          the platform CA (trust anchor for the broker)

`trust.enroll` writes it (`stage`: atomically, as a whole directory, the key 0600 from its first
byte); the daemon reads it (`load`), switches to a renewed one and back (`activate_next`,
`commit`, `revert`, `recover`). This module does not speak to the platform.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from boxkit.files import fsync_dir, write_atomic, write_secret
from proto import names
from trust.errors import IdentityError

IDENTITY_DIR = "identity"
NEXT_DIR = "identity.next"  # a renewed identity, staged, not yet tried
PREV_DIR = "identity.prev"  # the identity before the switch, kept until the new one works


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

    @property
    def crl_file(self) -> Path:
        """The platform's revocation list (`trust.crl`), beside the identity: it outlives renewals."""
        return self.directory.parent / "crl.pem"

    def not_after(self) -> datetime:
        """When the Box's own (leaf) certificate expires (UTC).

        Raises:
            IdentityError: the file is missing or not a certificate.
        """
        try:
            return cert_not_after(self.cert_file.read_bytes())
        except (OSError, ValueError) as e:
            raise IdentityError(f"cannot read the Box certificate {self.cert_file}: {e}") from e

    def days_left(self, now: datetime | None = None) -> float:
        """Days until the certificate expires (negative once expired)."""
        now = now or datetime.now(UTC)
        return (self.not_after() - now).total_seconds() / 86400


def _der(buf: bytes, at: int) -> tuple[int, int, int]:
    """The (tag, start of content, end of content) of the DER element at `at`."""
    if at + 2 > len(buf):
        raise ValueError("truncated DER")
    tag, n = buf[at], buf[at + 1]
    at += 2
    if n & 0x80:
        size = n & 0x7F
        if not 0 < size <= 4 or at + size > len(buf):
            raise ValueError("bad DER length")
        n, at = int.from_bytes(buf[at:at + size], "big"), at + size
    if at + n > len(buf):
        raise ValueError("truncated DER")
    return tag, at, at + n


def cert_not_after(pem: bytes) -> datetime:
    """The notAfter of the first certificate in a PEM file.

    A few lines of DER instead of the `cryptography` package, which the daemon would
    otherwise load (a second OpenSSL, ~10 MB of memory) for this one date.

    Raises:
        ValueError: not a PEM certificate.
    """
    m = re.search(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", pem, re.S)
    if not m:
        raise ValueError("no PEM certificate")
    der = base64.b64decode(b"".join(m[1].split()), validate=True)
    _, at, _ = _der(der, 0)  # Certificate
    tag, at, end = _der(der, at)  # TBSCertificate
    if tag != 0x30:
        raise ValueError("not a certificate")
    fields: list[tuple[int, int, int]] = []
    while at < end and len(fields) < 5:
        tag, start, stop = _der(der, at)
        fields.append((tag, start, stop))
        at = stop
    if fields and fields[0][0] == 0xA0:  # [0] version
        fields.pop(0)
    if len(fields) < 4 or fields[3][0] != 0x30:
        raise ValueError("certificate has no validity")
    v_at = fields[3][1]  # serial, signature, issuer, validity
    _, _, nb_end = _der(der, v_at)
    tag, start, stop = _der(der, nb_end)
    text = der[start:stop].decode("ascii")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ: 50..99 are 19xx (RFC 5280)
        text = ("19" if int(text[:2]) >= 50 else "20") + text
    elif tag != 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        raise ValueError("certificate notAfter has an unknown time type")
    return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC)


def activate_next(state_dir: Path) -> None:
    """Switch to the staged renewed identity, keeping the current one as `identity.prev`.

    Two renames, each atomic; `recover` finishes a switch that a power cut interrupted.
    """
    cur, nxt, prev = state_dir / IDENTITY_DIR, state_dir / NEXT_DIR, state_dir / PREV_DIR
    if not nxt.is_dir():
        raise IdentityError("no renewed identity is staged")
    if prev.exists():
        shutil.rmtree(prev)
    cur.rename(prev)
    nxt.rename(cur)
    fsync_dir(state_dir)


def commit(state_dir: Path) -> None:
    """The new identity works: forget the previous one."""
    shutil.rmtree(state_dir / PREV_DIR, ignore_errors=True)
    fsync_dir(state_dir)


def revert(state_dir: Path) -> None:
    """The new identity does not work: go back to the previous one (the new one is dropped)."""
    cur, prev = state_dir / IDENTITY_DIR, state_dir / PREV_DIR
    if not prev.is_dir():
        raise IdentityError("there is no previous identity to go back to")
    failed = state_dir / f"{IDENTITY_DIR}.failed"
    if failed.exists():
        shutil.rmtree(failed)
    if cur.exists():
        cur.rename(failed)
    prev.rename(cur)
    fsync_dir(state_dir)


def recover(state_dir: Path) -> str | None:
    """At start: finish a switch that was cut between its two renames. Returns what was done."""
    cur, nxt, prev = state_dir / IDENTITY_DIR, state_dir / NEXT_DIR, state_dir / PREV_DIR
    if cur.exists():
        return None
    if nxt.is_dir() and prev.is_dir():
        nxt.rename(cur)
        fsync_dir(state_dir)
        return "finished switching to the renewed identity"
    if prev.is_dir():
        prev.rename(cur)
        fsync_dir(state_dir)
        return "went back to the previous identity"
    return None


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
    if not names.BOX_ID.fullmatch(box_id):
        raise IdentityError(f"the identity file {meta} holds an invalid Box ID")
    if not (isinstance(host, str) and names.is_host(host) and isinstance(port, int) and 0 < port < 65536):
        raise IdentityError(f"the identity file {meta} holds an invalid broker address")
    ident = Identity(box_id, host, port, d)
    for f in (ident.key_file, ident.cert_file, ident.ca_file):
        if not f.exists():
            raise IdentityError(f"the identity is incomplete: {f} is missing")
    return ident


def server_url(state_dir: Path) -> str:
    """The enrollment server's address (``https://host:port``), where renewals and updates come from.

    Raises:
        IdentityError: the identity does not say (or cannot be read).
    """
    try:
        meta = json.loads((state_dir / IDENTITY_DIR / "identity.json").read_text())
    except (OSError, ValueError) as e:
        raise IdentityError(f"cannot read the identity in {state_dir}: {e}") from None
    server = meta.get("server") if isinstance(meta, dict) else None
    if not isinstance(server, str) or not server.startswith("https://"):
        raise IdentityError("the identity does not say where the enrollment server is (provision again)")
    return server


def _give_to_owner_of(state_dir: Path, tmp: Path) -> None:
    """boxctl runs as root, boxd as its own user: the identity belongs to the state directory's owner."""
    if os.geteuid() != 0:
        return
    st = state_dir.stat()
    for p in (tmp, *tmp.iterdir()):
        os.chown(p, st.st_uid, st.st_gid)


def stage(state_dir: Path, key_pem: bytes, chain: bytes, ca: bytes, meta: dict[str, object], *,
          name: str, keep_old: bool = False) -> Path:
    """Write a whole identity directory as `state_dir/name`, atomically (temporary directory,
    fsync, rename); what was there is kept aside (`keep_old`) or replaced. Returns it.

    Raises:
        IdentityError: it cannot be written (nothing was changed).
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".identity-", dir=state_dir))
    try:
        tmp.chmod(0o700)
        write_secret(tmp / "box.key", key_pem)
        write_atomic(tmp / "box.crt", chain)
        write_atomic(tmp / "ca.crt", ca)
        write_atomic(tmp / "identity.json", json.dumps(meta, indent=1).encode())
        _give_to_owner_of(state_dir, tmp)
        final = state_dir / name
        if final.exists():
            if keep_old:
                final.rename(state_dir / f"{name}.old-{int(time.time())}")
            else:
                shutil.rmtree(final)
        tmp.rename(final)
        fsync_dir(state_dir)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise IdentityError(f"cannot write the identity in {state_dir}: {e.strerror or e}") from e
    return final
