"""The uplink wire format: round trips, compactness, and refusal of bad input."""

from __future__ import annotations

import zlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import PointInfo, Quality, Value
from proto import wire
from proto.errors import WireError

TABLE = [PointInfo(f"dev.p{i}", "degC", "float32") for i in range(50)]
values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False), st.text(max_size=20),
)


@settings(deadline=None)  # a wall-clock deadline fails on a loaded machine: no timing in tests
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 40), st.lists(values, min_size=1, max_size=10)),
                max_size=20), st.integers(0, 2**63), st.integers(1, 2**40))
def test_batch_round_trip(groups: list[tuple[int, int, list[Value]]], epoch: int, seq: int) -> None:
    encoded = [wire.encode_group(dt, first, vals, {0: Quality.NO_ANSWER} if vals[0] is None else {})
               for dt, first, vals in groups]
    payload = wire.encode_batch(epoch, seq, wire.table_id(TABLE), 1_700_000_000_000, encoded)
    b = wire.decode_batch(payload)
    assert (b.epoch, b.seq, b.table_id) == (epoch, seq, wire.table_id(TABLE))
    assert [(g.dt_ms, g.first, g.values) for g in b.groups] == [tuple(x) for x in groups]


def test_samples_are_named_from_the_table() -> None:
    payload = wire.encode_batch(1, 2, 3, 1000, [wire.encode_group(5, 10, [1.5, None], {1: 1})])
    got = list(wire.decode_batch(payload).samples(TABLE))
    assert got == [("dev.p10", 1005, 1.5, 0), ("dev.p11", 1005, None, Quality.NO_ANSWER)]


def test_group_running_past_the_table_is_refused() -> None:
    payload = wire.encode_batch(1, 2, 3, 1000, [wire.encode_group(0, 49, [1, 2], {})])
    with pytest.raises(WireError, match="runs past"):
        list(wire.decode_batch(payload).samples(TABLE))


def test_table_round_trip_and_id_check() -> None:
    tid, points = wire.decode_table(wire.encode_table(TABLE))
    assert points == TABLE and tid == wire.table_id(TABLE)
    forged = bytes([1]) + cbor2.dumps([tid ^ 1, [[p.name, p.unit, p.kind] for p in TABLE]])
    with pytest.raises(WireError, match="does not match"):
        wire.decode_table(forged)


def test_a_poll_of_many_points_is_compact() -> None:
    # 1000 changing float readings, one group: the compact format costs ~5 bytes a value
    vals = [20.0 + i / 8 for i in range(1000)]
    payload = wire.encode_batch(2**62, 1, 7, 1_700_000_000_000, [wire.encode_group(0, 0, vals, {})])
    assert len(payload) < 1000 * 5.5


@pytest.mark.parametrize(("payload", "why"), [
    (b"", "empty"),
    (b"\x03" + cbor2.dumps([]), "version 3"),
    (b"\x01\xff\xff", "bad CBOR"),
    (b"\x01" + cbor2.dumps({"a": 1}), "must be"),
    (b"\x01" + cbor2.dumps([1, -2, 3, 4, []]), "seq"),
    (b"\x01" + cbor2.dumps([1, 2, 2**33, 4, []]), "table_id"),
    (b"\x01" + cbor2.dumps([1, 2, 3, 4, [[0, 0, [[1]]]]]), "value of type list|nested more than"),
    (b"\x01" + cbor2.dumps([1, 2, 3, 4, [[0, 0, [1], {5: 1}]]]), "outside the group"),
    (b"\x01" + cbor2.dumps([1, 2, 3, 4, [[0, 0, [1], {0: 99}]]]), "unknown"),
    (b"\x01" + b"\x00" * (wire.MAX_PAYLOAD + 1), "over"),
    (b"\x81" + b"garbage", "compressed"),
])
def test_malformed_batches_are_refused_with_a_reason(payload: bytes, why: str) -> None:
    with pytest.raises(WireError, match=why):
        wire.decode_batch(payload)


def test_decompression_bomb_is_refused() -> None:
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = b"\x81" + z.compress(b"\x00" * (wire.MAX_INFLATED * 2)) + z.flush()
    assert len(bomb) < wire.MAX_PAYLOAD
    with pytest.raises(WireError, match="inflated"):
        wire.decode_batch(bomb)


@given(st.binary(max_size=300))
def test_random_bytes_never_crash_the_decoder(data: bytes) -> None:
    for decode in (wire.decode_batch, wire.decode_table):
        try:
            decode(data)
        except WireError:
            pass


def test_a_span_round_trips_and_costs_a_few_bytes() -> None:
    groups = [wire.encode_group(0, 0, [1.5], {}), wire.encode_group(0, 1, 99, {}), wire.encode_group(1000, 0, 100, {})]
    b = wire.decode_batch(wire.encode_batch(5, 6, 7, 1_700_000_000_000, groups))
    assert list(b.spans()) == [(1_700_000_000_000, 1, 99), (1_700_000_001_000, 0, 100)]
    table = [PointInfo(f"d.p{i}", "", "float32") for i in range(100)]
    assert list(b.samples(table)) == [("d.p0", 1_700_000_000_000, 1.5, Quality.GOOD)]
    assert len(cbor2.dumps(wire.encode_group(1000, 0, 100, {}))) <= 7  # 100 points polled, unchanged
    with pytest.raises(WireError, match="runs past"):
        list(wire.decode_batch(wire.encode_batch(5, 6, 7, 0, [wire.encode_group(0, 50, 51, {})])).samples(table))


@pytest.mark.parametrize(("group", "why"), [
    ([0, 0, 0], "span of 0 points"),
    ([0, 0, -3], "span of -3 points"),
    ([0, 0, True], "values must be a list"),
    ([0, wire.MAX_POINTS - 1, 2], "outside 1..100000"),
    ([0, 0, 2, {}], "values must be a list"),  # a span has no faults
    ([0, 0, 2**63], "span of"),
])
def test_hostile_spans_are_refused_with_a_reason(group: list[object], why: str) -> None:
    with pytest.raises(WireError, match=why):
        wire.decode_batch(b"\x01" + cbor2.dumps([1, 2, 3, 4, [group]]))


def test_spans_count_in_the_batch_limits() -> None:
    many = [[0, 0, 1]] * (wire.MAX_POINTS + 1)
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    with pytest.raises(WireError, match="more than 100000 samples"):
        wire.decode_batch(b"\x81" + z.compress(cbor2.dumps([1, 2, 3, 4, many])) + z.flush())
