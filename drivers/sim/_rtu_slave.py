"""The Modbus RTU slave side of the simulated line: requests in, answers out (pure).

Does: parse a request frame (CRC, function codes 1-6, 15, 16, their lengths and
limits), answer it from a `BuildingState` (reads, and writes of writable points;
exception 2 for an address outside a unit's image or a refused write, 3 for a count
out of the protocol's range), build exception frames and garble a frame (a wrong
CRC). Does not: own the pty, time anything or decide faults (`modbus_rtu_building`
and `_faults` do).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from drivers.modbus._config import Table
from drivers.modbus._rtu_frame import crc_ok, request_length, with_crc
from drivers.sim._building import BuildingState

_READ_TABLE: Final[dict[int, Table]] = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}
_LIMITS: Final[dict[int, int]] = {1: 2000, 2: 2000, 3: 125, 4: 125, 15: 1968, 16: 123}


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed request."""

    unit: int
    function_code: int
    address: int
    count: int  # values read or written
    values: tuple[int, ...] = ()  # written registers, or 0/1 per coil


def parse_request(frame: bytes) -> Request | None:
    """The request in a whole frame, or None when it is not one (bad CRC, unknown code,
    inconsistent lengths): a slave ignores such a frame."""
    length = request_length(frame)
    if not length or len(frame) != length or not crc_ok(frame):
        return None
    unit, code = frame[0], frame[1]
    address, word = struct.unpack(">HH", frame[2:6])
    if code in _READ_TABLE:
        return Request(unit, code, address, word)
    if code == 5:
        return Request(unit, code, address, 1, (word,))
    if code == 6:
        return Request(unit, code, address, 1, (word,))
    data = frame[7:-2]
    if code == 15:
        bits = tuple((data[i // 8] >> (i % 8)) & 1 for i in range(min(word, len(data) * 8)))
        return Request(unit, code, address, word, bits)
    registers = tuple(struct.unpack(f">{len(data) // 2}H", data[: len(data) // 2 * 2]))
    return Request(unit, code, address, word, registers)


def exception_frame(unit: int, function_code: int, code: int) -> bytes:
    """An exception answer."""
    return with_crc(bytes([unit, function_code | 0x80, code]))


def garble(frame: bytes) -> bytes:
    """The same frame with a wrong CRC."""
    return frame[:-2] + bytes([frame[-2] ^ 0x5A, frame[-1] ^ 0xA5])


def answer(request: Request, state: BuildingState) -> bytes:
    """The answer of a unit of `state` to a request (an exception frame when refused)."""
    limit = _LIMITS.get(request.function_code)
    if limit is not None and not 1 <= request.count <= limit:
        return exception_frame(request.unit, request.function_code, 3)
    if request.function_code in _READ_TABLE:
        return _read(request, state)
    return _write(request, state)


def _read(request: Request, state: BuildingState) -> bytes:
    unit, code = request.unit, request.function_code
    values = state.read(unit, _READ_TABLE[code], request.address, request.count)
    if values is None:
        return exception_frame(unit, code, 2)
    if code in (1, 2):
        packed = bytearray((len(values) + 7) // 8)
        for i, bit in enumerate(values):
            if bit:
                packed[i // 8] |= 1 << (i % 8)
        return with_crc(bytes([unit, code, len(packed)]) + bytes(packed))
    return with_crc(bytes([unit, code, 2 * len(values)]) + struct.pack(f">{len(values)}H", *values))


def _write(request: Request, state: BuildingState) -> bytes:
    unit, code = request.unit, request.function_code
    written = request.values
    if code == 5:
        if written[0] not in (0x0000, 0xFF00):
            return exception_frame(unit, code, 3)
        written = (int(written[0] == 0xFF00),)
    elif code in (15, 16) and len(written) != request.count:
        return exception_frame(unit, code, 3)
    if not state.write(unit, code, request.address, written):
        return exception_frame(unit, code, 2)
    echo = request.values[0] if code in (5, 6) else request.count
    return with_crc(bytes([unit, code]) + struct.pack(">HH", request.address, echo))
