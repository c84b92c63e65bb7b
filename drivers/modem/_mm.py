"""The modem through ModemManager's D-Bus API (dbus-fast, asyncio): the default `ModemBackend` on a Box.

Does: connect to the system bus (or a given address: the tests' private bus), find the modem
(the one whose ports name `port`, else the first), and map the protocol onto ModemManager 1.20+:
``Modem`` (State, UnlockRequired, UnlockRetries, Enable, Reset), ``Sim`` (SimIdentifier, SendPin),
``Modem3gpp`` (RegistrationState, OperatorName, Register), ``Modem.Signal`` (Setup, Lte/Umts/Gsm),
``Modem.Simple`` (Connect, Disconnect) and ``Bearer`` (Connected, Interface, Ip4Config, Stats).
Every answer is checked before use: a missing property or one of the wrong type is a
`ModemProtocolError`. ModemManager's errors are classified into the same causes as +CME ERROR
(no SIM, wrong PIN, APN refused, registration denied). `inhibited()` keeps ModemManager off the
device while direct AT is used (``InhibitDevice``; ModemManager ends the inhibition itself if the
caller's bus connection drops).

Does not: send AT commands through ModemManager (its ``Command`` method needs debug mode), or
configure the network interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from drivers.modem._types import (
    Bearer,
    ByteCounters,
    ModemIdentity,
    Registration,
    RegState,
    Signal,
    SimState,
    SimStatus,
)
from drivers.modem.errors import ModemGone, ModemProtocolError, ModemRefused, ModemTimeout

log = logging.getLogger("drivers.modem.mm")

SERVICE = "org.freedesktop.ModemManager1"
ROOT = "/org/freedesktop/ModemManager1"
MODEM = SERVICE + ".Modem"
MODEM_3GPP = MODEM + ".Modem3gpp"
SIGNAL = MODEM + ".Signal"
SIMPLE = MODEM + ".Simple"
SIM = SERVICE + ".Sim"
BEARER = SERVICE + ".Bearer"
PROPS = "org.freedesktop.DBus.Properties"
OBJECTS = "org.freedesktop.DBus.ObjectManager"

_STATE_FAILED, _STATE_LOCKED, _STATE_DISABLED = -1, 2, 3
_FAILED_SIM = {2: SimState.MISSING, 3: SimState.FAILURE}
_LOCKS = {1: SimState.READY, 2: SimState.PIN_REQUIRED, 4: SimState.PUK_REQUIRED}
_REG = {0: RegState.IDLE, 1: RegState.HOME, 2: RegState.SEARCHING, 3: RegState.DENIED, 4: RegState.UNKNOWN,
        5: RegState.ROAMING, 6: RegState.HOME, 7: RegState.ROAMING, 9: RegState.HOME, 10: RegState.ROAMING}
_TECH = ((1 << 15, "nr5g"), (1 << 17, "nb-iot"), (1 << 16, "lte-m"), (1 << 14, "lte"), (0x3E0, "umts"), (0x1E, "gsm"))
# ModemManager error names (their last part) -> cause
_CAUSES = {"SimNotInserted": "sim_missing", "SimFailure": "sim_failure", "SimWrong": "sim_failure",
           "IncorrectPassword": "pin_wrong", "SimPin": "pin_required", "SimPuk": "puk_required",
           "MissingOrUnknownApn": "apn_rejected", "GprsServiceOptionNotSubscribed": "apn_rejected",
           "GprsServiceOptionNotSupported": "apn_rejected", "GprsUserAuthenticationFailed": "apn_rejected",
           "GprsPlmnNotAllowed": "registration_denied", "GprsIllegalMs": "registration_denied",
           "GprsIllegalMe": "registration_denied", "NetworkNotAllowed": "registration_denied"}
MAX_TEXT = 64


class MmModem:
    """A modem managed by ModemManager. The constructor does no I/O."""

    name = "modemmanager"

    def __init__(self, port: str = "", *, bus_address: str = "", timeout_s: float = 10.0,
                 network_timeout_s: float = 60.0) -> None:
        self.port, self.bus_address = port, bus_address
        self.timeout_s, self.network_timeout_s = timeout_s, network_timeout_s
        self._bus: Any = None
        self.path = ""

    async def open(self) -> None:
        """Connect to the bus and find the modem."""
        await self.close()
        self._bus = await _connect(self.bus_address)
        try:
            self.path = await self._find()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Leave the bus; never raises."""
        bus, self._bus = self._bus, None
        if bus is not None:
            with contextlib.suppress(Exception):
                bus.disconnect()

    async def _find(self) -> str:
        objects = await self._call(ROOT, OBJECTS, "GetManagedObjects")
        if not isinstance(objects, dict):
            raise ModemProtocolError("ModemManager's object list is not a dictionary")
        modems = sorted(str(p) for p, ifaces in objects.items() if isinstance(ifaces, dict) and MODEM in ifaces)
        if not modems:
            raise ModemGone("ModemManager sees no modem (is it plugged in and powered?)")
        if self.port:
            wanted = self.port.rsplit("/", 1)[-1]
            for path in modems:
                ports = _value(objects[path][MODEM].get("Ports"))
                if isinstance(ports, list) and any(isinstance(p, list | tuple) and p and p[0] == wanted for p in ports):
                    return path
        return modems[0]

    # -- D-Bus plumbing ---------------------------------------------------------------------

    async def _call(self, path: str, interface: str, member: str, *, sig: str = "", body: list[Any] | None = None,
                    limit_s: float | None = None) -> Any:
        from dbus_fast import Message, MessageType
        from dbus_fast.errors import DBusError

        if self._bus is None:
            raise ModemGone("not connected to ModemManager")
        msg = Message(destination=SERVICE, path=path, interface=interface, member=member, signature=sig,
                      body=body or [])
        try:
            async with _deadline(limit_s or self.timeout_s, f"ModemManager's {member}"):
                reply = await self._bus.call(msg)
        except (OSError, EOFError) as e:
            raise ModemGone(f"the connection to ModemManager broke: {e}") from e
        if reply is None:
            raise ModemGone("the connection to ModemManager broke")
        if reply.message_type == MessageType.ERROR:
            error = DBusError._from_message(reply)
            raise _refusal(member, str(error.type), str(error.text))
        return reply.body[0] if reply.body else None

    async def _get(self, path: str, interface: str, prop: str) -> Any:
        return _value(await self._call(path, PROPS, "Get", sig="ss", body=[interface, prop]))

    async def _all(self, path: str, interface: str) -> dict[str, Any]:
        got = await self._call(path, PROPS, "GetAll", sig="s", body=[interface])
        if not isinstance(got, dict):
            raise ModemProtocolError(f"{interface}: properties are not a dictionary")
        return {str(k): _value(v) for k, v in got.items()}

    # -- the backend protocol -----------------------------------------------------------------

    async def identity(self) -> ModemIdentity:
        """IMEI, ICCID (empty without a SIM), make, model, firmware."""
        m = await self._all(self.path, MODEM)
        iccid = ""
        sim = m.get("Sim")
        if isinstance(sim, str) and sim not in ("", "/"):
            with contextlib.suppress(ModemRefused, ModemProtocolError, ModemGone):
                iccid = _text(await self._get(sim, SIM, "SimIdentifier"))
        return ModemIdentity(_text(m.get("EquipmentIdentifier")), iccid, _text(m.get("Manufacturer")),
                             _text(m.get("Model")), _text(m.get("Revision")))

    async def sim(self) -> SimStatus:
        """From the modem's State, StateFailedReason, UnlockRequired and UnlockRetries."""
        m = await self._all(self.path, MODEM)
        state = _int(m.get("State"))
        if state == _STATE_FAILED:
            return SimStatus(_FAILED_SIM.get(_int(m.get("StateFailedReason")) or 0, SimState.UNKNOWN))
        lock = _int(m.get("UnlockRequired")) or 0
        retries = m.get("UnlockRetries")
        tries = {int(k): int(v) for k, v in retries.items()} if isinstance(retries, dict) else {}
        sim_state = _LOCKS.get(lock, SimState.UNKNOWN)
        if sim_state == SimState.UNKNOWN and state is not None and state > _STATE_LOCKED:
            sim_state = SimState.READY
        return SimStatus(sim_state, tries.get(2), tries.get(4))

    async def unlock(self, pin: str) -> None:
        """Sim.SendPin."""
        sim = await self._get(self.path, MODEM, "Sim")
        if not isinstance(sim, str) or sim in ("", "/"):
            raise ModemRefused("no SIM card detected", cause="sim_missing")
        await self._call(sim, SIM, "SendPin", sig="s", body=[pin])

    async def registration(self) -> Registration:
        """Modem3gpp's registration state and operator; the access technology of the Modem."""
        state = await self._enabled()
        g = await self._all(self.path, MODEM_3GPP)
        reg = _REG.get(_int(g.get("RegistrationState")) or 0, RegState.UNKNOWN) \
            if _int(g.get("RegistrationState")) is not None else RegState.UNKNOWN
        if state is not None and state < _STATE_DISABLED + 1 and reg == RegState.UNKNOWN:
            reg = RegState.IDLE
        tech = _tech(_int(await self._get(self.path, MODEM, "AccessTechnologies")) or 0)
        code = _text(g.get("OperatorCode"))
        return Registration(reg, _text(g.get("OperatorName")), code if code.isdigit() else "", tech)

    async def _enabled(self) -> int | None:
        """Enable the modem if it is disabled (ModemManager leaves a new modem disabled)."""
        state = _int(await self._get(self.path, MODEM, "State"))
        if state == _STATE_DISABLED:
            await self._call(self.path, MODEM, "Enable", sig="b", body=[True], limit_s=self.network_timeout_s)
        return state

    async def register(self) -> None:
        """Modem3gpp.Register("") (automatic selection)."""
        await self._call(self.path, MODEM_3GPP, "Register", sig="s", body=[""], limit_s=self.network_timeout_s)

    async def signal(self) -> Signal:
        """Modem.Signal's LTE (else UMTS, GSM) values; refreshed every 5 s once set up."""
        with contextlib.suppress(ModemRefused):
            if not _int(await self._get(self.path, SIGNAL, "Rate")):
                await self._call(self.path, SIGNAL, "Setup", sig="u", body=[5])
        tech = _tech(_int(await self._get(self.path, MODEM, "AccessTechnologies")) or 0)
        for key in ("Lte", "Nr5g", "Umts", "Gsm"):
            values = await self._get(self.path, SIGNAL, key)
            if isinstance(values, dict) and values:
                v = {str(k): _value(x) for k, x in values.items()}
                return Signal(tech, _db(v.get("rssi"), -150, -20), _db(v.get("rsrp"), -150, -20),
                              _db(v.get("rsrq"), -40, 0), _db(v.get("snr"), -30, 50))
        return Signal(tech)

    async def connect(self, apn: str) -> Bearer:
        """Modem.Simple.Connect with the APN (IPv4)."""
        from dbus_fast import Variant

        await self._enabled()
        try:
            bearer = await self._call(self.path, SIMPLE, "Connect", sig="a{sv}",
                                      body=[{"apn": Variant("s", apn), "ip-type": Variant("u", 1)}],
                                      limit_s=self.network_timeout_s)
        except ModemRefused as e:
            if e.cause == "apn_rejected":
                raise ModemRefused(f"the network refused the APN '{apn}' ({e})", cause=e.cause) from e
            raise
        if not isinstance(bearer, str):
            raise ModemProtocolError("Connect did not return a bearer")
        return await self._bearer(bearer, apn)

    async def disconnect(self) -> None:
        """Modem.Simple.Disconnect of every bearer."""
        await self._call(self.path, SIMPLE, "Disconnect", sig="o", body=["/"], limit_s=self.network_timeout_s)

    async def bearer(self) -> Bearer:
        """The first connected bearer of the modem (or a disconnected one)."""
        for path in await self._bearers():
            b = await self._bearer(path, "")
            if b.connected:
                return b
        return Bearer(False)

    async def _bearers(self) -> list[str]:
        paths = await self._get(self.path, MODEM, "Bearers")
        return [str(p) for p in paths] if isinstance(paths, list) else []

    async def _bearer(self, path: str, apn: str) -> Bearer:
        b = await self._all(path, BEARER)
        ip4 = b.get("Ip4Config")
        addr = _text(_value(ip4.get("address"))) if isinstance(ip4, dict) else ""
        props = b.get("Properties")
        apn = apn or (_text(_value(props.get("apn"))) if isinstance(props, dict) else "")
        return Bearer(b.get("Connected") is True, _text(b.get("Interface")), addr, apn)

    async def counters(self) -> ByteCounters | None:
        """The connected bearer's Stats (rx-bytes, tx-bytes), if ModemManager keeps them."""
        for path in await self._bearers():
            stats = await self._get(path, BEARER, "Stats")
            if isinstance(stats, dict) and "rx-bytes" in stats:
                rx, tx = _int(_value(stats.get("rx-bytes"))), _int(_value(stats.get("tx-bytes")))
                if rx is not None and tx is not None:
                    return ByteCounters(rx, tx)
        return None

    async def reset(self) -> None:
        """Modem.Reset: the modem restarts and comes back as a new D-Bus object."""
        try:
            await self._call(self.path, MODEM, "Reset", limit_s=self.network_timeout_s)
        finally:
            await self.close()


