"""Links: one Modbus TCP connection or one serial line, through pymodbus (the I/O shell).

Does: own one pymodbus client (``AsyncModbusTcpClient`` or ``AsyncModbusSerialClient``
with the RTU framer); perform one read or write at a time with our own tries, each with
the timeout of the device asked; turn every answer or fault into an `Outcome` (never
raise for a device fault); screen received bytes before pymodbus parses them; on a
serial line keep the line silent for t3.5 between frames; say in words why a link
cannot open. Does not: plan, schedule or decode values. pymodbus is imported here, in
`_bus` (for nothing but the logger) and in the simulators, nowhere else.

pymodbus 3.16.1 (pinned) behaviour this module relies on or works around:

* the client's ``timeout`` is both the connect timeout and the wait for each try; it
  lives in ``client.ctx.comm_params.timeout_connect`` (the client copies its
  parameters) and is read at each try, so we set it per request: devices on one line
  may have different timeouts. We make pymodbus's own ``retries`` 0 and try again
  ourselves (counting frames and timeouts, keeping t3.5 before every try);
* ``reconnect_delay=0`` stops it from reconnecting in a background task of its own (we
  reconnect at the next request); constructing a client needs a running event loop;
* by default it closes a TCP connection after ``retries + 3`` unanswered requests; we
  raise that limit (`set_max_no_responses`) and decide ourselves;
* a malformed answer may raise inside the transport's ``data_received`` (asyncio logs a
  traceback) or stall: the ``trace_packet`` hook hands pymodbus only a well-formed
  answer of the unit asked (`_frame.check_stream` for TCP, `_rtu_frame.screen_answer`
  for RTU) and hides garbage, so that try ends as BAD_FRAME after its timeout. The hook
  gets the whole receive buffer, not the new bytes;
* its RTU framer consumes the whole receive buffer with the first valid frame, so a
  slow device's late answer followed by the answer we wait for would lose ours: the
  screen skips frames of other units;
* the async serial client does nothing about inter-frame timing (only the sync client
  sets pyserial's ``inter_byte_timeout`` to 1.5 character times at <= 19200 baud, and
  its character time forgets the parity bit); `RtuLink` waits t3.5 (1.75 ms above
  19200 baud) after the last byte in either direction before sending;
* opening a serial port that refuses the settings (a pty with parity or 7 data bits
  on this kernel) raises ``termios.error`` out of ``connect()``, which pymodbus does not
  catch (it catches ``OSError`` only, and then logs and returns False);
* it logs every failed try at ERROR with the last frames: unless the application set a
  level on the "pymodbus" logger, `quiet_pymodbus_logging` sets CRITICAL.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import termios
import time
from collections.abc import Awaitable, Callable
from typing import Final

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from drivers._types import Quality
from drivers.modbus._config import Table
from drivers.modbus._device import Outcome
from drivers.modbus._frame import Verdict, check_stream
from drivers.modbus._rtu_frame import Screen, char_time_s, screen_answer, silent_interval_s
from drivers.modbus._write import WritePlan

_GATEWAY_NO_RESPONSE: Final = 0x0B  # a gateway's "the target device did not answer"
_NEVER_CLOSE: Final = 1 << 30  # pymodbus's unanswered-requests limit, effectively off
_READ_CODES: Final[dict[str, int]] = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}

Client = AsyncModbusTcpClient | AsyncModbusSerialClient
Call = Callable[[Client], Awaitable[ModbusPDU]]


def quiet_pymodbus_logging() -> None:
    """Keep pymodbus from logging each failed try, unless the application chose a level."""
    logger = logging.getLogger("pymodbus")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.CRITICAL)


class Link:
    """One pymodbus client; subclasses make it and screen what it receives."""

    def __init__(self, describe: str) -> None:
        self.describe = describe  # e.g. "10.0.0.5:502", "/dev/ttyUSB0 at 9600 8N1"
        self.last_error = ""  # why the link is not open, in words
        self.saw_bytes = False  # something was received since the flag was last cleared
        self._client: Client | None = None
        self._garbled = False
        self._unit = 0

    # -- to implement -----------------------------------------------------------------

    def _make(self) -> Client:
        raise NotImplementedError

    def _screen(self, sending: bool, data: bytes) -> bytes:
        raise NotImplementedError

    async def _before_send(self) -> None:
        """Wait until the bus may carry the next frame."""

    async def diagnose(self) -> str:
        """Why the link cannot open, in an installer's words."""
        return f"cannot connect to {self.describe}"

    # -- opening ----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """The connection (or the serial port) is open."""
        return self._client is not None and self._client.connected

    async def open(self, timeout_s: float) -> bool:
        """Connect (create the client the first time); False, with `last_error`, if not."""
        if self._client is None:
            quiet_pymodbus_logging()
            self._client = self._make()
            self._client.set_max_no_responses(_NEVER_CLOSE)
        if self._client.connected:
            return True
        self._client.ctx.comm_params.timeout_connect = timeout_s
        try:
            ok = await self._client.connect()
        except termios.error as e:
            ok = False
            self.last_error = f"{self.describe}: the port refuses these settings ({e.args[-1]})"
        else:
            if not ok:
                self.last_error = await self.diagnose()
        if ok:
            self.last_error = ""
        return ok

    def close(self) -> None:
        """Close the connection; the next request opens it again."""
        if self._client is not None:
            self._client.close()

    # -- requests ---------------------------------------------------------------------

    async def read(
        self, unit: int, table: Table, start: int, count: int, *, timeout_s: float, retries: int
    ) -> Outcome:
        """Read `count` registers or bits; GOOD outcomes carry exactly `count` values."""

        def call(client: Client) -> Awaitable[ModbusPDU]:
            if table == "holding":
                return client.read_holding_registers(start, count=count, device_id=unit)
            if table == "input":
                return client.read_input_registers(start, count=count, device_id=unit)
            if table == "coil":
                return client.read_coils(start, count=count, device_id=unit)
            return client.read_discrete_inputs(start, count=count, device_id=unit)

        def check(response: ModbusPDU) -> Outcome:
            if response.function_code != _READ_CODES[table]:
                return Outcome(Quality.BAD_FRAME, detail=f"answer to function {response.function_code}")
            if table in ("coil", "discrete"):
                bits = response.bits
                if len(bits) < count:
                    return Outcome(Quality.BAD_FRAME, detail=f"{len(bits)} bits for {count}")
                return Outcome(Quality.GOOD, [bool(b) for b in bits[:count]])
            registers = response.registers
            if len(registers) != count:
                return Outcome(Quality.BAD_FRAME, detail=f"{len(registers)} registers for {count}")
            return Outcome(Quality.GOOD, list(registers))

        return await self._request(unit, call, check, timeout_s, retries)

    async def write(self, unit: int, plan: WritePlan, values: tuple[int, ...], *,
                    timeout_s: float, retries: int) -> Outcome:
        """Send one write (FC 5, 6, 15 or 16 as planned) of `values`."""
        code, address = plan.function_code, plan.address

        def call(client: Client) -> Awaitable[ModbusPDU]:
            if code == 5:
                return client.write_coil(address, bool(values[0]), device_id=unit)
            if code == 15:
                return client.write_coils(address, [bool(v) for v in values], device_id=unit)
            if code == 6:
                return client.write_register(address, values[0], device_id=unit)
            return client.write_registers(address, list(values), device_id=unit)

        def check(response: ModbusPDU) -> Outcome:
            if response.function_code != code or response.address != address:
                return Outcome(Quality.BAD_FRAME, detail="the answer is not for this write")
            return Outcome(Quality.GOOD)

        return await self._request(unit, call, check, timeout_s, retries)

    async def _request(
        self, unit: int, call: Call, check: Callable[[ModbusPDU], Outcome], timeout_s: float,
        retries: int,
    ) -> Outcome:
        if not self.connected and not await self.open(timeout_s):
            return Outcome(Quality.NOT_CONNECTED, detail=self.last_error, tries=0)
        assert self._client is not None
        self._client.ctx.comm_params.timeout_connect = timeout_s
        self._unit = unit
        outcome = Outcome(Quality.NO_ANSWER)
        tries = timeouts = 0
        for _ in range(retries + 1):
            await self._before_send()
            self._garbled = False
            tries += 1
            outcome = await self._try(call, check)
            if outcome.quality is Quality.NO_ANSWER:
                timeouts += 1
            if outcome.quality not in (Quality.NO_ANSWER, Quality.BAD_FRAME) or not self.connected:
                break
        return Outcome(outcome.quality, outcome.data, outcome.exception_code, outcome.detail,
                       tries, timeouts)

    async def _try(self, call: Call, check: Callable[[ModbusPDU], Outcome]) -> Outcome:
        try:
            assert self._client is not None
            response = await call(self._client)
        except ConnectionException:
            return Outcome(Quality.NOT_CONNECTED, detail="connection lost")
        except ModbusIOException:
            if self._garbled:
                return Outcome(Quality.BAD_FRAME, detail="garbled answer")
            if not self.connected:
                return Outcome(Quality.NOT_CONNECTED, detail="connection lost")
            return Outcome(Quality.NO_ANSWER)
        except ModbusException as e:
            return Outcome(Quality.BAD_FRAME, detail=str(e)[:80])
        except OSError as e:
            return Outcome(Quality.NOT_CONNECTED, detail=e.strerror or type(e).__name__)
        if response.isError():
            code = response.exception_code
            quality = Quality.NO_ANSWER if code == _GATEWAY_NO_RESPONSE else Quality.DEVICE_EXCEPTION
            return Outcome(quality, exception_code=code)
        return check(response)


