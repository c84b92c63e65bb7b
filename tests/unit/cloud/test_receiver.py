"""The receiver's handling of batches, without a broker: storing, counting, and what the monitor is told."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud.monitor import COMM_FAULTS
from cloud.pki import Pki
from cloud.receiver import Receiver, device_counts
from cloud.store import PointTable, Store
from drivers import PointInfo, Quality
from proto import wire
from proto.errors import WireError
from tests.support.storedb import both_engines

TABLE = [PointInfo("a.x", "", "float32"), PointInfo("a.y", "", "float32"), PointInfo("b.x", "", "bool"),
         PointInfo("a.z", "", "uint16")]


def _per_sample(batch: wire.Batch) -> dict[str, tuple[int, int]]:
    """What `device_counts` must equal: counted one sample at a time."""
    out: dict[str, tuple[int, int]] = {}
    for point, _, _, q in batch.samples(TABLE):
        bad, n = out.get(point.split(".")[0], (0, 0))
        out[point.split(".")[0]] = (bad + (q in COMM_FAULTS), n + 1)
    return out


@pytest.mark.parametrize("groups", [
    [wire.encode_group(0, 0, [1.0, 2.0, True, 3], {})],
    [wire.encode_group(0, 0, [None, None, None, None], {0: 1, 1: 2, 2: 5, 3: 3})],
    [wire.encode_group(0, 1, [None, False], {0: 1}), wire.encode_group(5, 3, [None], {0: 4}),
     wire.encode_group(9, 0, [], {})],
])
def test_device_counts_are_those_of_the_samples(groups: list[list[object]]) -> None:
    batch = wire.decode_batch(wire.encode_batch(1, 1, wire.table_id(TABLE), 1000, groups))
    assert device_counts(batch, PointTable(TABLE)) == _per_sample(batch)


@both_engines
def test_a_stored_batch_is_counted_once_and_its_devices_reach_the_monitor(tmp_path: Path, store: Store) -> None:
    store.enroll_box("B1", "B1", 1, 2e9)
    r = Receiver(Pki(tmp_path / "pki"), store, "localhost", 1)
    payload = wire.encode_batch(1, 1, wire.table_id(TABLE), 1000,
                                [wire.encode_group(0, 0, [1.0, 2.0, None, 3], {2: int(Quality.NO_ANSWER)})])
    r.handle("B1", "data", payload)  # parked: the table has not come yet
    assert r.counters.parked == 1 and store.samples("B1") == []
    r.handle("B1", "meta", wire.encode_table(TABLE))
    r.handle("B1", "data", payload)
    assert (r.counters.batches, r.counters.samples, r.counters.duplicates) == (1, 4, 1)
    assert [d for d, _, _ in store.bad_devices("B1")] == ["b"]


@both_engines
def test_a_batch_past_its_table_is_rejected(tmp_path: Path, store: Store) -> None:
    r = Receiver(Pki(tmp_path / "pki"), store, "localhost", 1)
    r.handle("B1", "meta", wire.encode_table(TABLE))
    with pytest.raises(WireError, match="runs past"):
        r.handle("B1", "data", wire.encode_batch(1, 1, wire.table_id(TABLE), 1000,
                                                 [wire.encode_group(0, 3, [1, 2], {})]))
    assert store.batch_keys("B1") == []
