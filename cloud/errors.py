"""Errors of the reference cloud, split by whose fault they are."""


class CloudError(Exception):
    """Base of every error raised by the reference cloud."""


class PkiError(CloudError):
    """The CA cannot do what was asked (missing files, a CSR it will not sign)."""


class EnrollmentError(CloudError):
    """An enrollment request is refused; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class BrokerError(CloudError):
    """The broker cannot be started, configured or reached."""


class StoreError(CloudError):
    """The cloud's database refused an operation."""


class UnknownError(CloudError):
    """An id (Box, deployment, alert) that this cloud does not have; the message is the one wording."""


class NothingChangedError(CloudError):
    """What was asked is already so (a second revoke, stopping an ended deployment): nothing changed."""


class RepositoryError(CloudError):
    """A TUF repository operation refused (with the reason in words)."""
