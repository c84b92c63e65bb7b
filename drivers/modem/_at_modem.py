"""The modem over its AT command port (pyserial), the `ModemBackend` for Boxes without ModemManager.

Does: open the port with pyserial (exclusive, raw, the configured speed) and serve it from the
event loop (`add_reader`, non-blocking reads and writes: no thread), one command at a time
through the pure core (`_at.AtConnection`), each with a deadline; turn answers into typed values
(`_at_parse`); count URCs and garbage (a storm of either costs parsing, never a command); and use
Quectel's vendor commands (+QCSQ, +QNWINFO, +QCCID, +QPINC, +QGDCNT) when the modem says it is a
Quectel, the 27.007 ones otherwise. When ModemManager runs on the Box, the port is used only while
ModemManager is told to keep off the device (`inhibit`, `drivers.modem._mm.inhibited`).

Does not: decide anything (the daemon's ladder does), configure the network interface (the
modem's DHCP and systemd-networkd do), or log a PIN (the command is shown as ``AT+CPIN=<hidden>``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from drivers.modem import _at_parse as parse
from drivers.modem._at import NEED_DATA, AtCommandError, AtConnection, CmeError, Final, Garbage, Line, Urc
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

log = logging.getLogger("drivers.modem.at")

APN_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,61}[A-Za-z0-9])?")
PIN_RE = re.compile(r"\d{4,8}")
Inhibitor = Callable[[], AbstractAsyncContextManager[None]]


class AtModem:
    """A modem on an AT port. The constructor does no I/O."""

    name = "at"

    def __init__(self, port: str, *, baudrate: int = 115200, cid: int = 1, interface: str = "",
                 timeout_s: float = 3.0, network_timeout_s: float = 60.0, inhibit: Inhibitor | None = None) -> None:
        self.port, self.baudrate, self.cid, self.interface = port, baudrate, cid, interface
        self.timeout_s, self.network_timeout_s = timeout_s, network_timeout_s
        self._inhibit = inhibit
        self._stack: contextlib.AsyncExitStack | None = None
        self._serial: object | None = None
        self._fd = -1
        self._at = AtConnection()
        self._lines: list[str] = []
        self._done: asyncio.Future[Final | CmeError] | None = None
        self._lock = asyncio.Lock()
        self._gone = ""
        self.quectel = False
        self.urcs = 0
        self.garbage = 0
        self.last_urc = ""

    # -- the port ------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the port, check that a modem answers, echo off, numeric errors."""
        import serial  # pyserial: only in this adapter

        await self.close()
        self._stack = contextlib.AsyncExitStack()
        if self._inhibit is not None:
            await self._stack.enter_async_context(self._inhibit())
        try:
            port = serial.Serial(self.port, self.baudrate, timeout=0, write_timeout=0, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as e:
            await self.close()
            raise ModemGone(f"cannot open the modem's port {self.port}: {_why(e)}") from e
        self._serial, self._fd = port, port.fileno()
        os.set_blocking(self._fd, False)
        self._at, self._gone = AtConnection(), ""
        asyncio.get_running_loop().add_reader(self._fd, self._readable)
        try:
            await self._hello()
        except BaseException:
            await self.close()
            raise

    async def _hello(self) -> None:
        for attempt in range(3):
            try:
                await self.command("AT", limit_s=1.0)
                break
            except ModemTimeout:
                if attempt == 2:
                    raise
        await self.command("ATE0")
        await self.command("AT+CMEE=1")
        with contextlib.suppress(ModemRefused):
            self.quectel = "QUECTEL" in parse.text_line(await self.command("AT+CGMI")).upper()

    async def close(self) -> None:
        """Close the port and end the inhibition; never raises."""
        if self._fd >= 0:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._fd)
        if self._serial is not None:
            with contextlib.suppress(Exception):
                self._serial.close()  # type: ignore[attr-defined]
        self._serial, self._fd = None, -1
        self._fail(ModemGone(f"the modem's port {self.port} is closed"))
        stack, self._stack = self._stack, None
        if stack is not None:
            with contextlib.suppress(Exception):
                await stack.aclose()

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError as e:  # EIO: the other end is gone (USB unplugged, re-enumerating)
            self._lost(f"the modem's port {self.port} went away ({e.strerror})")
            return
        if not data:
            self._lost(f"the modem's port {self.port} was closed by the modem")
            return
        self._at.receive_data(data)
        while (event := self._at.next_event()) is not NEED_DATA:
            if isinstance(event, Line):
                self._lines.append(event.text)
            elif isinstance(event, Final | CmeError):
                if self._done is not None and not self._done.done():
                    self._done.set_result(event)
            elif isinstance(event, Urc):
                self.urcs += 1
                self.last_urc = f"{event.name}: {event.value}"[:80] if event.value else event.name
            elif isinstance(event, Garbage):
                self.garbage += 1

    def _lost(self, why: str) -> None:
        self._gone = why
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self._fd)
        self._fail(ModemGone(why))

    def _fail(self, error: Exception) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_exception(error)

    # -- commands ------------------------------------------------------------------------

    async def command(self, command: str, limit_s: float | None = None) -> list[str]:
        """Send one command and wait for its final result; its information lines.

        Raises:
            ModemGone: the port is not open or went away.
            ModemTimeout: no final result within `limit_s` (default `timeout_s`).
            ModemRefused: ERROR or +CME ERROR (with its cause).
        """
        async with self._lock:
            if self._fd < 0 or self._gone:
                raise ModemGone(self._gone or f"the modem's port {self.port} is not open")
            try:
                data = self._at.send(command)
            except AtCommandError as e:
                raise ModemProtocolError(str(e)) from e
            self._lines = []
            self._done = asyncio.get_running_loop().create_future()
            shown = "AT+CPIN=<hidden>" if command.upper().startswith("AT+CPIN=") else command
            try:
                os.write(self._fd, data)
                async with asyncio.timeout(limit_s or self.timeout_s):
                    result = await self._done
            except TimeoutError:
                self._at.abandon()
                raise ModemTimeout(f"the modem did not answer {shown} within {limit_s or self.timeout_s:g} s") from None
            except OSError as e:
                self._at.abandon()
                self._lost(f"cannot write to the modem's port {self.port} ({e.strerror})")
                raise ModemGone(self._gone) from e
            finally:
                self._done = None
            if isinstance(result, CmeError):
                cause = parse.cause_of(result.code, result.text)
                raise ModemRefused(f"{shown}: +CME ERROR {result.text}", code=result.code, cause=cause)
            if not result.ok:
                raise ModemRefused(f"{shown}: {result.code}")
            return list(self._lines)

    # -- the backend protocol ------------------------------------------------------------

    async def identity(self) -> ModemIdentity:
        """IMEI, ICCID (empty without a SIM), make, model, firmware."""
        iccid = ""
        with contextlib.suppress(ModemRefused, ModemProtocolError):
            iccid = parse.iccid(await self.command("AT+QCCID" if self.quectel else "AT+CCID"))
        return ModemIdentity(
            imei=parse.imei(await self.command("AT+CGSN")), iccid=iccid,
            manufacturer=parse.text_line(await self.command("AT+CGMI")),
            model=parse.text_line(await self.command("AT+CGMM")),
            firmware=parse.text_line(await self.command("AT+CGMR")))

    async def sim(self) -> SimStatus:
        """+CPIN? and the attempts left (+QPINC on a Quectel, +CPINR elsewhere)."""
        try:
            state = parse.sim_state(await self.command("AT+CPIN?"))
        except ModemRefused as e:
            known = {"sim_missing": SimState.MISSING, "sim_failure": SimState.FAILURE,
                     "puk_required": SimState.PUK_REQUIRED}.get(e.cause)
            if known is None:
                raise
            state = known
        attempts: tuple[int | None, int | None] = (None, None)
        if state in (SimState.PIN_REQUIRED, SimState.PUK_REQUIRED, SimState.READY):
            with contextlib.suppress(ModemRefused, ModemProtocolError):
                if self.quectel:
                    attempts = parse.pin_attempts(await self.command('AT+QPINC="SC"'))
                else:
                    attempts = parse.pin_attempts(await self.command('AT+CPINR="SIM PIN"')
                                                  + await self.command('AT+CPINR="SIM PUK"'))
        return parse.sim_status(state, attempts)

    async def unlock(self, pin: str) -> None:
        """AT+CPIN="<pin>" (never logged)."""
        if not PIN_RE.fullmatch(pin):
            raise ModemRefused("the SIM PIN must be 4 to 8 digits", cause="pin_wrong")
        await self.command(f'AT+CPIN="{pin}"', limit_s=max(self.timeout_s, 10.0))

    async def registration(self) -> Registration:
        """+CEREG? (LTE), else +CREG? (2G/3G); +COPS? for the operator; +QNWINFO for the band."""
        state, tac, cell, tech = parse.registration(await self.command("AT+CEREG?"), "+CEREG")
        if not state.registered:
            with contextlib.suppress(ModemRefused, ModemProtocolError):
                other = parse.registration(await self.command("AT+CREG?"), "+CREG")
                if other[0].registered or other[0] == RegState.DENIED:
                    state, tac, cell, tech = other
        name = plmn = band = ""
        if state.registered:
            with contextlib.suppress(ModemRefused, ModemProtocolError):
                await self.command("AT+COPS=3,0")
                name, act = parse.operator(await self.command("AT+COPS?"))
                tech = tech or act
            if self.quectel:
                with contextlib.suppress(ModemRefused, ModemProtocolError):
                    band, plmn = parse.qnwinfo(await self.command("AT+QNWINFO"))
        return Registration(state, name, plmn, tech, cell, tac, band)

    async def register(self) -> None:
        """Deregister (AT+COPS=2), then select the network automatically (AT+COPS=0)."""
        with contextlib.suppress(ModemRefused):
            await self.command("AT+COPS=2", limit_s=self.network_timeout_s)
        await self.command("AT+COPS=0", limit_s=self.network_timeout_s)

    async def signal(self) -> Signal:
        """+QCSQ on a Quectel; +CESQ (RSRP, RSRQ) and +CSQ (RSSI) elsewhere."""
        if self.quectel:
            with contextlib.suppress(ModemRefused, ModemProtocolError):
                return parse.qcsq(await self.command("AT+QCSQ"))
        rssi = parse.csq(await self.command("AT+CSQ")).rssi_dbm
        try:
            lte = parse.cesq(await self.command("AT+CESQ"))
        except (ModemRefused, ModemProtocolError):
            return Signal(rssi_dbm=rssi)
        return Signal(lte.tech, rssi, lte.rsrp_dbm, lte.rsrq_db, None)

    async def connect(self, apn: str) -> Bearer:
        """Define the PDP context with `apn`, activate it, read the address the network gave."""
        if not APN_RE.fullmatch(apn):
            raise ModemRefused(f"the APN {apn[:64]!r} is not a valid name", cause="apn_rejected")
        await self.command(f'AT+CGDCONT={self.cid},"IP","{apn}"')
        try:
            await self.command(f"AT+CGACT=1,{self.cid}", limit_s=self.network_timeout_s)
        except ModemRefused as e:
            if e.cause == "apn_rejected":
                raise ModemRefused(f"the network refused the APN '{apn}' ({e})", code=e.code, cause=e.cause) from e
            raise
        return dataclasses.replace(await self.bearer(), apn=apn)

    async def disconnect(self) -> None:
        """AT+CGACT=0,<cid>."""
        await self.command(f"AT+CGACT=0,{self.cid}", limit_s=self.network_timeout_s)

    async def bearer(self) -> Bearer:
        """+CGACT? and +CGPADDR for the context."""
        active = parse.bearer_active(await self.command("AT+CGACT?"), self.cid)
        addr = ""
        if active:
            with contextlib.suppress(ModemRefused, ModemProtocolError):
                addr = parse.address(await self.command(f"AT+CGPADDR={self.cid}"))
        return Bearer(active, self.interface, addr)

    async def counters(self) -> ByteCounters | None:
        """Quectel's +QGDCNT (bytes the modem moved); None on other modems."""
        if not self.quectel:
            return None
        try:
            return parse.qgdcnt(await self.command("AT+QGDCNT?"))
        except (ModemRefused, ModemProtocolError):
            return None

    async def reset(self) -> None:
        """AT+CFUN=1,1: the modem restarts; its port goes away for a while (USB re-enumeration)."""
        try:
            await self.command("AT+CFUN=1,1", limit_s=max(self.timeout_s, 15.0))
        except ModemGone:
            pass  # gone at once: restarting, which was asked
        finally:
            await self.close()


def _why(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e)
    return " ".join(str(text).split())[:120]