@contextlib.asynccontextmanager
async def inhibited(port: str = "", bus_address: str = "", timeout_s: float = 10.0) -> AsyncIterator[None]:
    """Keep ModemManager off the modem while the block runs (for direct AT). Does nothing when
    ModemManager is not running; `ModemGone` when it runs and has no such modem."""
    mm = MmModem(port, bus_address=bus_address, timeout_s=timeout_s)
    try:
        await mm.open()
    except ModemGone:
        await mm.close()
        yield
        return
    try:
        uid = _text(await mm._get(mm.path, MODEM, "Device"))
        await mm._call(ROOT, SERVICE, "InhibitDevice", sig="sb", body=[uid, True])
        log.info("ModemManager keeps off the modem (%s) while its AT port is used directly", uid)
        try:
            yield
        finally:
            with contextlib.suppress(ModemGone, ModemRefused, ModemTimeout):
                await mm._call(ROOT, SERVICE, "InhibitDevice", sig="sb", body=[uid, False])
    finally:
        await mm.close()


async def _connect(address: str) -> Any:
    from dbus_fast import BusType
    from dbus_fast.aio import MessageBus
    from dbus_fast.errors import AuthError

    try:
        bus = MessageBus(bus_address=address) if address else MessageBus(bus_type=BusType.SYSTEM)
        return await bus.connect()
    except (OSError, AuthError, EOFError, ValueError) as e:
        raise ModemGone(f"cannot reach ModemManager on D-Bus: {e}") from e


