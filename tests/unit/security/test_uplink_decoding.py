"""Issue 12, finding 2: the cloud decodes what a Box sends with the bounded decoder.

The attacks (a few KB on the wire that inflate into millions of CBOR items, tags, deep
nesting, point tables that repeat names) are refused with a reason, before anything is built.
Item counting is checked on random documents: counting runs of one-byte items in bulk must give
the exact count (the speed of it is measured by `python -m bench.attacks`).
"""

from __future__ import annotations

import zlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import PointInfo
from proto import wire
from proto.errors import WireError


def _deflated(body: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return bytes([wire.VERSION | 0x80]) + c.compress(body) + c.flush()


def _array_head(n: int) -> bytes:
    return b"\x9a" + n.to_bytes(4, "big")


@pytest.mark.parametrize("decode", [wire.decode_batch, wire.decode_table,
                                    lambda p: wire.decode_doc(p, {})])
def test_four_million_empty_maps_are_refused_without_being_built(decode: object) -> None:
    bomb = _deflated(_array_head(4_000_000) + b"\xa0" * 4_000_000)
    assert len(bomb) < 8 * 1024
    with pytest.raises(WireError, match=r"more than \d+ items"):  # refused by the walk, before cbor2 builds
        decode(bomb)  # type: ignore[operator]


def test_a_batch_bomb_inside_a_valid_looking_batch_is_refused() -> None:
    body = b"\x85\x01\x01\x01\x01" + _array_head(1) + b"\x83\x00\x00" + _array_head(3_000_000) + b"\xa0" * 3_000_000
    with pytest.raises(WireError, match="more than 800008 items"):
        wire.decode_batch(_deflated(body))


@pytest.mark.parametrize("body", [
    cbor2.dumps(cbor2.CBORTag(1, 0)),  # a date
    cbor2.dumps([1, 2, 3, 4, [[0, 0, [cbor2.CBORTag(2, b"\xff" * 64)]]]]),  # a bignum
    b"\x85" + b"\x01" * 4 + b"\x9f\xff",  # an indefinite length
])
def test_tags_and_indefinite_lengths_are_refused(body: bytes) -> None:
    with pytest.raises(WireError, match=r"tag|indefinite"):
        wire.decode_batch(bytes([wire.VERSION]) + body)


def test_a_point_table_that_repeats_a_name_is_refused() -> None:
    points = [PointInfo("dev.a", "", "f")] * 3
    body = cbor2.dumps([wire.table_id(points), [[p.name, p.unit, p.kind] for p in points]])
    with pytest.raises(WireError, match=r"repeats the name 'dev\.a'"):
        wire.decode_table(bytes([wire.VERSION]) + body)


def test_the_largest_legitimate_batch_still_decodes() -> None:
    """100,000 samples, each a one-value group with a fault: the worst shape a Box can send."""
    groups = [wire.encode_group(i, 0, [None], {0: 1}) for i in range(wire.MAX_POINTS)]
    batch = wire.decode_batch(_deflated(cbor2.dumps([1, 1, 1, 1, groups])))
    assert sum(len(g.values) for g in batch.groups) == wire.MAX_POINTS


leaves = st.none() | st.booleans() | st.integers(-30, 30) | st.integers(-2**64 + 1, 2**64 - 1) | \
    st.text(max_size=3) | st.binary(max_size=3) | st.floats(allow_nan=False)
documents = st.recursive(leaves, lambda kids: st.lists(kids, max_size=6) | st.dictionaries(st.text(max_size=3), kids,
                                                                                          max_size=4), max_leaves=60)


def _count(x: object) -> int:
    if isinstance(x, list):
        return 1 + sum(_count(v) for v in x)
    if isinstance(x, dict):
        return 1 + sum(1 + _count(v) for v in x.values())
    return 1


@settings(max_examples=300, deadline=None)
@given(documents)
def test_items_are_counted_exactly_whatever_the_runs_of_small_items(doc: object) -> None:
    payload = bytes([wire.VERSION]) + cbor2.dumps(doc)
    n = _count(doc)
    assert wire.unframe_untrusted(payload, max_depth=64, max_items=n, text_keys=True) == doc
    with pytest.raises(WireError, match="more than"):
        wire.unframe_untrusted(payload, max_depth=64, max_items=n - 1)
