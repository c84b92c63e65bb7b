"""Wire format 2's poll series: every poll of every point comes back as a value or as unchanged."""

from __future__ import annotations

import random

import cbor2
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from proto import wire
from proto.errors import WireError
from proto.points import Quality, Value

BASE = 1_700_000_000_000
values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.integers(0, 300),
    st.floats(), st.floats(-1000, 1000).map(lambda x: round(x, 2)), st.text(max_size=8),
)
Reading = tuple[Value, int] | None  # (value, quality), or None: polled and unchanged
Raw = tuple[int, int, list[Value] | int, dict[int, int]]


@st.composite
def polls(draw: st.DrawFn) -> list[tuple[int, int, list[Reading]]]:
    """Devices (runs of points) polled in turn: (dt_ms, first, each point's reading or None)."""
    sizes = draw(st.lists(st.integers(1, 6), min_size=1, max_size=3))
    gap = draw(st.sampled_from([0, 2]))  # devices next to each other in the table, or a hole between them
    firsts = [sum(sizes[:k]) + gap * k for k in range(len(sizes))]
    out = []
    t = draw(st.integers(0, 5000))
    for _ in range(draw(st.integers(1, 12))):
        t += draw(st.sampled_from([0, 0, 1, 999, 1000, 1003, 2000]))  # devices polled at the same instant too
        dev = draw(st.integers(0, len(sizes) - 1))
        reading = st.one_of(st.none(), st.tuples(values, st.sampled_from([0, 0, 0, int(Quality.NO_ANSWER)])))
        out.append((t, firsts[dev], draw(st.lists(reading, min_size=sizes[dev], max_size=sizes[dev]))))
    return out


def _groups(polled: list[tuple[int, int, list[Reading]]]) -> list[tuple[int, int, list[Value] | int, dict[int, int]]]:
    """What `boxd.onchange` would queue: runs of values (faults by position) and spans."""
    out: list[tuple[int, int, list[Value] | int, dict[int, int]]] = []
    for dt, first, readings in polled:
        k = 0
        while k < len(readings):
            end = k + 1
            while end < len(readings) and (readings[end] is None) == (readings[k] is None):
                end += 1
            if readings[k] is None:
                out.append((dt, first + k, end - k, {}))
            else:
                run = [r for r in readings[k:end] if r is not None]
                out.append((dt, first + k, [v for v, _ in run], {j: q for j, (_, q) in enumerate(run) if q}))
            k = end
    return out


def _flat(groups: list[tuple[int, int, list[Value] | int, dict[int, int]]]) -> list[tuple[int, int, str]]:
    """Each poll of each point: (time, index, "unchanged" or the value's repr with its quality)."""
    out = []
    for dt, first, vals, faults in groups:
        if isinstance(vals, int):
            out += [(dt, first + k, "unchanged") for k in range(vals)]
        else:
            out += [(dt, first + k, f"{v!r}/{faults.get(k, 0)}") for k, v in enumerate(vals)]
    return sorted(out)


def _decoded(payload: bytes) -> list[tuple[int, int, str]]:
    b = wire.decode_batch(payload)
    return _flat([(b.base_ts_ms - BASE + g.dt_ms, g.first, g.unchanged or g.values, g.faults) for g in b.groups])


@settings(max_examples=200, deadline=None)  # no timing in tests (a loaded machine)
@given(polls())
def test_every_poll_of_every_point_comes_back_as_its_value_or_unchanged(
        polled: list[tuple[int, int, list[Reading]]]) -> None:
    groups = _groups(polled)
    payload = wire.encode_batch_v2(7, 9, 11, BASE, groups)
    assert payload[0] & 0x7F == wire.BATCH_VERSION
    assert _decoded(payload) == _flat(groups)


@settings(deadline=None)
@given(polls())
def test_a_batch_of_format_1_says_the_same_as_format_2(polled: list[tuple[int, int, list[Reading]]]) -> None:
    # Boxes in the field send format 1: the platform decodes both to the same readings
    groups = _groups(polled)
    old = wire.encode_batch(7, 9, 11, BASE, [wire.encode_group(dt, f, v, q) for dt, f, v, q in groups])
    assert old[0] & 0x7F == 1
    assert _decoded(old) == _decoded(wire.encode_batch_v2(7, 9, 11, BASE, groups)) == _flat(groups)