class TcpLink(Link):
    """One Modbus TCP connection."""

    def __init__(self, host: str, port: int, name: str) -> None:
        super().__init__(f"{host}:{port}")
        self.host, self.port, self.name = host, port, name

    def _make(self) -> AsyncModbusTcpClient:
        return AsyncModbusTcpClient(
            self.host, port=self.port, name=self.name, reconnect_delay=0, retries=0,
            trace_packet=self._screen,
        )

    def _screen(self, sending: bool, data: bytes) -> bytes:
        if sending:
            return data
        self.saw_bytes = True
        if check_stream(data) is Verdict.OK:
            return data
        self._garbled = True
        return b""

    async def diagnose(self) -> str:
        """Why connecting fails, from a plain connection attempt of our own."""
        assert self._client is not None
        timeout = self._client.ctx.comm_params.timeout_connect
        try:
            async with asyncio.timeout(timeout):  # not wait_for: 3.11's can swallow a cancellation
                _, writer = await asyncio.open_connection(self.host, self.port)
        except ConnectionRefusedError:
            return f"connection refused by {self.describe}: nothing listens on that port"
        except TimeoutError:
            return f"no answer from {self.describe} within {timeout:g} s: host down or firewalled"
        except OSError as e:
            return f"cannot connect to {self.describe}: {e.strerror or e}"
        writer.close()
        return f"{self.describe} accepts connections, but pymodbus could not connect"


