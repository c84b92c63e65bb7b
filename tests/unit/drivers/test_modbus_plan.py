"""The read planner: every point covered once, limits and gaps respected, as few requests as the
brute-force optimum, subsets and interval groups, learned limits, responses sliced."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers._types import Quality, Value
from drivers.modbus import MAX_BITS, MAX_REGISTERS, ModbusPoint, PointCodec, ReadPlanner, ReadRequest, plan_reads
from drivers.modbus._codec import DataType
from drivers.modbus._config import TABLES, Table
from drivers.modbus._plan import fail_request, interval_groups, limit_of, unpack_response


def pt(name: str, address: int, kind: DataType = "uint16", table: Table = "holding", **kw: int) -> ModbusPoint:
    return ModbusPoint(name=name, address=address, type=kind, table=table, **kw)  # type: ignore[arg-type]


def spans(requests: tuple[ReadRequest, ...]) -> list[tuple[str, int, int]]:
    return [(r.table, r.start, r.count) for r in requests]


def test_neighbours_merge_within_the_gap() -> None:
    points = [pt("a", 0, "float32"), pt("b", 2), pt("c", 20)]
    assert spans(plan_reads(points, max_gap=8)) == [("holding", 0, 3), ("holding", 20, 1)]
    assert spans(plan_reads(points, max_gap=17)) == [("holding", 0, 21)]
    assert spans(plan_reads(points, max_gap=16)) == [("holding", 0, 3), ("holding", 20, 1)]
    assert spans(plan_reads([pt("a", 0), pt("b", 1)], max_gap=0)) == [("holding", 0, 2)]


def test_members_carry_offsets_in_any_input_order() -> None:
    points = [pt("c", 14, "float32"), pt("a", 10), pt("b", 11, "bool", bit=3), pt("d", 11)]
    (request,) = plan_reads(points, max_gap=8)
    assert (request.start, request.count) == (10, 6)
    assert sorted(request.members) == [(0, 4), (1, 0), (2, 1), (3, 1)]


def test_tables_never_mix_and_come_in_a_fixed_order() -> None:
    points = [
        pt("h", 0), pt("i", 0, table="input"), pt("c", 0, "bool", "coil"),
        pt("d", 0, "bool", "discrete"), pt("i2", 1, table="input"),
    ]
    assert spans(plan_reads(points, max_gap=8)) == [
        ("coil", 0, 1), ("discrete", 0, 1), ("holding", 0, 1), ("input", 0, 2),
    ]


def test_register_limit() -> None:
    points = [pt("s", 0, "string", length=125), pt("n", 125)]
    assert spans(plan_reads(points, max_gap=8)) == [("holding", 0, 125), ("holding", 125, 1)]
    points = [pt("a", 0), pt("b", 123, "float32"), pt("c", 125)]
    assert spans(plan_reads(points, max_gap=125)) == [("holding", 0, 125), ("holding", 125, 1)]


def test_bit_limit() -> None:
    coils = [pt(f"c{i}", i, "bool", "coil") for i in range(0, 2001)]
    requests = plan_reads(coils, max_gap=0)
    assert spans(requests) == [("coil", 0, 2000), ("coil", 2000, 1)]
    assert requests[0].bits and not plan_reads([pt("h", 0)], max_gap=0)[0].bits


def test_empty() -> None:
    assert plan_reads([], max_gap=8) == ()


def test_unpack_registers_with_one_bad_point() -> None:
    points = [pt("t", 0, "float32"), pt("s", 2, "string", length=1), pt("b", 3, "bool", bit=0)]
    codecs = [PointCodec("float32"), PointCodec("string", length=1), PointCodec("bool", bit=0)]
    (request,) = plan_reads(points, max_gap=8)
    values: list[Value] = ["stale"] * 3
    qualities = [Quality.NOT_CONNECTED] * 3
    unpack_response(request, [0x3FC0, 0x0000, 0xFFFF, 0x0001], codecs, values, qualities)
    assert values == [1.5, None, True]
    assert qualities == [Quality.GOOD, Quality.DECODE_ERROR, Quality.GOOD]


def test_unpack_bits_and_fail() -> None:
    points = [pt("x", 5, "bool", "discrete"), pt("y", 7, "bool", "discrete")]
    codecs = [PointCodec("bool"), PointCodec("bool")]
    (request,) = plan_reads(points, max_gap=8)
    values: list[Value] = [None, None]
    qualities = [Quality.NOT_CONNECTED] * 2
    unpack_response(request, [True, False, False, True, False, False, False, False], codecs, values, qualities)
    assert (values, qualities) == ([True, False], [Quality.GOOD, Quality.GOOD])
    fail_request(request, Quality.NO_ANSWER, values, qualities)
    assert (values, qualities) == ([None, None], [Quality.NO_ANSWER, Quality.NO_ANSWER])


# -- properties -------------------------------------------------------------------------

SIZED: list[tuple[DataType, int]] = [
    ("uint16", 1), ("int16", 1), ("float32", 2), ("uint32", 2), ("float64", 4), ("int64", 4),
]


@st.composite
def point_lists(draw: st.DrawFn) -> list[ModbusPoint]:
    n = draw(st.integers(0, 60))
    base = draw(st.sampled_from([0, 1000, 65000]))
    points = []
    for i in range(n):
        table = draw(st.sampled_from(TABLES))
        if table in ("coil", "discrete"):
            address = base + draw(st.integers(0, 4500))
            points.append(pt(f"p{i}", min(address, 65535), "bool", table))
            continue
        shape = draw(st.sampled_from(["num", "num", "num", "string", "bit"]))
        if shape == "string":
            length = draw(st.integers(1, 125))
            address = min(base + draw(st.integers(0, 400)), 65536 - length)
            points.append(pt(f"p{i}", address, "string", table, length=length))
        elif shape == "bit":
            address = min(base + draw(st.integers(0, 400)), 65535)
            points.append(pt(f"p{i}", address, "bool", table, bit=draw(st.integers(0, 15))))
        else:
            kind, size = draw(st.sampled_from(SIZED))
            address = min(base + draw(st.integers(0, 400)), 65536 - size)
            points.append(pt(f"p{i}", address, kind, table))
    return points


@given(points=point_lists(), max_gap=st.integers(0, 125))
def test_plan_properties(points: list[ModbusPoint], max_gap: int) -> None:
    requests = plan_reads(points, max_gap=max_gap)
    covered = [m[0] for r in requests for m in r.members]
    assert sorted(covered) == list(range(len(points)))  # every point exactly once
    previous: ReadRequest | None = None
    for r in requests:
        assert 1 <= r.count <= limit_of(r.table)
        assert r.count <= (MAX_BITS if r.bits else MAX_REGISTERS)
        assert r.start >= 0 and r.start + r.count - 1 <= 65535
        ranges = []
        for index, offset in r.members:
            p = points[index]
            assert p.table == r.table and r.start + offset == p.address
            assert offset >= 0 and offset + p.size <= r.count
            ranges.append((p.address, p.address + p.size - 1))
        ranges.sort()
        assert ranges[0][0] == r.start  # no wasted registers at the edges
        assert max(end for _, end in ranges) == r.start + r.count - 1
        reach = ranges[0][1]
        for first, last in ranges[1:]:  # no hole wider than max_gap
            assert first - reach - 1 <= max_gap
            reach = max(reach, last)
        if previous is not None and previous.table == r.table:  # greedy: could not have merged
            end = previous.start + previous.count - 1
            gap = ranges[0][0] - end - 1
            first_end = min(last for first, last in ranges if first == ranges[0][0])
            assert gap > max_gap or max(end, first_end) - previous.start + 1 > limit_of(r.table)
        previous = r


# -- minimality against a brute force, subsets, interval groups, learned limits -------------


@st.composite
def valid_layouts(draw: st.DrawFn) -> tuple[list[ModbusPoint], int, int]:
    """Points as a valid configuration has them: per table, disjoint ranges, some shared by
    several points (same range, or bits of a word). Returns (points, max_gap, limit)."""
    points: list[ModbusPoint] = []
    for table in draw(st.lists(st.sampled_from(TABLES), min_size=1, max_size=2, unique=True)):
        address = draw(st.integers(0, 30))
        for _ in range(draw(st.integers(0, 7))):
            n = len(points)
            if table in ("coil", "discrete"):
                points.append(pt(f"p{n}", address, "bool", table))
                size = 1
            else:
                kind, size = draw(st.sampled_from(SIZED))
                points.append(pt(f"p{n}", address, kind, table))
                if kind == "uint16" and draw(st.booleans()):  # a flag in the same word
                    points.append(pt(f"p{n}b", address, "bool", table, bit=draw(st.integers(0, 15))))
            address += size + draw(st.integers(0, 12))
    draw(st.randoms()).shuffle(points)
    return points, draw(st.integers(0, 10)), draw(st.integers(4, 40))


def brute_force_count(points: list[ModbusPoint], max_gap: int, limit: int) -> int:
    """The fewest requests, trying every cut of each table's ranges into consecutive runs."""
    total = 0
    for table in TABLES:
        ranges = sorted({(p.address, p.address + p.size - 1) for p in points if p.table == table})
        n = len(ranges)
        if not n:
            continue

        def ok(i: int, j: int, ranges: list[tuple[int, int]] = ranges) -> bool:  # ranges[i..j] in one read
            gaps = all(ranges[k + 1][0] - ranges[k][1] - 1 <= max_gap for k in range(i, j))
            return gaps and ranges[j][1] - ranges[i][0] + 1 <= limit

        best = [0] + [n + 1] * n  # best[j]: fewest reads for the first j ranges
        for j in range(1, n + 1):
            best[j] = min(best[i] + 1 for i in range(j) if ok(i, j - 1))
        total += best[n]
    return total


