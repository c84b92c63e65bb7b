"""The receiver's groups through the real broker (issue 20's group commit): the batches that wait while
a group commits are stored together, each once; a batch the database refuses costs only itself;
nothing is acknowledged to the broker, nor said stored to the Box, before its group's commit.

To make the groups the test wants, the receiver's store is wrapped so that a group can be held at a
gate (the real store stores it once the gate opens: a stand-in for a slow commit, the test says so);
the refusal is the database's own (a trigger on `batches`, tests/support/poison.py). On PostgreSQL,
with a refusal at COMMIT: tests/unit/cloud/test_store_groups.py.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from cloud.platform import Cloud
from cloud.store import Incoming, Store
from proto import topics
from proto.downlink import decode_stored
from proto.topics import Down, Up
from proto.uplink import Health, Status
from tests.support import poison
from tests.support.receiverkit import EPOCH, acks_of_batches, batch, scripted_box
from tests.support.wait import wait_for


class GatedStore:
    """The cloud's real store, whose groups wait at a gate while it is closed (a slow commit)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.gate = threading.Event()
        self.gate.set()
        self.groups: list[list[int]] = []  # the seqs of each group handed to the store
        self.waiting = 0  # groups at the closed gate

    def store_batches(self, items: list[Incoming]) -> list[Any]:
        self.groups.append([it.batch.seq for it in items])
        self.waiting += 1
        self.gate.wait(30)
        self.waiting -= 1
        return self._store.store_batches(items)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.fixture
def gated(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> GatedStore:
    assert cloud.receiver is not None
    g = GatedStore(cloud.store)
    monkeypatch.setattr(cloud.receiver.batches, "store", g)
    return g


def values(cloud: Cloud, box_id: str) -> list[object]:
    return [v for _, _, v, _ in cloud.store.samples(box_id, "m.energy")]


def test_what_waits_while_a_group_commits_is_stored_together_each_batch_once(cloud: Cloud, tmp_path: Path,
                                                                               gated: GatedStore) -> None:
    assert cloud.receiver is not None and cloud.receiver._client is not None
    box_id, c = scripted_box(cloud, tmp_path, "GROUP-1")
    acked = acks_of_batches(cloud.receiver._client)
    try:
        c.client.publish(topics.up(box_id, Up.DATA), batch(1), 1).wait_for_publish(5)
        wait_for(lambda: acked == [1], 30, "batch 1 stored and acknowledged")
        gated.gate.clear()
        c.client.publish(topics.up(box_id, Up.DATA), batch(2), 1).wait_for_publish(5)
        wait_for(lambda: gated.waiting == 1, 30, "batch 2's group at the gate")
        for seq in (1, 3, 3, 4):  # 1 stored before, 3 twice
            c.client.publish(topics.up(box_id, Up.DATA), batch(seq), 1).wait_for_publish(5)
        wait_for(lambda: cloud.receiver is not None and cloud.receiver.intake.waiting() == 4, 30,
                 "the four batches waiting behind the group")
        assert acked == [1]  # batch 2 is not committed: not acknowledged
        gated.gate.set()
        wait_for(lambda: len(acked) == 6, 30, "every batch acknowledged")
    finally:
        gated.gate.set()
        c.close()
    assert gated.groups[-1] == [1, 3, 3, 4]  # one group, one transaction
    assert acked == [1, 2, 1, 3, 3, 4]  # in the order they came, each after its commit
    assert values(cloud, box_id) == [1, 2, 3, 4]  # each sample once


def test_a_batch_the_database_refuses_costs_only_itself_and_is_never_acknowledged_or_said_stored(
        cloud: Cloud, tmp_path: Path, gated: GatedStore) -> None:
    assert cloud.receiver is not None and cloud.receiver._client is not None
    box_id, c = scripted_box(cloud, tmp_path, "GROUP-2")
    acked = acks_of_batches(cloud.receiver._client)
    said: list[tuple[set[int], set[int]]] = []  # (seqs a stored notice named, seqs stored when it came)
    # (a notice claimed while the receiver's connection is down, as it is again and again while 6 is
    # refused, is lost: the Box would send its batches again in three intervals; this one does not)

    def on_message(_c: object, _u: object, m: Any) -> None:
        n = decode_stored(bytes(m.payload))
        stored = {s for e, s in cloud.store.batch_keys(box_id) if e == EPOCH}
        said.append((set(range(5, n.seq + 1)) | set(n.ahead), stored))

    c.client.on_message = on_message
    c.client.subscribe(topics.down(box_id, Down.STORED), 1)
    c.client.publish(topics.up(box_id, Up.STATUS), Status(True, 1_700_000_000_000, "1.0", acks_s=1).encode(), 1)
    c.client.publish(topics.up(box_id, Up.HEALTH), Health(1_700_000_000_000, EPOCH, 7, oldest_seq=5).encode(), 1)
    db = cloud.store.path
    assert db is not None  # SQLite: the trigger is made in its file
    poison.add(db, 6)
    try:
        gated.gate.clear()
        c.client.publish(topics.up(box_id, Up.DATA), batch(5), 1).wait_for_publish(5)
        wait_for(lambda: gated.waiting == 1, 30, "batch 5's group at the gate")
        for seq in (6, 7):
            c.client.publish(topics.up(box_id, Up.DATA), batch(seq), 1).wait_for_publish(5)
        wait_for(lambda: cloud.receiver is not None and cloud.receiver.intake.waiting() == 2, 30,
                 "6 and 7 waiting behind the group")
        gated.gate.set()
        wait_for(lambda: {s for _, s in cloud.store.batch_keys(box_id)} == {5, 7}, 30, "6's neighbours stored")
        assert 6 not in acked and cloud.receiver.counters.group_failures >= 1
    finally:
        gated.gate.set()
        poison.remove(db)
    try:
        wait_for(lambda: 6 in acked and len(values(cloud, box_id)) == 3, 30, "6 stored and acknowledged, sent again")
        wait_for(lambda: any({6, 7} <= named for named, _ in said), 30, "a stored notice naming 6 and 7")
    finally:
        c.close()
    assert values(cloud, box_id) == [5, 6, 7]  # each sample once
    assert acked.index(5) < acked.index(6) and 7 not in acked[:acked.index(6)]  # in order: never 7 before 6
    for named, stored in said:
        assert named <= stored, f"a stored notice named {sorted(named - stored)} before their commit"
