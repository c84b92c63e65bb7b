"""`ModbusTcpSource`: one Modbus TCP device as a `PointSource` (the I/O shell).

Does: own one pymodbus ``AsyncModbusTcpClient`` per device, run the planned reads on
each `read()` and turn answers into one `Sample` per point; turn every device fault
into a sample quality for the points of the failing request only; log one line per
change of the device's state (lost, partly failing, back). Does not: plan
(`_plan`), decode (`_codec`), validate configuration (`_config`), schedule polls
(the daemon calls `read()`), or write (a later issue).

pymodbus is imported here and nowhere else in `drivers.modbus`. Its behaviour that
this module relies on (3.16.1, pinned):

* the client's ``timeout`` is both the connect timeout and the wait for each try,
  ``retries`` the tries after the first; ``reconnect_delay=0`` stops it from
  reconnecting in a background task of its own (we reconnect at the next `read()`);
* constructing the client needs a running event loop, so `start()` does it;
* by default it closes the connection after ``retries + 3`` unanswered requests; we
  raise that limit and close it ourselves when no request of a poll is answered;
* a malformed answer may raise inside the transport's ``data_received`` (asyncio logs
  a traceback) or stall: the ``trace_packet`` hook screens received bytes with
  `_frame.check_stream` and hides a garbled buffer from pymodbus, so that request
  ends as BAD_FRAME after its timeout;
* it logs every failed try at ERROR with the last frames appended: unless the
  application set a level on the "pymodbus" logger, `start()` sets CRITICAL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Final

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from drivers._types import PointInfo, PointSource, Quality, Sample, Value
from drivers.modbus._config import ModbusTcpDevice, check_device, codec_for
from drivers.modbus._frame import Verdict, check_stream
from drivers.modbus._plan import ReadRequest, fail_request, plan_reads, unpack_response

log = logging.getLogger("drivers.modbus")

_GATEWAY_NO_RESPONSE: Final = 0x0B  # a gateway's "the target device did not answer"
_NEVER_CLOSE: Final = 1 << 30  # pymodbus's unanswered-requests limit, effectively off
_EXCEPTION_NAMES: Final[dict[int, str]] = {
    1: "illegal function", 2: "illegal data address", 3: "illegal data value",
    4: "device failure", 5: "acknowledge", 6: "device busy", 8: "memory parity error",
    10: "gateway path unavailable", 11: "gateway target failed to respond",
}
_COMM_FAULTS: Final = frozenset({Quality.NO_ANSWER, Quality.NOT_CONNECTED, Quality.BAD_FRAME})
_FUNCTION_CODE: Final[dict[str, int]] = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


def quiet_pymodbus_logging() -> None:
    """Keep pymodbus from logging each failed try, unless the application chose a level."""
    logger = logging.getLogger("pymodbus")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.CRITICAL)


class ModbusTcpSource:
    """Reads the points of one Modbus TCP device; see the module docstring.

    One poller owns a source: `read()` is not to be called concurrently with itself.
    """

    def __init__(self, device: ModbusTcpDevice) -> None:
        """Compile the device's read plan and codecs; no I/O.

        Raises:
            ConfigError: the device breaks a configuration rule.
        """
        check_device(device)
        self.device = device
        self.name = device.name
        self.poll_interval_s = device.poll_interval_s
        points = device.points
        self._infos = tuple(PointInfo(f"{device.name}.{p.name}", p.unit, p.type) for p in points)
        self._codecs = tuple(codec_for(device, p) for p in points)
        self._requests = plan_reads(points, max_gap=device.max_gap)
        self._request_of = [0] * len(points)
        for r, request in enumerate(self._requests):
            for index, _ in request.members:
                self._request_of[index] = r
        self._values: list[Value] = [None] * len(points)
        self._qualities: list[Quality] = [Quality.NOT_CONNECTED] * len(points)
        self._results: list[Quality] = [Quality.NOT_CONNECTED] * len(self._requests)
        self._details: list[str] = [""] * len(self._requests)
        self._client: AsyncModbusTcpClient | None = None
        self._garbled = False
        self._state: tuple[Quality, ...] | None = None

    @property
    def requests(self) -> tuple[ReadRequest, ...]:
        """The reads one poll performs."""
        return self._requests

    def points(self) -> Sequence[PointInfo]:
        """Name, unit and type of each point, in the order of `read()`'s samples."""
        return self._infos

    async def start(self) -> None:
        """Create the client and try to connect; a failed connect is retried by `read()`."""
        if self._client is not None:
            return
        quiet_pymodbus_logging()
        d = self.device
        client = AsyncModbusTcpClient(
            d.host,
            port=d.port,
            name=f"modbus {d.name}",
            reconnect_delay=0,
            timeout=d.timeout_s,
            retries=d.retries,
            trace_packet=self._screen,
        )
        client.set_max_no_responses(_NEVER_CLOSE)
        self._client = client
        await client.connect()

    async def stop(self) -> None:
        """Close the connection; `start()` may be called again later."""
        client, self._client = self._client, None
        if client is not None:
            client.close()
            await asyncio.sleep(0)  # let the transport run its connection_lost callback

    async def read(self) -> list[Sample]:
        """Poll every point once; never raises for a device fault.

        Returns:
            One sample per point, in `points()` order; a point whose request failed has
            value None and the quality saying why.
        """
        client = self._client
        connected = client is not None and (client.connected or await client.connect())
        stamps = [0] * len(self._requests)
        for r, request in enumerate(self._requests):
            if client is not None and connected:
                quality = await self._run(client, r, request)
                connected = quality is not Quality.NOT_CONNECTED and client.connected
            else:
                quality = Quality.NOT_CONNECTED
                self._details[r] = "not started" if client is None else ""
                fail_request(request, quality, self._values, self._qualities)
            self._results[r] = quality
            stamps[r] = time.time_ns() // 1_000_000
        if client is not None and all(q is Quality.NO_ANSWER for q in self._results):
            client.close()  # nothing answered: maybe a half-open connection; reconnect next time
        self._log_state()
        values, qualities, request_of, infos = (
            self._values, self._qualities, self._request_of, self._infos
        )
        return [
            Sample(infos[i].name, stamps[request_of[i]], values[i], qualities[i])
            for i in range(len(infos))
        ]

    # -- one request ------------------------------------------------------------------

    async def _run(self, client: AsyncModbusTcpClient, r: int, request: ReadRequest) -> Quality:
        """Perform one read and fill its points' values and qualities."""
        self._garbled = False
        self._details[r] = ""
        try:
            response = await self._call(client, request)
        except ConnectionException:
            quality = Quality.NOT_CONNECTED
        except ModbusIOException:
            if self._garbled:
                quality = Quality.BAD_FRAME
            else:
                quality = Quality.NO_ANSWER if client.connected else Quality.NOT_CONNECTED
        except ModbusException as e:
            quality = Quality.BAD_FRAME
            self._details[r] = str(e)[:80]
        except OSError as e:
            quality = Quality.NOT_CONNECTED
            self._details[r] = e.strerror or type(e).__name__
        else:
            quality = self._accept(response, r, request)
        if quality is not Quality.GOOD:
            fail_request(request, quality, self._values, self._qualities)
        return quality

    def _call(self, client: AsyncModbusTcpClient, request: ReadRequest) -> Awaitable[ModbusPDU]:
        unit, start, count = self.device.unit_id, request.start, request.count
        if request.table == "holding":
            return client.read_holding_registers(start, count=count, device_id=unit)
        if request.table == "input":
            return client.read_input_registers(start, count=count, device_id=unit)
        if request.table == "coil":
            return client.read_coils(start, count=count, device_id=unit)
        return client.read_discrete_inputs(start, count=count, device_id=unit)

    def _accept(self, response: ModbusPDU, r: int, request: ReadRequest) -> Quality:
        """Check an answer and decode it; the quality of the request."""
        if response.isError():
            code = response.exception_code
            self._details[r] = f"exception {code} ({_EXCEPTION_NAMES.get(code, 'unknown')})"
            return Quality.NO_ANSWER if code == _GATEWAY_NO_RESPONSE else Quality.DEVICE_EXCEPTION
        if response.function_code != _FUNCTION_CODE[request.table]:
            self._details[r] = f"answer to function {response.function_code}"
            return Quality.BAD_FRAME
        data: Sequence[int] | Sequence[bool]
        if request.bits:
            data = response.bits
            short = len(data) < request.count
        else:
            data = response.registers
            short = len(data) != request.count
        if short:
            self._details[r] = f"{len(data)} values for {request.count}"
            return Quality.BAD_FRAME
        unpack_response(request, data, self._codecs, self._values, self._qualities)
        return Quality.GOOD

    def _screen(self, sending: bool, data: bytes) -> bytes:
        """pymodbus's trace_packet hook: hide a garbled receive buffer from its parser."""
        if sending or check_stream(data) is Verdict.OK:
            return data
        self._garbled = True
        return b""

    # -- logging ----------------------------------------------------------------------

    def _log_state(self) -> None:
        """One line when the set of failing requests (or why they fail) changes."""
        state = tuple(self._results)
        if state == self._state:
            return
        first = self._state is None
        self._state = state
        d = self.device
        who = f"modbus device {d.name} ({d.host}:{d.port} unit {d.unit_id})"
        failing = [r for r, q in enumerate(state) if q is not Quality.GOOD]
        if not failing:
            log.info("%s: %s, %d read(s) per poll", who, "up" if first else "back", len(state))
            return
        if len(failing) == len(state) and len(set(state)) == 1 and state[0] in _COMM_FAULTS:
            log.warning("%s: lost: %s", who, state[0].name)
            return
        shown = "; ".join(self._describe(r) for r in failing[:4])
        more = f"; and {len(failing) - 4} more" if len(failing) > 4 else ""
        log.warning(
            "%s: %d of %d read(s) failing: %s%s", who, len(failing), len(state), shown, more
        )

    def _describe(self, r: int) -> str:
        request = self._requests[r]
        detail = f" {self._details[r]}" if self._details[r] else ""
        return f"{request.table} {request.start}+{request.count}: {self._results[r].name}{detail}"


if TYPE_CHECKING:  # mypy checks that the adapter implements the interface

    def _is_a_point_source(source: ModbusTcpSource) -> PointSource:
        return source
