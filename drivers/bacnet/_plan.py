"""Batching property reads into ReadPropertyMultiple requests by APDU size (pure).

Does: estimate the encoded size of a ReadPropertyMultiple request and of its answer
(clause 21 encoding: 4-byte confirmed-request header, 3-byte complex-ack header,
5 bytes per object identifier, 2 per opening/closing tag pair, 2-3 per property
identifier, the application-tagged value), and cut a device's reads into as few
requests as fit what the device accepts and can send back: its max-APDU, and for a
device that can send segmented answers, that many segments. Does not: encode or
send anything (`_stack`), or decide which points are due (`_device`).

Strings have no size until they are read: they are estimated at `STRING_ESTIMATE`
bytes. A device that still finds an answer too big aborts the request
(segmentation-not-supported, buffer-overflow, apdu-too-long): the caller then halves
the device's answer budget with `shrink()` and plans again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

CONFIRMED_HEADER: Final = 4
COMPLEX_ACK_HEADER: Final = 3
SEGMENTED_ACK_HEADER: Final = 5
OBJECT_ID: Final = 5  # context tag + 4 bytes
TAG_PAIR: Final = 2  # an opening and a closing tag
ERROR_RESULT: Final = TAG_PAIR + 2 + 2  # opening/closing tag, error class and code
STRING_ESTIMATE: Final = 64
MIN_BUDGET: Final = 50  # the smallest max-APDU a BACnet device may have
SEGMENTING: Final = frozenset({"segmented-both", "segmented-transmit"})
_VALUE_SIZE: Final[dict[str, int]] = {
    "float32": 5, "float64": 10, "bool": 2, "uint32": 5, "int32": 5,
}


@dataclass(frozen=True, slots=True)
class PropertyRead:
    """One property of one object to read, by numbers, with the kind of its value."""

    object_type: int
    instance: int
    property: int
    kind: str


def property_id_size(prop: int) -> int:
    """Bytes of a context-tagged property identifier."""
    return 2 if prop < 0x100 else 3 if prop < 0x10000 else 5


def value_size(kind: str) -> int:
    """Estimated bytes of an application-tagged value of a kind."""
    return _VALUE_SIZE.get(kind, STRING_ESTIMATE)


def request_size(reads: Sequence[PropertyRead]) -> int:
    """Bytes of the ReadPropertyMultiple request APDU for these reads (in this order)."""
    size = CONFIRMED_HEADER
    last: tuple[int, int] | None = None
    for r in reads:
        if (r.object_type, r.instance) != last:
            size += OBJECT_ID + TAG_PAIR
            last = (r.object_type, r.instance)
        size += property_id_size(r.property)
    return size


def response_size(reads: Sequence[PropertyRead]) -> int:
    """Estimated bytes of the answer (without the complex-ack header)."""
    size = 0
    last: tuple[int, int] | None = None
    for r in reads:
        if (r.object_type, r.instance) != last:
            size += OBJECT_ID + TAG_PAIR
            last = (r.object_type, r.instance)
        size += property_id_size(r.property) + max(TAG_PAIR + value_size(r.kind), ERROR_RESULT)
    return size


def response_budget(
    device_max_apdu: int, device_segmentation: str, own_max_apdu: int, own_max_segments: int
) -> int:
    """Bytes an answer may have: one APDU, or as many segments as we accept when the
    device can send segmented answers. Segments are as big as both sides accept."""
    segment = min(device_max_apdu, own_max_apdu)
    if device_segmentation in SEGMENTING:
        return (segment - SEGMENTED_ACK_HEADER) * max(1, own_max_segments)
    return segment - COMPLEX_ACK_HEADER


def shrink(budget: int) -> int:
    """The answer budget to try after a device found an answer too big."""
    return max(MIN_BUDGET, budget // 2)


def plan_batches(
    reads: Sequence[PropertyRead], *, max_request: int, max_response: int
) -> list[list[int]]:
    """Cut reads into requests; each a list of indexes into `reads`.

    Reads of one object stay together where they fit (one ReadAccessSpecification);
    objects keep the order of their first read. A read that does not fit even alone
    gets a request of its own (the device will say whether it can answer it).

    Args:
        reads: what to read.
        max_request: bytes the device accepts in one request APDU.
        max_response: bytes the answer may have (`response_budget`, maybe `shrink`-ed).
    """
    order: dict[tuple[int, int], list[int]] = {}
    for i, r in enumerate(reads):
        order.setdefault((r.object_type, r.instance), []).append(i)
    batches: list[list[int]] = []
    current: list[int] = []
    req = resp = 0
    for indexes in order.values():
        for n, i in enumerate(indexes):
            r = reads[i]
            new_object = n == 0 or not current
            add_req = property_id_size(r.property) + (OBJECT_ID + TAG_PAIR if new_object else 0)
            add_resp = property_id_size(r.property) + max(TAG_PAIR + value_size(r.kind), ERROR_RESULT)
            add_resp += OBJECT_ID + TAG_PAIR if new_object else 0
            if current and (
                CONFIRMED_HEADER + req + add_req > max_request or resp + add_resp > max_response
            ):
                batches.append(current)
                current, req, resp = [], 0, 0
                add_req += 0 if new_object else OBJECT_ID + TAG_PAIR
                add_resp += 0 if new_object else OBJECT_ID + TAG_PAIR
            current.append(i)
            req += add_req
            resp += add_resp
    if current:
        batches.append(current)
    return batches