class RtuLink(Link):
    """One serial line with the RTU framer; keeps t3.5 of silence between frames."""

    def __init__(self, port: str, *, baudrate: int, parity: str, stopbits: int, bytesize: int,
                 name: str) -> None:
        super().__init__(f"{port} at {baudrate} {bytesize}{parity}{stopbits}")
        self.port, self.name = port, name
        self.baudrate, self.parity, self.stopbits, self.bytesize = baudrate, parity, stopbits, bytesize
        self.silence_s = silent_interval_s(baudrate, bytesize, parity, stopbits)
        self._char_s = char_time_s(baudrate, bytesize, parity, stopbits)
        self._quiet_from = 0.0  # monotonic time after which the line is silent enough

    def _make(self) -> AsyncModbusSerialClient:
        return AsyncModbusSerialClient(
            self.port, framer=FramerType.RTU, baudrate=self.baudrate, parity=self.parity,
            stopbits=self.stopbits, bytesize=self.bytesize, name=self.name, reconnect_delay=0,
            retries=0, trace_packet=self._screen,
        )

    def _screen(self, sending: bool, data: bytes) -> bytes:
        now = time.monotonic()
        if sending:  # the frame occupies the line for its length in characters
            self._quiet_from = now + len(data) * self._char_s + self.silence_s
            return data
        self._quiet_from = max(self._quiet_from, now + self.silence_s)
        self.saw_bytes = True
        verdict, frame, _ = screen_answer(data, self._unit)
        if verdict is Screen.ANSWER:
            return frame
        if verdict is Screen.GARBLED:
            self._garbled = True
        return b""

    async def _before_send(self) -> None:
        wait = self._quiet_from - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)  # protocol timing (t3.5), not synchronisation

    async def diagnose(self) -> str:
        """Why the port does not open, from opening it ourselves."""
        try:
            fd = os.open(self.port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return f"serial port {self.port} not found: is the adapter plugged in?"
            if e.errno == errno.EACCES:
                return f"permission denied on {self.port}: the service needs the dialout group"
            if e.errno == errno.EBUSY:
                return f"serial port {self.port} is busy: another program holds it"
            return f"cannot open {self.port}: {e.strerror}"
        os.close(fd)
        return f"cannot open {self.describe}: the port opens, but not with these settings or " \
               f"not exclusively (another program may hold it)"
