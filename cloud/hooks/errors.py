"""Errors of the connectors (webhooks), split by whose fault they are."""

from cloud.errors import CloudError


class HookError(CloudError):
    """Base of every connector error."""


class TargetRefusedError(HookError):
    """An endpoint's address is one the platform never sends to (the customer's configuration: SSRF defence).

    Permanent for that address: the delivery is not tried until the endpoint says otherwise."""


class DeliveryError(HookError):
    """The customer's endpoint did not take a delivery (unreachable, TLS refused, a non-2xx answer).

    `retry`: whether trying again later may help (a 5xx, a timeout) or not (a 4xx but 408/429)."""

    def __init__(self, message: str, *, retry: bool = True, status: int | None = None) -> None:
        super().__init__(message)
        self.retry, self.status = retry, status
