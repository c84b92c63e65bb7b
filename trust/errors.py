"""Errors of `trust`: the Box's identity, its TLS contexts, the platform's CRL, enrollment and renewal.

Every message is written for the person who reads it (an installer at `boxctl`, an operator reading
a command's reply): one line that says what to do. Decisions depend on two classes only:
`IdentityError` (this Box has no usable identity: ours, a person must provision it) and
`EnrollError` (the platform or the way to it refused or failed: the enrollment, renewal or
confirmation did not happen, nothing was written).
"""

from __future__ import annotations


class TrustError(Exception):
    """Base of the errors of `trust`."""


class IdentityError(TrustError):
    """The Box has no usable identity (not provisioned, files missing or unreadable)."""


class EnrollError(TrustError):
    """An enrollment, renewal or confirmation did not happen; nothing was written. The message says why."""


class CrlError(TrustError):
    """A revocation list must not be used (bad signature, not newer than the one kept, unreadable)."""
