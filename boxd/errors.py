"""Errors of the daemon.

The configuration's, the identity's and the wire's errors are their packages' (`boxconfig.errors`,
`trust.errors`, `proto.errors`); a field bus's are `drivers.errors` (a `WriteRefusedError` is the
asker's fault and answered "rejected"; any other `DriverError` is the device's and answered
"failed"). Whose fault an error is decides what the daemon does, so the classes here are the
ones a decision is made on: `QueueError` (the state directory: the bus task fails and is
restarted with backoff, the daemon goes on) and `CommandFailedError` (a command that ran and did
not do what it should: answered "failed"). `boxd.supervisor` adds `FatalError` (the daemon cannot
go on) and `Stop` (a planned exit, not an error).
"""


class BoxdError(Exception):
    """Base of every error raised by the daemon."""


class QueueError(BoxdError):
    """The on-disk queue cannot be opened or written (ours: the state directory, the disk)."""


class CommandFailedError(BoxdError):
    """A command ran and did not do what it should; the message says why (replied "failed")."""
