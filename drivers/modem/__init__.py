"""The 4G modem behind one small protocol (`ModemBackend`), with two implementations.

- `MmModem`: through ModemManager's D-Bus API (dbus-fast): the default on a Debian Box.
- `AtModem`: direct AT commands over the modem's serial port (pyserial; 3GPP TS 27.007 and
  Quectel's vendor commands), for modules ModemManager does not handle and Boxes without it. When
  ModemManager runs, the port is used only while ModemManager is told to keep off (`inhibited`).

The AT protocol's pure core is `drivers.modem._at` (bytes in, events out), its answers' parsers
`drivers.modem._at_parse`; `drivers.modem._netif` reads interfaces without privilege. This package
imports nothing of `boxd`: it knows modems, not recovery ladders.
"""

from drivers.modem._at_modem import APN_RE, PIN_RE, AtModem
from drivers.modem._mm import MmModem, inhibited
from drivers.modem._types import (
    Bearer,
    ByteCounters,
    ModemBackend,
    ModemIdentity,
    Registration,
    RegState,
    Signal,
    SimState,
    SimStatus,
)
from drivers.modem.errors import (
    CONFIG_CAUSES,
    ModemError,
    ModemGone,
    ModemProtocolError,
    ModemRefused,
    ModemTimeout,
)

__all__ = [
    "APN_RE", "CONFIG_CAUSES", "PIN_RE", "AtModem", "Bearer", "ByteCounters", "MmModem", "ModemBackend",
    "ModemError", "ModemGone", "ModemIdentity", "ModemProtocolError", "ModemRefused", "ModemTimeout", "RegState",
    "Registration", "Signal", "SimState", "SimStatus", "inhibited", "make_backend",
]


def make_backend(kind: str, port: str, *, interface: str = "", baudrate: int = 115200, timeout_s: float = 3.0,
                 network_timeout_s: float = 60.0, bus_address: str = "", inhibit_mm: bool = True) -> ModemBackend:
    """The backend `kind` ("modemmanager" or "at") for the modem on `port` (no I/O).

    With "at" and `inhibit_mm`, ModemManager (if it runs) is kept off the device while the port is open.
    """
    if kind == "modemmanager":
        return MmModem(port, bus_address=bus_address, timeout_s=max(timeout_s, 5.0),
                       network_timeout_s=network_timeout_s)

    def inhibit() -> object:
        return inhibited(port, bus_address)

    return AtModem(port, baudrate=baudrate, interface=interface, timeout_s=timeout_s,
                   network_timeout_s=network_timeout_s, inhibit=inhibit if inhibit_mm else None)  # type: ignore[arg-type]
