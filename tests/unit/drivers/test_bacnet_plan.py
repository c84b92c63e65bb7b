"""Batching property reads into ReadPropertyMultiple requests by max-APDU (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from drivers.bacnet import PropertyRead, plan_batches, response_budget
from drivers.bacnet._plan import COMPLEX_ACK_HEADER, request_size, response_size, shrink

PV = 85  # present-value


def analog(n: int, prop: int = PV) -> list[PropertyRead]:
    return [PropertyRead(0, i, prop, "float32") for i in range(n)]


def test_sizes_follow_the_encoding() -> None:
    one = analog(1)
    # header 4 + object id 5 + tags 2 + property id 2
    assert request_size(one) == 13
    # object id 5 + tags 2 + (property id 2 + tags 2 + REAL 5) per property, but at least an error's 6
    assert response_size(one) == 16
    two_props = [PropertyRead(0, 1, PV, "float32"), PropertyRead(0, 1, 117, "uint32")]  # same object: one spec
    assert request_size(two_props) == 4 + 7 + 2 + 2
    assert response_size(two_props) == 7 + 9 + 9
    assert request_size([PropertyRead(0, 1, 512, "float32")]) == 4 + 7 + 3


def test_budget_without_and_with_segmentation() -> None:
    assert response_budget(480, "no-segmentation", 1476, 16) == 480 - COMPLEX_ACK_HEADER
    assert response_budget(480, "segmented-receive", 1476, 16) == 477  # it cannot send segments
    assert response_budget(480, "segmented-both", 1476, 16) == (480 - 5) * 16
    assert response_budget(1476, "segmented-transmit", 480, 4) == (480 - 5) * 4
    assert shrink(477) == 238 and shrink(60) == 50


def test_small_device_gets_several_requests_big_one_gets_one() -> None:
    reads = analog(40)
    small = plan_batches(reads, max_request=206, max_response=response_budget(206, "no-segmentation", 1476, 16))
    assert [len(b) for b in small] == [12, 12, 12, 4]  # 12 x 16 + 3 = 195 <= 206
    assert plan_batches(reads, max_request=480, max_response=response_budget(480, "segmented-both", 1476, 16)) == [
        list(range(40))]
    medium = plan_batches(reads, max_request=480, max_response=477)
    assert [len(b) for b in medium] == [29, 11]


def test_properties_of_one_object_stay_together_and_order_is_by_first_read() -> None:
    reads = [PropertyRead(0, 1, PV, "float32"), PropertyRead(3, 7, PV, "bool"), PropertyRead(0, 1, 117, "uint32")]
    assert plan_batches(reads, max_request=1476, max_response=1473) == [[0, 2, 1]]


def test_a_read_too_big_alone_still_gets_its_own_request() -> None:
    reads = [PropertyRead(8, 1, 77, "string"), PropertyRead(0, 1, PV, "float32")]  # string estimated 64
    assert plan_batches(reads, max_request=50, max_response=47) == [[0], [1]]


def test_request_limit_counts_too() -> None:
    reads = [PropertyRead(0, i, PV, "bool") for i in range(10)]  # 9 bytes each in the request
    batches = plan_batches(reads, max_request=4 + 9 * 3, max_response=10_000)
    assert [len(b) for b in batches] == [3, 3, 3, 1]


@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 20), st.sampled_from([85, 77, 117, 28]),
                       st.sampled_from(["float32", "bool", "uint32", "string", "float64"])),
             max_size=60),
    st.sampled_from([50, 128, 206, 480, 1024, 1476]),
)
def test_every_read_once_and_each_batch_fits(raw: list[tuple[int, int, int, str]], apdu: int) -> None:
    reads = [PropertyRead(*r) for r in raw]
    budget = apdu - COMPLEX_ACK_HEADER
    batches = plan_batches(reads, max_request=apdu, max_response=budget)
    assert sorted(i for b in batches for i in b) == list(range(len(reads)))
    for b in batches:
        chosen = [reads[i] for i in b]
        assert len(b) == 1 or (request_size(chosen) <= apdu and response_size(chosen) <= budget)
