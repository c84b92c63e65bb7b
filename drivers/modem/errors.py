"""Errors of the modem drivers, split by whose fault they are and whether waiting helps.

- `ModemTimeout`: the modem did not answer in time (transient, or a modem that hangs).
- `ModemGone`: its serial port or its D-Bus object is not there (unplugged, re-enumerating on USB,
  ModemManager not running); transient when the device comes back.
- `ModemRefused`: the modem answered with an error (``ERROR``, ``+CME ERROR: <n>``, a D-Bus error).
  `cause` classifies what the daemon must know: a *configuration* cause (`CONFIG_CAUSES`: no SIM,
  wrong PIN, the APN refused, registration denied) is the installer's to fix and never worth a
  modem reset; any other cause ("" included) is the modem's or the network's.
- `ModemProtocolError`: an answer that does not parse (garbage on the line, a missing field).
- `ModemConfigError`: ours, a backend built with settings that cannot work.
"""

from __future__ import annotations

from drivers.errors import DriverError

# configuration faults: fixed by a person, never by resetting the hardware
CONFIG_CAUSES = frozenset({
    "sim_missing", "sim_failure", "pin_required", "pin_wrong", "pin_unsafe", "puk_required", "apn_rejected",
    "registration_denied",
})


class ModemError(DriverError):
    """Base of the modem drivers' errors."""


class ModemConfigError(ModemError):
    """A backend built with settings that cannot work (ours)."""


class ModemTimeout(ModemError):
    """The modem did not answer in time."""


class ModemGone(ModemError):
    """The modem's port or D-Bus object is not there."""


class ModemProtocolError(ModemError):
    """The modem's answer does not parse."""


class ModemRefused(ModemError):
    """The modem answered with an error.

    Attributes:
        code: the +CME ERROR number (None for a bare ERROR or a D-Bus error).
        cause: "" or one of `CONFIG_CAUSES` (or another short word the daemon may show).
    """

    def __init__(self, message: str, *, code: int | None = None, cause: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.cause = cause

    @property
    def config_fault(self) -> bool:
        """Whether the fix is the installer's (a SIM, a PIN, an APN), not a reset."""
        return self.cause in CONFIG_CAUSES
