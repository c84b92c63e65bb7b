"""Errors of the BACnet/IP driver, split by whose fault they are.

Ours (the Box's set-up): `InterfaceError` (the field-bus interface is missing or has
no IPv4 address) and `BindError` (the UDP port is taken). The peer's: `NoAnswerError`
(a device did not answer in time: transient) and `DeviceRefusedError` (a device
answered with an Error, Reject or Abort PDU). `DeviceNotFoundError`: no device
answered a Who-Is for an instance. Configuration problems are `drivers.errors.ConfigError`
and refused writes `drivers.errors.WriteError`, as for every bus.

`BacnetSource.run()` never raises the peer's errors: they become sample qualities.
The discovery functions (`drivers.bacnet.discover`) do raise them, for the installer.
"""

from __future__ import annotations

from drivers.errors import DriverError


class BacnetError(DriverError):
    """Base of the errors that only the BACnet driver raises."""


class InterfaceError(BacnetError):
    """The field-bus interface does not exist, or has no IPv4 address (the Box's set-up)."""


class BindError(BacnetError):
    """The BACnet/IP UDP socket could not be bound (port in use, address gone)."""


class NoAnswerError(BacnetError):
    """A device did not answer a confirmed request within the APDU timeout and retries."""


class DeviceRefusedError(BacnetError):
    """A device answered with an Error, Reject or Abort PDU; the message gives its reason."""


class DeviceNotFoundError(BacnetError):
    """No I-Am came back for a device instance."""
