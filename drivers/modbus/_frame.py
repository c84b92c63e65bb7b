"""A check of the bytes a Modbus TCP device sends us, before pymodbus parses them (pure).

Does: walk the MBAP frames of a receive buffer and say whether they are well formed
answers to the requests we send (reads 1-4, writes 5, 6, 15, 16, or an exception
for one of them). pymodbus 3.16 raises from inside the transport's
``data_received`` on some malformed answers (asyncio then logs a traceback and drops
the connection) and waits forever on others (a non-zero protocol id); `_link` drops a
garbled buffer instead and reports BAD_FRAME. Does not: match transaction or unit
ids (pymodbus does and skips strangers), decode values, or do any I/O.
"""

from __future__ import annotations

import enum
from typing import Final

_MBAP: Final = 6  # transaction id, protocol id, length (2 bytes each); length counts the unit id
_MAX_LENGTH: Final = 254  # unit id + the largest PDU (253 bytes)
_READS: Final = frozenset({1, 2, 3, 4})
_WRITES: Final = frozenset({5, 6, 15, 16})


class Verdict(enum.Enum):
    """What a receive buffer holds."""

    OK = "ok"  # zero or more well-formed frames, maybe followed by the start of one
    GARBLED = "garbled"  # something in it is not a well-formed answer


def check_stream(data: bytes) -> Verdict:
    """Check every complete frame in `data` (a trailing partial frame is fine)."""
    pos = 0
    size = len(data)
    while size - pos >= _MBAP:
        if data[pos + 2] or data[pos + 3]:  # protocol id must be 0
            return Verdict.GARBLED
        length = int.from_bytes(data[pos + 4 : pos + 6], "big")
        if not 2 <= length <= _MAX_LENGTH:
            return Verdict.GARBLED
        end = pos + _MBAP + length
        if end > size:
            return Verdict.OK
        if not pdu_ok(data[pos + _MBAP + 1 : end]):
            return Verdict.GARBLED
        pos = end
    return Verdict.OK


def pdu_ok(pdu: bytes) -> bool:
    """Whether a response PDU (function code and data) is well formed."""
    code = pdu[0]
    if code & 0x80:
        return (code & 0x7F) in _READS | _WRITES and len(pdu) == 2
    if code in _READS:
        if len(pdu) < 2 or pdu[1] != len(pdu) - 2 or pdu[1] == 0:
            return False
        return code in (1, 2) or pdu[1] % 2 == 0
    if code in _WRITES:
        return len(pdu) == 5
    return False