def test_a_device_polled_a_minute_unchanged_but_a_counter_costs_a_few_bytes_not_a_span_a_poll() -> None:
    polled: list[tuple[int, int, list[Reading]]] = [
        (1000 * k + (k * 7) % 5, 0, [(k, 0), *[None] * 99]) for k in range(60)]  # 60 polls, jitter 0-4 ms
    groups = _groups(polled)
    v1 = wire.encode_batch(1, 1, 1, BASE, [wire.encode_group(dt, f, v, q) for dt, f, v, q in groups])
    v2 = wire.encode_batch_v2(1, 1, 1, BASE, groups)
    assert _decoded(v2) == _flat(groups)
    assert len(v2) < 80 < 5 * 80 < len(v1)  # format 1: a value group and a span a poll


def test_poll_mode_keeps_format_1_plain_groups() -> None:
    groups: list[Raw] = [(k * 1000, 0, [float(k + i) / 8 for i in range(100)], {}) for k in range(5)]
    v1 = wire.encode_batch(1, 1, 1, BASE, [wire.encode_group(dt, f, v, q) for dt, f, v, q in groups])
    assert len(wire.encode_batch_v2(1, 1, 1, BASE, groups)) == len(v1)


def _v2(*groups: object) -> bytes:
    return bytes([wire.BATCH_VERSION]) + cbor2.dumps([1, 2, 3, 4, list(groups)])


@pytest.mark.parametrize(("payload", "why"), [
    (_v2([0, 0, 10, 1000, [0, 0], [0, 10, 5]]), "outside the series"),
    (_v2([0, 0, 10, 1000, [0], [2, 0, 5]]), "outside the series"),
    (_v2([0, 0, 10, 1000, [], [0, 3, 5, 0, 0, 6]]), "repeats"),
    (_v2([0, 0, 10, 1000, [], [0, 3, 5, 0]]), "triples"),
    (_v2([0, 0, 10, 1000, [], [0, -1, 5]]), ">= 0"),
    (_v2([0, 0, 10, 1000, [], [0, 1, [5]]]), "bad decimal"),
    (_v2([0, 0, 10, 1000, [], [0, 1, [5, 9999]]]), "bad decimal"),
    (_v2([0, 0, 10, 1000, [], [0, 1, [[1]]]]), "nested|bad decimal"),
    (_v2([0, 0, 10, 1000, [], [0, 1, 5], {1: 1}]), "names no change"),
    (_v2([0, 0, 10, 1000, [], [0, 1, 5], {0: 99}]), "unknown"),
    (_v2([0, 0, 0, 1000, [], []]), "outside 1.."),
    (_v2([0, 99_999, 2, 1000, [], []]), "outside 1.."),
    (_v2([0, 0, 10, -1, [], []]), "period"),
    (_v2([0, 0, 10, 2**39, [2**39] * 3, []]), "out of range"),
    (_v2([0, 0, 10, 1000, [True], []]), "jitter"),
    (_v2([0, 0, 1, 1, [0] * 100_001, []]), "more than 100000 samples"),  # refused before it is expanded
    (_v2([0, 0, 10, 1, [0] * 49_999, [0, 5, 1, *[1, 5, 0] * 49_999]]), "more than 100000 samples"),  # 3 a poll
    (bytes([1]) + cbor2.dumps([1, 2, 3, 4, [[0, 0, 10, 1000, [], []]]]), "must be"),  # format 1 has no series
])
def test_malformed_series_are_refused_with_a_reason(payload: bytes, why: str) -> None:
    with pytest.raises(WireError, match=why):
        wire.decode_batch(payload)


