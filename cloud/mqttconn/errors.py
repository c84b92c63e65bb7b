"""Errors of the MQTT connector, split by whose fault they are."""

from cloud.hooks.errors import HookError, TargetRefusedError


class LinkError(HookError):
    """The customer's broker could not be reached or used (down, TLS refused, credentials refused, a
    message refused): transient as far as the platform knows; tried again with backoff."""


__all__ = ["HookError", "LinkError", "TargetRefusedError"]
