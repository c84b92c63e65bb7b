"""What a modem backend reports and the one protocol every backend implements (data only, no I/O).

A backend (`drivers.modem.AtModem` over a serial port, `drivers.modem.MmModem` over ModemManager's
D-Bus API) turns its peer's answers into these values; the daemon never sees an AT line or a
D-Bus variant. Every value here was validated at the boundary: strings are bounded and
printable, numbers are within their physical range or None ("the modem did not say").
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class SimState(enum.Enum):
    """The SIM card, as the modem sees it."""

    READY = "ready"  # present and unlocked
    PIN_REQUIRED = "pin_required"
    PUK_REQUIRED = "puk_required"  # too many wrong PINs: only the PUK unlocks it (a site visit)
    MISSING = "missing"
    FAILURE = "failure"  # present but unreadable (damaged, wrong size, badly seated)
    UNKNOWN = "unknown"


class RegState(enum.Enum):
    """Registration with the mobile network (3GPP TS 27.007 +CEREG <stat>, ModemManager's 3GPP state)."""

    HOME = "home"
    ROAMING = "roaming"
    SEARCHING = "searching"
    DENIED = "denied"  # the network refused the SIM (not subscribed, barred, wrong country)
    IDLE = "idle"  # not registered and not searching (radio off, or deregistered)
    UNKNOWN = "unknown"

    @property
    def registered(self) -> bool:
        """Whether data can flow (home or roaming)."""
        return self in (RegState.HOME, RegState.ROAMING)


@dataclass(frozen=True, slots=True)
class ModemIdentity:
    """Who the modem and its SIM are."""

    imei: str = ""
    iccid: str = ""  # the SIM's serial number: a new one means another SIM (a swap, or tampering)
    manufacturer: str = ""
    model: str = ""
    firmware: str = ""


@dataclass(frozen=True, slots=True)
class SimStatus:
    """The SIM's state and how many PIN attempts are left (None: the modem cannot tell)."""

    state: SimState
    pin_attempts: int | None = None
    puk_attempts: int | None = None


@dataclass(frozen=True, slots=True)
class Registration:
    """Where the modem is registered."""

    state: RegState
    operator: str = ""  # the network's name, e.g. "Telekom.de"
    plmn: str = ""  # MCC and MNC, e.g. "26201"
    tech: str = ""  # access technology: "lte", "umts", "gsm", "nr5g", "lte-m", "nb-iot", ""
    cell: str = ""  # the serving cell's id (hex, as the network gives it)
    tac: str = ""  # tracking (location) area code (hex)
    band: str = ""  # e.g. "LTE BAND 3"


@dataclass(frozen=True, slots=True)
class Signal:
    """Radio measurements; each None when the modem did not give it (LTE values only on LTE)."""

    tech: str = ""
    rssi_dbm: float | None = None
    rsrp_dbm: float | None = None
    rsrq_db: float | None = None
    sinr_db: float | None = None


@dataclass(frozen=True, slots=True)
class Bearer:
    """A data connection (PDP context / EPS bearer)."""

    connected: bool
    interface: str = ""  # the network interface the data flows through ("" when the backend does not know)
    address: str = ""  # the IPv4 address the network gave
    apn: str = ""


@dataclass(frozen=True, slots=True)
class ByteCounters:
    """Bytes received and sent, as counted by their source (an interface, or the modem itself)."""

    rx: int
    tx: int


class ModemBackend(Protocol):
    """One modem. The constructor does no I/O; `open()` takes the device, `close()` gives it back.

    Every method raises `drivers.modem.errors.ModemError` subclasses only: `ModemTimeout` (the
    modem did not answer), `ModemGone` (its port or D-Bus object disappeared), `ModemRefused`
    (it answered with an error; `.code` and `.cause` say which), `ModemProtocolError` (an answer
    that does not parse).
    """

    name: str  # "at" or "modemmanager", for messages

    async def open(self) -> None:
        """Take the device (open the port; find the modem on D-Bus) and prepare it (echo off,
        numeric errors). Raises `ModemGone` when there is nothing to take."""
        ...

    async def close(self) -> None:
        """Give the device back; never raises."""
        ...

    async def identity(self) -> ModemIdentity:
        """IMEI, ICCID (empty without a SIM), make, model and firmware."""
        ...

    async def sim(self) -> SimStatus:
        """The SIM's state and the PIN attempts left."""
        ...

    async def unlock(self, pin: str) -> None:
        """Send the SIM PIN (the caller has checked the attempts left). `ModemRefused` with
        cause "pin_wrong" when the SIM refused it."""
        ...

    async def registration(self) -> Registration:
        """The registration state, operator, technology and cell."""
        ...

    async def register(self) -> None:
        """Register again: leave the network and select it automatically (the ladder's second rung)."""
        ...

    async def signal(self) -> Signal:
        """Signal measurements now."""
        ...

    async def connect(self, apn: str) -> Bearer:
        """Bring the data bearer up with `apn`. `ModemRefused` with cause "apn_rejected" when the
        network refused the APN."""
        ...

    async def disconnect(self) -> None:
        """Take the data bearer down (the ladder's first rung disconnects, then connects)."""
        ...

    async def bearer(self) -> Bearer:
        """The data bearer's state now."""
        ...

    async def counters(self) -> ByteCounters | None:
        """The modem's own byte counters, if it keeps any (None otherwise; interfaces are read by
        the caller)."""
        ...

    async def reset(self) -> None:
        """Restart the modem (AT+CFUN=1,1; ModemManager's Reset). It disappears for a while."""
        ...
