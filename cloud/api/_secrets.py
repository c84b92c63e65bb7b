"""The users' secrets: password hashes, API keys, TOTP codes, recovery codes, seeds at rest. Pure.

- Passwords: Argon2id at OWASP's parameters (19 MiB, 2 passes, 1 lane: the Password Storage Cheat
  Sheet's first choice), through argon2-cffi. A name that is no user's is checked against a dummy
  hash of the same cost: a wrong name and a wrong password take the same time.
- API keys: ``boxk_`` + a 12-hex id + ``_`` + 32 base62 characters of secret (190 bits) + a 6-character
  CRC-32 checksum (as GitHub's tokens: a scanner finds leaked keys by their prefix and checks the
  checksum without asking us). Stored as SHA-256 of the secret: a slow hash protects secrets a person
  chose, which an attacker can guess; 190 random bits cannot be guessed, so the key's check stays
  fast on every request (OWASP and NIST SP 800-63B's note on high-entropy secrets).
- TOTP (RFC 6238, SHA-1, 6 digits, 30 s, via pyotp): a code is accepted in the step before, the
  current one and the next (clock skew); the step of the code accepted is returned, so that the
  caller can refuse the same step twice. The otpauth:// URI also as a QR code to scan (qrcode: an
  SVG, which needs neither Pillow nor a PNG encoder).
- Recovery codes: 80 random bits each (16 base32 characters in groups of four), stored as SHA-256.
- TOTP seeds must be readable to check a code: stored encrypted (Fernet, AES-128-CBC + HMAC) with a
  key kept in a 0600 file beside the database, not in it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
import zlib
from functools import lru_cache

import argon2
import pyotp
import qrcode
from cryptography.fernet import Fernet, InvalidToken
from qrcode.image.svg import SvgPathImage

KEY_PREFIX = "boxk_"
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_KEY = re.compile(r"boxk_([0-9a-f]{12})_([0-9A-Za-z]{32})([0-9A-Za-z]{6})")
TOTP_STEP_S = 30

_HASHER = argon2.PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, hash_len=32, salt_len=16,
                                type=argon2.Type.ID)


def hash_password(password: str) -> str:
    """An Argon2id PHC string of the password (slow on purpose: tens of ms)."""
    return _HASHER.hash(password)


@lru_cache(maxsize=1)
def _dummy() -> str:
    return _HASHER.hash(secrets.token_urlsafe(16))


def check_password(stored: str | None, password: str) -> bool:
    """Whether the password matches the stored hash; None (no user, no password) costs the same and fails."""
    try:
        return _HASHER.verify(stored or _dummy(), password) and stored is not None
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False


def _base62(n: int, width: int) -> str:
    out = ""
    for _ in range(width):
        n, r = divmod(n, 62)
        out = _B62[r] + out
    return out


def new_key() -> tuple[str, str, str]:
    """A new API key: (its id, the key to show once, the hash to store)."""
    key_id = secrets.token_hex(6)
    secret = "".join(secrets.choice(_B62) for _ in range(32))
    body = f"{KEY_PREFIX}{key_id}_{secret}"
    return key_id, body + _base62(zlib.crc32(body.encode()), 6), key_hash(secret)


def parse_key(text: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed key whose checksum holds; None otherwise (a typo, or not a key)."""
    m = _KEY.fullmatch(text)
    if not m:
        return None
    body = text[:-6]
    if not hmac.compare_digest(_base62(zlib.crc32(body.encode()), 6), m[3]):
        return None
    return m[1], m[2]


def key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_key(text: str) -> bool:
    """Whether a text has a key's shape (for the scan of logs and responses in tests)."""
    return bool(_KEY.search(text))


def new_seed() -> str:
    """A TOTP seed (base32, 160 bits)."""
    return pyotp.random_base32(32)


def otpauth_uri(seed: str, user: str, issuer: str = "boxcloud") -> str:
    """The otpauth:// URI an authenticator app takes (as a QR code, or pasted)."""
    return pyotp.TOTP(seed).provisioning_uri(name=user, issuer_name=issuer)


def otpauth_qr(uri: str) -> str:
    """The otpauth:// URI as a QR code an authenticator app scans: an SVG as a ``data:`` URI (an img's src)."""
    image = qrcode.make(uri, image_factory=SvgPathImage, box_size=10, border=4,
                        error_correction=qrcode.constants.ERROR_CORRECT_M)
    return "data:image/svg+xml;base64," + base64.b64encode(image.to_string()).decode()


def totp_now(seed: str, at: float | None = None) -> str:
    """The code for a time (tests and the demo)."""
    return pyotp.TOTP(seed).at(int(at if at is not None else time.time()))


def totp_step(seed: str, code: str, now: float) -> int | None:
    """The time step whose code `code` is (the one before, now, or the one after); None if none."""
    if not re.fullmatch(r"\d{6}", code):
        return None
    totp = pyotp.TOTP(seed)
    here = int(now) // TOTP_STEP_S
    for step in (here - 1, here, here + 1):
        if hmac.compare_digest(totp.at(step * TOTP_STEP_S), code):
            return step
    return None


def new_recovery_codes(n: int = 10) -> list[str]:
    """Recovery codes, shown once: 16 base32 characters (80 bits) in groups of four."""
    codes = []
    for _ in range(n):
        raw = base64.b32encode(secrets.token_bytes(10)).decode().lower()
        codes.append("-".join(raw[i:i + 4] for i in range(0, 16, 4)))
    return codes


def recovery_hash(code: str) -> str:
    return hashlib.sha256(code.strip().lower().replace("-", "").encode()).hexdigest()


class Seeds:
    """Encrypts and decrypts TOTP seeds with one key (Fernet)."""

    def __init__(self, key: bytes) -> None:
        self._f = Fernet(key)

    @staticmethod
    def new_key() -> bytes:
        return Fernet.generate_key()

    def seal(self, seed: str) -> str:
        return self._f.encrypt(seed.encode()).decode()

    def open(self, sealed: str) -> str | None:
        try:
            return self._f.decrypt(sealed.encode()).decode()
        except (InvalidToken, ValueError):
            return None
