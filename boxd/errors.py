"""Errors of the daemon, split by whose fault they are.

The configuration's, the identity's and the wire's errors are their packages' (`boxconfig.errors`,
`trust.errors`, `proto.errors`).
`LocalError`: ours (a broken state directory).
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


class QueueError(LocalError):
    """The on-disk queue cannot be opened or written."""


class CommandFailedError(BoxdError):
    """A command ran and did not do what it should; the message says why (replied "failed")."""