@contextlib.asynccontextmanager
async def _deadline(seconds: float, what: str) -> AsyncIterator[None]:
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise ModemTimeout(f"{what} did not answer within {seconds:g} s") from None


def _refusal(member: str, name: str, text: str) -> Exception:
    short = name.rsplit(".", 1)[-1]
    if name in ("org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.UnknownObject",
                "org.freedesktop.DBus.Error.NoReply", "org.freedesktop.DBus.Error.Disconnected"):
        return ModemGone(f"ModemManager: {member}: {_text(text) or short}")
    cause = _CAUSES.get(short, "")
    if not cause and "apn" in text.lower():
        cause = "apn_rejected"
    return ModemRefused(f"ModemManager refused {member}: {short}: {_text(text)}", cause=cause)


def _value(v: Any) -> Any:
    """A D-Bus Variant's value (or the value itself)."""
    return getattr(v, "value", v) if type(v).__name__ == "Variant" else v


def _int(v: Any) -> int | None:
    v = _value(v)
    return int(v) if isinstance(v, int) and not isinstance(v, bool) else None


def _db(v: Any, lo: float, hi: float) -> float | None:
    v = _value(v)
    if isinstance(v, int | float) and not isinstance(v, bool) and lo <= v <= hi:
        return float(v)
    return None


def _text(v: Any) -> str:
    v = _value(v)
    if not isinstance(v, str):
        return ""
    return "".join(ch for ch in v.strip() if ch.isprintable())[:MAX_TEXT]


def _tech(bits: int) -> str:
    for mask, name in _TECH:
        if bits & mask:
            return name
    return ""
