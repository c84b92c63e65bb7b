"""Errors of the Box's side of updates: what refused or failed an update, in words for the platform.

Decisions depend on the class: `OtaAbortedError` is the operator's abort (reported "aborted", not
"failed"); every other `OtaError` ends the update as "failed" with its message; `SlotError` says an
install or switch of the A/B software directories could not be done (nothing switched).
"""

from __future__ import annotations


class OtaError(Exception):
    """An update refused or failed; the message says why in words."""


class OtaAbortedError(OtaError):
    """The caller's abort stopped the work ("aborted: ..."); no partial file is left."""


class BundleError(OtaError):
    """A bundle that cannot be read or unpacked; the message says why."""


class SlotError(OtaError):
    """An install or switch of a software slot refused or failed; nothing was switched."""


class DownloadFailedError(OtaError):
    """The download process failed (TUF refused, the link gave up, or the process broke)."""