@given(layout=valid_layouts())
def test_the_plan_is_as_short_as_the_brute_force_optimum(layout: tuple[list[ModbusPoint], int, int]) -> None:
    points, max_gap, limit = layout
    requests = plan_reads(points, max_gap=max_gap, max_registers=limit, max_bits=limit)
    assert len(requests) == brute_force_count(points, max_gap, limit)
    assert sorted(i for r in requests for i, _ in r.members) == list(range(len(points)))
    assert all(r.count <= limit for r in requests)


def test_a_subset_is_planned_on_its_own() -> None:
    points = [pt("a", 0), pt("b", 1), pt("c", 50), pt("d", 51)]
    assert spans(plan_reads(points, max_gap=8, only=[0, 3])) == [("holding", 0, 1), ("holding", 51, 1)]
    assert [m for r in plan_reads(points, max_gap=8, only=[3, 2]) for m in r.members] == [(2, 0), (3, 1)]


def test_interval_groups_use_the_point_interval_or_the_default() -> None:
    points = [
        pt("a", 0), ModbusPoint(name="b", address=1, poll_interval_s=10.0),
        ModbusPoint(name="c", address=2, poll_interval_s=1.0), ModbusPoint(name="d", address=3, poll_interval_s=0.25),
    ]
    assert interval_groups(points, 1.0) == {250: (3,), 1000: (0, 2), 10000: (1,)}


