"""The signatures a webhook delivery carries. Pure: no I/O, no clock.

Two schemes, both HMAC-SHA256:

- **per item** (the platform's own): each item of a delivery is ``{"id", "box", "data", "hmac"}``
  where ``data`` is the item's content as a JSON *text* and ``hmac`` the lowercase hex
  HMAC-SHA256 of that text's UTF-8 bytes under the connector's current secret (the key is the
  secret's bytes, as below). A receiver checks an item without re-serialising anything.
- **per delivery**, the Standard Webhooks specification (standardwebhooks.com): headers
  ``webhook-id`` (stable across retries: a receiver drops what it has seen), ``webhook-timestamp``
  (Unix seconds of this attempt) and ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of
  "<id>.<timestamp>.<raw body>">``, one per secret valid (two during a rotation), space-separated.

A secret is ``whsec_`` + base64 of 32 random bytes; the key is the decoded bytes.
Test vectors: docs/integrations.md (and tests/unit/cloud/test_hook_signing.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence

PREFIX = "whsec_"
TOLERANCE_S = 300  # a receiver refuses a timestamp further than this from its clock (replays)


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def key(secret: str) -> bytes:
    """A secret's key bytes. Raises ValueError for a malformed secret."""
    if not secret.startswith(PREFIX):
        raise ValueError("a signing secret starts with 'whsec_'")
    try:
        return base64.b64decode(secret[len(PREFIX):], validate=True)
    except binascii.Error as e:
        raise ValueError("a signing secret is whsec_ and base64") from e


def item_hmac(secret: str, data: str) -> str:
    """The hex HMAC-SHA256 of an item's data text."""
    return hmac.new(key(secret), data.encode(), hashlib.sha256).hexdigest()


def signature(secrets_: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: one ``v1,<base64>`` per secret."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join("v1," + base64.b64encode(hmac.new(key(s), signed, hashlib.sha256).digest()).decode()
                    for s in secrets_)


def verify(secret: str, msg_id: str, timestamp: str, body: bytes, header: str, *, now: float) -> bool:
    """What a receiver does (the verifier in docs/integrations.md, here for the tests)."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(now - ts) > TOLERANCE_S:
        return False
    expected = signature([secret], msg_id, ts, body).split(",", 1)[1]
    return any(hmac.compare_digest(expected, s.split(",", 1)[1]) for s in header.split() if s.startswith("v1,"))
