"""Modbus RTU frames: CRC-16, frame lengths, inter-frame silence, screening answers (pure).

Does: compute the Modbus CRC-16 (polynomial 0xA001, initial 0xFFFF, sent low byte
first); tell how long a request or a response frame is from its first bytes; compute
the silent interval a line needs between frames (3.5 character times, 1.75 ms above
19200 baud as the Modbus serial line specification fixes it); and screen a receive
buffer for the answer of one unit (`screen_answer`): skip complete, valid frames of
other units (a slow device's late answer), report garbage. Used by the RTU link (so
that pymodbus never parses garbage: its RTU framer raises inside the transport on
some) and by the RTU simulator. Does not: do I/O or decode values.
"""

from __future__ import annotations

import enum
from typing import Final

_READS: Final = frozenset({1, 2, 3, 4})
_WRITES: Final = frozenset({5, 6, 15, 16})
MAX_FRAME: Final = 256  # unit id, PDU (at most 253 bytes), CRC


def _table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE: Final = _table()


def crc16(data: bytes) -> int:
    """The Modbus CRC-16 of `data` as an integer (its low byte is sent first)."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def with_crc(body: bytes) -> bytes:
    """A frame: `body` (unit id and PDU) followed by its CRC, low byte first."""
    return body + crc16(body).to_bytes(2, "little")


def crc_ok(frame: bytes) -> bool:
    """Whether the last two bytes of `frame` are the CRC of the rest."""
    return len(frame) >= 4 and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")


def char_time_s(baudrate: int, bytesize: int = 8, parity: str = "N", stopbits: int = 1) -> float:
    """The time one character takes on the line: start bit, data bits, parity, stop bits."""
    bits = 1 + bytesize + (0 if parity == "N" else 1) + stopbits
    return bits / baudrate


def silent_interval_s(baudrate: int, bytesize: int = 8, parity: str = "N", stopbits: int = 1) -> float:
    """The silence that separates two frames: t3.5, or the spec's fixed 1.75 ms above 19200."""
    if baudrate > 19200:
        return 0.00175
    return 3.5 * char_time_s(baudrate, bytesize, parity, stopbits)


def request_length(data: bytes) -> int | None:
    """The length of the request frame that `data` starts with; None if not yet known.

    Returns 0 for a function code this module does not know (not a request we serve).
    """
    if len(data) < 2:
        return None
    code = data[1]
    if code in _READS or code in (5, 6):
        return 8
    if code in (15, 16):
        if len(data) < 7:
            return None
        return 9 + data[6]
    return 0


def response_length(data: bytes) -> int | None:
    """The length of the response frame that `data` starts with; None if not yet known.

    Returns 0 for a function code that no answer to our requests has.
    """
    if len(data) < 2:
        return None
    code = data[1]
    if code & 0x80:
        return 5 if (code & 0x7F) in _READS | _WRITES else 0
    if code in _READS:
        if len(data) < 3:
            return None
        return 5 + data[2] if data[2] else 0
    if code in _WRITES:
        return 8
    return 0


class Screen(enum.Enum):
    """What a receive buffer holds for the unit we asked."""

    WAIT = "wait"  # nothing, or the start of a frame: wait for more
    ANSWER = "answer"  # a complete, valid frame from our unit
    GARBLED = "garbled"  # bytes that are not a valid frame


def screen_answer(data: bytes, unit: int) -> tuple[Screen, bytes, int]:
    """Find the answer of `unit` in a receive buffer.

    Returns:
        (verdict, the frame of our unit when ANSWER, the number of complete valid
        frames of other units skipped before it).
    """
    pos = skipped = 0
    while pos < len(data):
        rest = data[pos:]
        length = response_length(rest)
        if length is None:
            return Screen.WAIT, b"", skipped
        if length == 0 or length > MAX_FRAME:
            return Screen.GARBLED, b"", skipped
        if len(rest) < length:
            return Screen.WAIT, b"", skipped
        frame = rest[:length]
        if not crc_ok(frame):
            return Screen.GARBLED, b"", skipped
        if frame[0] == unit:
            return Screen.ANSWER, frame, skipped
        skipped += 1
        pos += length
    return Screen.WAIT, b"", skipped