def test_the_planner_caches_and_lowers_its_limit_never_below_the_largest_point() -> None:
    points = [pt("a", 0, "float64"), pt("b", 4), pt("c", 10), pt("c2", 20, "bool", "coil")]
    planner = ReadPlanner(points, max_gap=8)
    full = planner.plan(range(4))
    assert planner.plan([0, 1, 2, 3]) is full  # cached
    assert spans(full) == [("coil", 20, 1), ("holding", 0, 11)]
    assert planner.lower(False, 5) and planner.max_registers == 5
    assert spans(planner.plan(range(4))) == [("coil", 20, 1), ("holding", 0, 5), ("holding", 10, 1)]
    assert not planner.lower(False, 5)  # not lower than it is
    assert planner.lower(False, 1) and planner.max_registers == 4  # the float64 must still fit
    assert not planner.lower(False, 2)
    assert (planner.floor(False), planner.floor(True), planner.limit(True)) == (4, 1, MAX_BITS)


# -- at the protocol's limits, against a search of its own ----------------------------------------


@st.composite
def layouts_at_the_limits(draw: st.DrawFn) -> tuple[list[ModbusPoint], int, int, int]:
    """Points as a device of the field has them, at the protocol's limits: runs of hundreds of coils or
    discrete inputs spread over thousands of addresses, registers in clusters with strings up to 125
    registers, dense runs and wide holes. Returns (points, max_gap, max_registers, max_bits): the
    limits are the protocol's (125, 2000) most of the time, or lower ones a device taught."""
    points: list[ModbusPoint] = []
    max_gap = draw(st.sampled_from([0, 1, 8, 8, 30, 125]))
    for table in draw(st.lists(st.sampled_from(TABLES), min_size=1, max_size=3, unique=True)):
        address = draw(st.integers(0, 40000))
        for _ in range(draw(st.integers(1, 6))):  # clusters
            if table in ("coil", "discrete"):
                stride = draw(st.sampled_from([1, 1, 2, 3, max_gap + 1, max_gap + 2, 17]))
                for _ in range(draw(st.integers(1, 250))):
                    points.append(pt(f"p{len(points)}", address, "bool", table))
                    address += stride
            else:
                for _ in range(draw(st.integers(1, 40))):
                    n = len(points)
                    kind, size = draw(st.sampled_from([*SIZED, ("string", 0)]))
                    if kind == "string":
                        size = draw(st.sampled_from([8, 16, 60, 124, 125]))
                        points.append(pt(f"p{n}", address, "string", table, length=size))
                    else:
                        points.append(pt(f"p{n}", address, kind, table))
                        if kind == "uint16" and draw(st.booleans()):  # a flag in the same word
                            points.append(pt(f"p{n}b", address, "bool", table, bit=draw(st.integers(0, 15))))
                    address += size + draw(st.sampled_from([0, 0, 0, 1, 2, 5, 8, 9, 30, 124, 126]))
            address += draw(st.integers(0, 3000))
    draw(st.randoms()).shuffle(points)
    registers = draw(st.sampled_from([MAX_REGISTERS, MAX_REGISTERS, MAX_REGISTERS, 64, 13]))
    bits = draw(st.sampled_from([MAX_BITS, MAX_BITS, MAX_BITS, 999, 16]))
    registers = max(registers, max((p.size for p in points if p.table in ("holding", "input")), default=1))
    return points, max_gap, registers, bits


