"""Errors of `boxctl`: every message is written for an installer, one line, no jargon beyond need."""


class ProvisionError(Exception):
    """Provisioning failed; nothing was written. The message says what to do."""
