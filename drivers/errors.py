"""Errors of the field-bus drivers, split by whose fault they are.

`ConfigError`: ours, a device or point configuration that cannot work; the message
names the device, the point and the field. `DecodeError` and `EncodeError`: a value
that does not fit its point's type (the peer's answer, or a value we were asked to
write). `SimulatorError`: a simulator could not start. Device faults met while
polling are not raised at all: `PointSource.read()` reports them as a sample's
`Quality`.
"""


class DriverError(Exception):
    """Base of every error raised by the drivers."""


class ConfigError(DriverError):
    """A device or point configuration is invalid; the message says which field and why."""


class DecodeError(DriverError):
    """Registers or bits could not be decoded into the point's type."""


class EncodeError(DriverError):
    """A value cannot be encoded into the point's type (wrong kind, out of range)."""


class SimulatorError(DriverError):
    """A simulator could not start (e.g. its address is in use)."""


class UnknownPointError(DriverError):
    """A point name that the bus does not have."""


class WriteError(DriverError):
    """A write was not done: not writable, out of range, wrong type, or refused by the device."""


class ScanError(DriverError):
    """An installer's scan could not run; the message says what to check, in the installer's
    words (e.g. "connection refused by 10.0.0.5:502", "wrong baud rate or parity suspected")."""


def show(value: object) -> str:
    """A short, printable rendering of an untrusted value for an error message."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an integer of over 4300 digits (TOML hex), nesting too deep
        text = f"<{type(value).__name__} too big to show>"
    return text if len(text) <= 40 else text[:37] + "..."


class WriteRefusedError(WriteError):
    """A write refused before anything was sent: the point is not writable, the value is of the wrong
    kind or outside the point's bounds, or the priority is not one the bus takes (the asker's fault)."""
