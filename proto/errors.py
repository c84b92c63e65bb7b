"""Errors of the Box<->platform contract.

Decoding a message is the only thing here that fails, and it always fails for the same reason:
the peer sent something this side will not take (bad framing, bad CBOR, a field missing or of the
wrong type or range, an unknown topic). That is the peer's fault and permanent (sending the same
bytes again would not mend them), so there is one blame class: callers decide on `RejectedError`
(the Box answers "rejected" with `reasons`; the cloud logs the message and acknowledges it).
"""

from __future__ import annotations

from collections.abc import Iterable


class ProtoError(Exception):
    """Base of the errors of `proto`."""


class RejectedError(ProtoError):
    """A message is refused; `reasons` says why (at least one, the message itself when not given).

    Raised by decoding (its subclass `WireError`) and by a receiver's own checks of a message it
    decoded (a configuration that does not validate, a command its state does not allow): either
    way the answer to the sender is "rejected" with the reasons.
    """

    def __init__(self, message: str, reasons: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.reasons: list[str] = list(reasons) or [message]


class WireError(RejectedError):
    """A payload could not be decoded: bad version, bad structure, over a size limit, a field of
    the wrong type or out of range; the message says what."""


class TopicError(WireError):
    """A topic name outside the namespace (`proto.topics`)."""


class ManifestError(WireError):
    """A software bundle's manifest is not valid (`proto.release`)."""