def test_integer_differences_too_large_for_cbor_start_a_new_series() -> None:
    groups: list[Raw] = [(0, 0, [-(2**63), 1], {}), (1000, 0, 1, {}), (1000, 1, [2], {}),
                         (2000, 0, [2**64 - 1, 3], {})]
    payload = wire.encode_batch_v2(1, 1, 1, BASE, groups)
    assert _decoded(payload) == _flat(groups)


@settings(max_examples=200, deadline=None)
@given(polls(), st.sampled_from([1, 250, 1000]))
@example([(1003, 0, [None]), (2003, 0, [(1, 0)]), (2004, 0, [None]), (3007, 0, [(2, 0)]), (3008, 0, [None])], 250)
# ^ an unchanged poll's on-schedule time (3006) would come before the plain group it follows (3007)
def test_with_a_time_slack_every_poll_comes_back_at_most_that_much_earlier_and_in_order(
        polled: list[tuple[int, int, list[Reading]]], slack: int) -> None:
    # a device is never polled twice in one ms: a point's polls have an order
    groups = _groups(list({(p[0], p[1]): p for p in reversed(polled)}.values())[::-1])
    exact, sent = _flat(groups), _decoded(wire.encode_batch_v2(7, 9, 11, BASE, groups, slack_ms=slack))
    by_point: dict[int, list[tuple[int, str]]] = {}
    for ts, index, what in sent:
        by_point.setdefault(index, []).append((ts, what))
    for index, want in _by_point(exact).items():
        got = by_point.pop(index)
        assert [w for _, w in got] == [w for _, w in want]  # each poll's value or "unchanged", in order
        assert all(0 <= w[0] - g[0] <= slack for g, w in zip(got, want, strict=True))
    assert not by_point


def _by_point(flat: list[tuple[int, int, str]]) -> dict[int, list[tuple[int, str]]]:
    out: dict[int, list[tuple[int, str]]] = {}
    for ts, index, what in flat:
        out.setdefault(index, []).append((ts, what))
    return out


def test_polls_late_by_less_than_the_slack_cost_what_polls_on_time_cost() -> None:
    # a busy Box's polls run late by tens to hundreds of ms: with the slack, those times are free
    def device(late_ms: int) -> list[tuple[int, int, list[Reading]]]:
        late = random.Random(1)
        return [(1000 * k + late.randrange(late_ms), 0, [(k // 10, 0), *[None] * 99]) for k in range(300)]

    on_time = wire.encode_batch_v2(1, 1, 1, BASE, _groups(device(1)))
    late = _groups(device(200))
    exact, slack = wire.encode_batch_v2(1, 1, 1, BASE, late), wire.encode_batch_v2(1, 1, 1, BASE, late, slack_ms=250)
    # the schedule settles on the earliest polls within a few polls; then a late poll costs nothing
    assert len(slack) <= len(on_time) + 16
    assert len(exact) > len(on_time) + 300  # exact times: a byte or two a poll


def test_devices_polled_in_the_same_millisecond_as_their_neighbours_still_make_a_series_each() -> None:
    # three 100-point devices polled every second; on a busy Box their polls often share a millisecond
    # stamp (then their groups are one run of points): each device is still one series, its polls
    # regular, so the shared instants cost nothing
    together = random.Random(2)
    polled: list[tuple[int, int, list[Reading]]] = []
    for k in range(120):
        at = [1000 * k + 3 * d for d in range(3)]
        if together.random() < 0.4:
            at = [at[0]] * 3
        polled += [(at[d], 100 * d, [(k // 30, 0), *[None] * 99]) for d in range(3)]
    groups = _groups(sorted(polled, key=lambda p: p[0]))
    payload = wire.encode_batch_v2(1, 1, 1, BASE, groups)
    assert _decoded(payload) == _flat(groups)
    body = wire.unframe_untrusted(payload, max_depth=5, max_items=10**6, text_keys=False, versions=wire.BATCH_VERSIONS)
    assert isinstance(body, list)
    series = [g for g in body[4] if len(g) >= 6]
    assert [(g[1], g[2]) for g in series] == [(0, 100), (100, 100), (200, 100)]
    assert all(len(g[4]) == 119 for g in series)  # every poll of each device in its one series
