"""The uplink wire format: what a Box publishes, encoded and decoded (pure code, no I/O).

Every payload starts with one header byte: the high bit says the rest is
raw-deflate compressed, the low 7 bits are the format version (1). The rest is CBOR.

Point table (topic `.../up/meta`, retained), version 1::

    [table_id, [[name, unit, kind], ...]]

`table_id` is a 32-bit digest of the table, so a batch names the table it was
made with, and a point is sent on the wire as its index in that table.

Data batch (topic `.../up/data`), version 1::

    [epoch, seq, table_id, base_ts_ms, [group, ...]]
    group = [dt_ms, first_index, [value, ...]]                 # all good
          | [dt_ms, first_index, [value, ...], {offset: code}] # some bad: value is null
          | [dt_ms, first_index, count]                        # a span: polled, unchanged

A group holds consecutive points of the table read at one instant
(`base_ts_ms + dt_ms`). A *span* (an integer where the values would be) says that `count`
consecutive points from `first_index` were polled at that instant and are unchanged since the
last value the Box sent for each (report on change, `boxd.onchange`): the value in force is
that point's last value (and quality) at or before the span's instant, which the Box sent at
most `MAX_AGE_S` before it (the longest `max_age_s` a configuration may set). A span may reach
the cloud before the value it refers to (the freshest batch goes ahead of a backlog): the cloud
resolves it when it is read, never when it arrives. A poll that is neither a value nor in a
span was not received: missing, not unchanged. A span counts as one sample in a batch's limits.

`epoch` is a random number fixed when the Box's queue was created and `seq` counts batches in
it, so (Box, epoch, seq) names a batch for ever and the cloud can keep each one once. Values
are CBOR integers, floats (the
shortest float that is exact), booleans, text or null.

Decoding takes untrusted bytes, in both directions (the cloud decodes what a Box sends with the
same `unframe_untrusted` the Box uses for its downlink): sizes are bounded before and after
inflation, the CBOR is walked before anything is built (depth and item count bounded per message
kind, no tags, no indefinite lengths, no duplicate keys), then every field is type-checked;
anything else raises `WireError` saying what is wrong.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cbor2

from proto import names, series
from proto.errors import WireError
from proto.points import PointInfo, Quality, Value

VERSION = 1  # point tables, documents; data batches of Boxes before format 2
BATCH_VERSION = 2  # data batches with poll series (`proto.series`)
BATCH_VERSIONS = (VERSION, BATCH_VERSION)  # what the platform decodes: Boxes in the field send both
_DEFLATE = 0x80
MAX_PAYLOAD = 256 * 1024  # on the wire: a batch, a point table, a reply
MAX_INFLATED = 4 * 1024 * 1024  # after inflation
MAX_DOC = 16 * 1024  # a heartbeat, an event, on the wire
MAX_STATUS = 2 * 1024  # the retained status (JSON)
MAX_POINTS = 100_000
MAX_AGE_S = 86_400  # a span refers to a value sent at most this long before it (see above)
_MIN_GAIN = 32  # compress only when it saves at least this many bytes


@dataclass(frozen=True, slots=True)
class Group:
    """Consecutive points of one table read at one instant: values, or a span of `unchanged` points."""

    dt_ms: int
    first: int
    values: list[Value]
    faults: dict[int, int]  # offset in `values` -> Quality code
    unchanged: int = 0  # a span: this many points from `first` polled and unchanged (`values` empty)


@dataclass(frozen=True, slots=True)
class Batch:
    """A decoded data batch."""

    epoch: int
    seq: int
    table_id: int
    base_ts_ms: int
    groups: list[Group]

    def samples(self, table: Sequence[PointInfo]) -> Iterator[tuple[str, int, Value, int]]:
        """Yield (point name, ts_ms, value, quality) using the batch's point table.

        Raises:
            WireError: a group points outside the table.
        """
        for g in self.groups:
            if g.first + len(g.values) + g.unchanged > len(table):
                raise WireError(f"group at index {g.first} runs past the {len(table)}-point table")
            ts = self.base_ts_ms + g.dt_ms
            for i, v in enumerate(g.values):
                yield table[g.first + i].name, ts, v, g.faults.get(i, Quality.GOOD)

    def spans(self) -> Iterator[tuple[int, int, int]]:
        """Yield (ts_ms, first index, count) of each span: points polled and unchanged."""
        for g in self.groups:
            if g.unchanged:
                yield self.base_ts_ms + g.dt_ms, g.first, g.unchanged


def _frame(body: bytes, version: int = VERSION) -> bytes:
    packed = zlib.compressobj(6, zlib.DEFLATED, -15)
    small = packed.compress(body) + packed.flush()
    if len(small) + _MIN_GAIN < len(body):
        return bytes([version | _DEFLATE]) + small
    return bytes([version]) + body


def _inflate(payload: bytes, max_payload: int, max_inflated: int, versions: tuple[int, ...] = (VERSION,)) -> bytes:
    """Check the header byte (its version one of `versions`) and the sizes; the CBOR body, inflated
    when it was deflated."""
    if not payload:
        raise WireError("empty payload")
    if len(payload) > max_payload:
        raise WireError(f"payload of {len(payload)} bytes is over the {max_payload}-byte limit")
    head, body = payload[0], payload[1:]
    if head & 0x7F not in versions:
        raise WireError(f"unsupported format version {head & 0x7F} (this side speaks {', '.join(map(str, versions))})")
    if head & _DEFLATE:
        inflater = zlib.decompressobj(-15)
        try:
            body = inflater.decompress(body, max_inflated)
        except zlib.error as e:
            raise WireError(f"bad compressed data: {e}") from e
        if inflater.unconsumed_tail:
            raise WireError(f"inflated payload is over the {max_inflated}-byte limit")
    elif len(body) > max_inflated:
        raise WireError(f"payload is over the {max_inflated}-byte limit")
    return bytes(body)


# Bounds of the uplink's messages, decoded by the cloud with `unframe_untrusted` (the platform does
# not trust a Box any more than a Box trusts the platform): depth, then CBOR data items.
# A batch: [epoch, seq, table, base, [[dt, first, [values], {faults}], ...]]: depth 4, at most
# 8 items a sample (a one-value group with a fault) for MAX_POINTS samples (a span, 4 items, counts as one).
# Format 2's poll series nest one deeper: [..., [[dt, first, count, period, [jitter], [changes: [m, e]]]]].
BATCH_BOUNDS = (5, 8 * MAX_POINTS + 8)
TABLE_BOUNDS = (3, 4 * MAX_POINTS + 3)  # [table_id, [[name, unit, kind], ...]]
DOC_BOUNDS = (5, 10_000)  # health reports, events


def inflated_size(payload: bytes, at_most: int = MAX_INFLATED) -> int:
    """How many bytes a payload's body takes once inflated (what decoding it costs, at most), or
    `at_most` + 1 when it is more: only that much is inflated.

    Raises:
        WireError: bad framing, or over the size limits.
    """
    if len(payload) > 1 and payload[0] & _DEFLATE and at_most < MAX_INFLATED:
        if len(payload) > MAX_PAYLOAD:
            raise WireError(f"payload of {len(payload)} bytes is over the {MAX_PAYLOAD}-byte limit")
        try:
            return len(zlib.decompressobj(-15).decompress(payload[1:], at_most + 1))
        except zlib.error as e:
            raise WireError(f"bad compressed data: {e}") from e
    return min(len(_inflate(payload, MAX_PAYLOAD, MAX_INFLATED, BATCH_VERSIONS)), at_most + 1)


# Tags cbor2 decodes by itself (found by trying every tag below 70000 in cbor2 6.3): all
# refused by `unframe_untrusted`, as are the others (see `_scan`).
_SEMANTIC_TAGS = (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261,
                  1004, 43000, 55799)


def _refuse_tag(*_: object) -> object:
    raise WireError("CBOR tags are not allowed")


_NO_TAGS = dict.fromkeys(_SEMANTIC_TAGS, _refuse_tag)


def unframe_untrusted(
    payload: bytes, *, max_payload: int = MAX_PAYLOAD, max_inflated: int = MAX_INFLATED,
    max_depth: int = 8, max_items: int = 10_000, text_keys: bool = True, versions: tuple[int, ...] = (VERSION,),
) -> object:
    """Decode a framed payload from a peer we do not trust (the platform's downlink).

    Stricter than the uplink's decoding: on top of the size limits (on the wire and
    inflated), the CBOR is first walked without building anything (`_scan`) and refused
    when it nests more than `max_depth` containers, holds more than `max_items` data items
    (a 4 MiB body of one-byte empty maps would otherwise become ~300 MB of dicts), uses a
    tag (dates, bignums, shared references that make cycles...), an indefinite length, a
    simple value other than false/true/null, or has bytes after its one item. Only then is
    it decoded, by cbor2 with the same limits and duplicate map keys refused; map keys must be
    text unless `text_keys` is False (a batch's fault maps are keyed by integers).

    Raises:
        WireError: what is wrong with the payload.
    """
    body = _inflate(payload, max_payload, max_inflated, versions)
    _scan(body, max_depth, max_items)
    try:
        return cbor2.loads(
            body, max_depth=max_depth + 1, allow_indefinite=False, allow_duplicate_keys=False,
            strict_hashable_types=text_keys, semantic_decoders=_NO_TAGS, tag_hook=_refuse_tag,
        )
    except WireError:
        raise
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError, OverflowError) as e:
        raise WireError(f"bad CBOR: {e}") from e


_SIMPLE_OK = frozenset({20, 21, 22, 25, 26, 27})  # false, true, null, half/single/double float
# One-byte items: small integers, empty strings and containers, false/true/null. A run of them is
# counted at C speed (a body of four million empty maps is refused in milliseconds, not seconds).
_ONE_BYTE_RUN = re.compile(rb"[\x00-\x17\x20-\x37\x40\x60\x80\xa0\xf4-\xf6]+")
_ONE_BYTE = frozenset(b"\x40\x60\x80\xa0\xf4\xf5\xf6" + bytes(range(0x18)) + bytes(range(0x20, 0x38)))


def _scan(body: bytes, max_depth: int, max_items: int) -> None:  # noqa: PLR0912, PLR0915 (one state machine)
    """Walk the CBOR item heads of `body` iteratively (no recursion, nothing decoded)."""
    pos, end, items = 0, len(body), 0
    todo = [1]  # items still to read at each open level; the bottom is the one top item
    while todo:
        if todo[-1] == 0:
            todo.pop()
            continue
        if pos < end and body[pos] in _ONE_BYTE and todo[-1] > 1:
            m = _ONE_BYTE_RUN.match(body, pos, min(end, pos + todo[-1]))  # a prefix match, not a name
            assert m is not None
            run = m.end() - pos
            items, pos, todo[-1] = items + run, pos + run, todo[-1] - run
            if items > max_items:
                raise WireError(f"bad CBOR: more than {max_items} items")
            continue
        todo[-1] -= 1
        if pos >= end:
            raise WireError("bad CBOR: truncated")
        head = body[pos]
        pos += 1
        major, info = head >> 5, head & 0x1F
        items += 1
        if items > max_items:
            raise WireError(f"bad CBOR: more than {max_items} items")
        if major == 7:
            if info not in _SIMPLE_OK:
                raise WireError(f"bad CBOR: simple value {info} is not allowed")
            pos += (0, 2, 4, 8)[info - 24] if info >= 25 else 0
            continue
        if info < 24:
            arg = info
        elif info <= 27:
            size = 1 << (info - 24)
            if pos + size > end:
                raise WireError("bad CBOR: truncated")
            arg = int.from_bytes(body[pos:pos + size], "big")
            pos += size
        else:
            raise WireError("bad CBOR: indefinite lengths are not allowed" if info == 31
                            else f"bad CBOR: reserved additional information {info}")
        if major == 6:
            raise WireError(f"bad CBOR: tag {arg} is not allowed")
        if major in (2, 3):  # byte and text strings
            if arg > end - pos:
                raise WireError("bad CBOR: truncated")
            pos += arg
        elif major in (4, 5):  # arrays and maps
            count = arg * 2 if major == 5 else arg
            if count > end - pos:  # every item takes at least one byte
                raise WireError("bad CBOR: truncated")
            todo.append(count)
            if len(todo) - 1 > max_depth:
                raise WireError(f"bad CBOR: nested more than {max_depth} deep")
    if pos > end:
        raise WireError("bad CBOR: truncated")
    if pos != end:
        raise WireError(f"bad CBOR: {end - pos} bytes after the item")


def encode_doc(doc: dict[str, object]) -> bytes:
    """Encode a small document (health report, event): a CBOR map with text keys."""
    return _frame(cbor2.dumps(doc))


def decode_doc(payload: bytes, required: dict[str, type | tuple[type, ...]]) -> dict[str, object]:
    """Decode a small document and check the types of its required keys.

    Raises:
        WireError: not a map, too big, or a required key missing or of the wrong type.
    """
    if len(payload) > MAX_DOC:
        raise WireError(f"document of {len(payload)} bytes is over the {MAX_DOC}-byte limit")
    obj = unframe_untrusted(payload, max_depth=DOC_BOUNDS[0], max_items=DOC_BOUNDS[1])
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise WireError("document must be a map with text keys")
    for key, kind in required.items():
        v = obj.get(key)
        if v is None or not isinstance(v, kind) or (isinstance(v, bool) and kind is int):
            raise WireError(f"document field {key!r} is missing or not {kind}")
    return obj


def table_id(points: Sequence[PointInfo]) -> int:
    """The 32-bit digest naming a point table."""
    body = cbor2.dumps([[p.name, p.unit, p.kind] for p in points])
    return int.from_bytes(hashlib.sha256(body).digest()[:4], "big")


def encode_table(points: Sequence[PointInfo]) -> bytes:
    """Encode a point table for the `meta` topic."""
    return _frame(cbor2.dumps([table_id(points), [[p.name, p.unit, p.kind] for p in points]]))


def decode_table(payload: bytes) -> tuple[int, list[PointInfo]]:
    """Decode and validate a point table.

    Raises:
        WireError: the payload is not a valid point table.
    """
    obj = unframe_untrusted(payload, max_depth=TABLE_BOUNDS[0], max_items=TABLE_BOUNDS[1])
    if not (isinstance(obj, list) and len(obj) == 2 and _is_uint32(obj[0])):
        raise WireError("point table must be [table_id, points]")
    rows = obj[1]
    if not isinstance(rows, list) or len(rows) > MAX_POINTS:
        raise WireError("point table's points must be a list of at most 100000 rows")
    points, seen = [], set()
    for n, row in enumerate(rows):
        if not (isinstance(row, list) and len(row) == 3 and all(isinstance(x, str) for x in row)):
            raise WireError(f"point table row {n} must be [name, unit, kind] of text")
        if not names.POINT.fullmatch(row[0]):
            raise WireError(f"point table row {n}: {row[0][:80]!r} is not a point name (<device>.<point>)")
        if len(row[1]) > 32 or len(row[2]) > 16:
            raise WireError(f"point table row {n} has a field of the wrong length")
        if row[0] in seen:
            raise WireError(f"point table row {n} repeats the name {row[0][:128]!r}")
        seen.add(row[0])
        points.append(PointInfo(row[0], row[1], row[2]))
    if table_id(points) != obj[0]:
        raise WireError("point table's id does not match its content")
    return obj[0], points


def encode_group(dt_ms: int, first: int, values: Sequence[Value] | int, faults: dict[int, int]) -> list[object]:
    """The CBOR-ready form of one group (kept by the queue until it is batched); `values` an integer:
    a span of that many points polled and unchanged."""
    if isinstance(values, int):
        return [dt_ms, first, values]
    return [dt_ms, first, list(values), faults] if faults else [dt_ms, first, list(values)]


def encode_batch(
    epoch: int, seq: int, table: int, base_ts_ms: int, groups: Sequence[list[object]]
) -> bytes:
    """Encode a format 1 batch from groups made by `encode_group` (what Boxes before format 2 send)."""
    return _frame(cbor2.dumps([epoch, seq, table, base_ts_ms, list(groups)]))


def encode_batch_v2(epoch: int, seq: int, table: int, base_ts_ms: int, groups: Sequence[series.Raw],
                    *, slack_ms: int = 0) -> bytes:
    """Encode a format 2 batch: each device's polls as a poll series (`proto.series`); `groups` are
    (dt_ms from `base_ts_ms`, first index, values or a span's count, faults), in time order;
    `slack_ms`: how far a series' poll times may be sent from the readings' (`series.encode`)."""
    return _frame(cbor2.dumps([epoch, seq, table, base_ts_ms, series.encode(groups, slack_ms)]), BATCH_VERSION)


def decode_batch(payload: bytes) -> Batch:
    """Decode and validate a data batch.

    Raises:
        WireError: the payload is not a valid batch; the message says what is wrong.
    """
    obj = unframe_untrusted(payload, max_depth=BATCH_BOUNDS[0], max_items=BATCH_BOUNDS[1], text_keys=False,
                            versions=BATCH_VERSIONS)
    v2 = payload[0] & 0x7F == BATCH_VERSION
    if not (isinstance(obj, list) and len(obj) == 5):
        raise WireError("batch must be [epoch, seq, table_id, base_ts_ms, groups]")
    epoch, seq, tid, base, raw_groups = obj
    for name, val in (("epoch", epoch), ("seq", seq), ("base_ts_ms", base)):
        if not _is_uint64(val):
            raise WireError(f"batch {name} must be an unsigned 64-bit integer")
    if not _is_uint32(tid):
        raise WireError("batch table_id must be an unsigned 32-bit integer")
    if not isinstance(raw_groups, list):
        raise WireError("batch groups must be a list")
    groups, count = [], 0
    for n, g in enumerate(raw_groups):
        if v2 and isinstance(g, list) and len(g) in (6, 7):  # a poll series
            expanded = [Group(dt, first, values, faults, unchanged)
                        for dt, first, values, faults, unchanged in series.expand(n, g, MAX_POINTS - count)]
        else:
            expanded = [_decode_group(n, g)]
        for group in expanded:
            count += len(group.values) or 1  # a span counts as one
            if count > MAX_POINTS:
                raise WireError(f"batch holds more than {MAX_POINTS} samples")
        groups += expanded
    return Batch(epoch, seq, tid, base, groups)


def _decode_group(n: int, g: object) -> Group:  # noqa: PLR0912 (one check a field)
    if not (isinstance(g, list) and len(g) in (3, 4)):
        raise WireError(f"group {n} must be [dt_ms, first_index, values(, faults)] or [dt_ms, first_index, count]"
                        " (or, in format 2, a poll series of 6 or 7 fields)")
    dt, first, values = g[0], g[1], g[2]
    if not (isinstance(dt, int) and not isinstance(dt, bool) and -(2**40) < dt < 2**40):
        raise WireError(f"group {n} dt_ms must be an integer")
    if not (isinstance(first, int) and not isinstance(first, bool) and 0 <= first < MAX_POINTS):
        raise WireError(f"group {n} first_index must be an integer 0..{MAX_POINTS - 1}")
    if isinstance(values, int) and not isinstance(values, bool) and len(g) == 3:
        if not 1 <= values <= MAX_POINTS - first:
            raise WireError(f"group {n} span of {values} points from index {first} is outside 1..{MAX_POINTS} points")
        return Group(dt, first, [], {}, values)
    if not isinstance(values, list):
        raise WireError(f"group {n} values must be a list (or a span's count of points)")
    for v in values:
        if not (v is None or isinstance(v, bool | int | float | str)) or (
            isinstance(v, str) and len(v) > 256
        ):
            raise WireError(f"group {n} holds a value of type {type(v).__name__}")
        if isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**64:
            raise WireError(f"group {n} holds an integer out of 64-bit range")
    faults: dict[int, int] = {}
    if len(g) == 4:
        raw = g[3]
        if not isinstance(raw, dict):
            raise WireError(f"group {n} faults must be a map")
        for k, code in raw.items():
            if not (isinstance(k, int) and 0 <= k < len(values)):
                raise WireError(f"group {n} fault offset {k!r} is outside the group")
            if code not in Quality._value2member_map_:
                raise WireError(f"group {n} fault code {code!r} is unknown")
            faults[k] = code
    return Group(dt, first, values, faults)


def _is_uint64(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**64


def _is_uint32(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32