def fewest_reads_by_search(points: list[ModbusPoint], max_gap: int, max_registers: int, max_bits: int) -> int:
    """The fewest reads, found on the table's address map rather than on the planner's terms: a shortest
    path whose states are "the first address not read yet" and whose steps are every read [x, e] that is
    allowed (at most the limit, no point cut in two, no hole between two used addresses wider than
    max_gap), trying every end address e, not only the ends of points."""
    total = 0
    for table in TABLES:
        ranges = {(p.address, p.address + p.size - 1) for p in points if p.table == table}
        if not ranges:
            continue
        limit = max_bits if table in ("coil", "discrete") else max_registers
        base = min(first for first, _ in ranges)
        top = max(last for _, last in ranges) - base + 1
        end_of = [-1] * top  # for a used address (offset from base): the last address of its point
        for first, last in ranges:
            for a in range(first - base, last - base + 1):
                end_of[a] = last - base
        next_start = [-1] * (top + 1)  # the first point start at or after an address
        starts = {first - base for first, _ in ranges}
        for a in range(top - 1, -1, -1):
            next_start[a] = a if a in starts else next_start[a + 1]
        best = {0: 0}
        for x in sorted(starts):  # increasing: every step goes forward
            if x not in best:
                continue
            hole, reach = 0, x - 1  # reach: the last used address read so far
            for e in range(x, min(x + limit, top)):
                if end_of[e] >= 0:
                    if hole > max_gap:
                        break  # a hole too wide between two used addresses
                    hole, reach = 0, max(reach, end_of[e])
                else:
                    hole += 1
                if reach > e:
                    continue  # a point would be cut in two at e
                nxt = next_start[e + 1]
                best[nxt] = min(best.get(nxt, len(ranges) + 1), best[x] + 1)
                if nxt == -1:
                    break
        total += best[-1]
    return total


@settings(max_examples=40, deadline=None)
@given(layout=layouts_at_the_limits())
def test_at_the_protocol_limits_the_plan_is_valid_and_as_short_as_a_search_finds(
        layout: tuple[list[ModbusPoint], int, int, int]) -> None:
    points, max_gap, max_registers, max_bits = layout
    requests = plan_reads(points, max_gap=max_gap, max_registers=max_registers, max_bits=max_bits)
    assert sorted(i for r in requests for i, _ in r.members) == list(range(len(points)))  # each point once
    spans: dict[str, list[tuple[int, int]]] = {}
    for r in requests:  # checked on the address map, not on the planner's terms
        assert 1 <= r.count <= (max_bits if r.bits else max_registers)
        used: set[int] = set()
        for index, offset in r.members:
            p = points[index]
            assert p.table == r.table and r.start + offset == p.address and offset + p.size <= r.count
            used.update(range(p.address, p.address + p.size))
        inside = [a in used for a in range(r.start, r.start + r.count)]
        assert inside[0] and inside[-1]  # nothing read beyond the first and last point
        holes = "".join("x" if u else "." for u in inside).split("x")
        assert max(map(len, holes)) <= max_gap
        spans.setdefault(r.table, []).append((r.start, r.start + r.count - 1))
    for table_spans in spans.values():  # no two reads of a table overlap
        table_spans.sort()
        assert all(a[1] < b[0] for a, b in itertools.pairwise(table_spans))
    assert len(requests) == fewest_reads_by_search(points, max_gap, max_registers, max_bits)
