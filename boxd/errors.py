"""Errors of the daemon, split by whose fault they are.

`LocalError`: ours (bad configuration, a broken state directory).
`RemoteError`: the peer's (the broker refused us, sent garbage).
`TransientError` may go away by retrying; the others need a person.
"""


class BoxdError(Exception):
    """Base of every error raised by the daemon."""


class LocalError(BoxdError):
    """Something on the Box is wrong: configuration, files, identity."""


class RemoteError(BoxdError):
    """The peer (broker, platform) misbehaved or refused us."""


class TransientError(BoxdError):
    """A failure that retrying may cure (network down, broker restarting)."""


class ConfigError(LocalError):
    """The configuration file is invalid; the message says where and why."""


class IdentityError(LocalError):
    """The Box has no usable identity (not provisioned, files missing or unreadable)."""


class WireError(RemoteError):
    """A message could not be decoded: bad version, bad structure, over a size limit."""


class QueueError(LocalError):
    """The on-disk queue cannot be opened or written."""
