"""The receiver acknowledges a batch to the broker only once it is committed, and a committed batch
survives a power cut of the cloud's host.

A Box here is a scripted mTLS MQTT client with a provisioned Box identity, publishing the batches
a Box makes (`proto.wire`), QoS 1: the promise under test is the cloud's, between the broker and the
store (the Box's side is proven in test_crash_proofs.py).
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud.errors import StoreError
from cloud.platform import Cloud
from cloud.store import Incoming, Store
from proto import topics
from proto.topics import Up
from tests.support.cloudkit import make_cloud
from tests.support.lazyfs import LazyFS
from tests.support.receiverkit import acks_of_batches, batch, scripted_box
from tests.support.wait import wait_for


class FailingStore:
    """The cloud's real store, except that storing fails (as a full disk would) the first `failures`
    times it is handed a batch of one Box (the whole group then, as a disk error fails a
    transaction). A stand-in for a failing disk: the test says so."""

    def __init__(self, store: Store, box_id: str, failures: int, error: Exception | None = None) -> None:
        self._store, self._box_id, self.failures = store, box_id, failures
        self.error = error or StoreError("database or disk is full (injected by the test)")
        self.calls: list[int] = []  # seq of every batch of that Box handed to the store

    def store_batches(self, items: list[Incoming]) -> list[Any]:
        mine = [it.batch.seq for it in items if it.box_id == self._box_id]
        self.calls += mine
        if mine and self.failures > 0:
            self.failures -= 1
            raise self.error
        return self._store.store_batches(items)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_a_batch_the_store_cannot_take_is_not_acknowledged_and_is_stored_when_sent_again(
        cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    box_id, c = scripted_box(cloud, tmp_path, "ACK-1")
    assert cloud.receiver is not None
    failing = FailingStore(cloud.store, box_id, failures=2)
    monkeypatch.setattr(cloud.receiver.batches, "store", failing)
    errors = cloud.receiver.counters.store_errors
    caplog.set_level(logging.ERROR, "boxcloud.receiver")
    try:
        c.client.publish(topics.up(box_id, Up.DATA), batch(1), 1).wait_for_publish(5)
        wait_for(lambda: cloud.store.batch_keys(box_id), 30, "the refused batch stored when sent again")
        for seq in (2, 3):
            c.client.publish(topics.up(box_id, Up.DATA), batch(seq), 1).wait_for_publish(5)
        wait_for(lambda: len(cloud.store.batch_keys(box_id)) == 3, 30, "every batch stored")
    finally:
        c.close()
    # batch 1 was refused twice, each time not acknowledged, and sent again by the broker
    assert failing.calls[:3] == [1, 1, 1], failing.calls
    assert cloud.receiver.counters.store_errors - errors == 2
    assert any("not acknowledged, the broker will send it again" in r.getMessage() for r in caplog.records)
    assert [v for _, _, v, _ in cloud.store.samples(box_id, "m.energy")] == [1, 2, 3]  # each once


def test_a_batch_whose_handling_failed_unforeseen_is_not_acknowledged_and_is_stored_when_sent_again(
        cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug, not the store (an exception no one foresaw): the receiver must not let the broker forget
    the batch either (issue 20: it used to reject and acknowledge it)."""
    box_id, c = scripted_box(cloud, tmp_path, "ACK-3")
    assert cloud.receiver is not None
    failing = FailingStore(cloud.store, box_id, failures=1, error=RuntimeError("a bug (injected by the test)"))
    monkeypatch.setattr(cloud.receiver.batches, "store", failing)
    try:
        c.client.publish(topics.up(box_id, Up.DATA), batch(1), 1).wait_for_publish(5)
        wait_for(lambda: cloud.store.batch_keys(box_id), 30, "the failed batch stored when sent again")
        c.client.publish(topics.up(box_id, Up.DATA), batch(2), 1).wait_for_publish(5)
        wait_for(lambda: len(cloud.store.batch_keys(box_id)) == 2, 30, "both batches stored")
    finally:
        c.close()
    assert failing.calls[:2] == [1, 1], failing.calls
    assert [v for _, _, v, _ in cloud.store.samples(box_id, "m.energy")] == [1, 2]


def test_a_malformed_batch_is_acknowledged_once_and_not_sent_again(cloud: Cloud, tmp_path: Path) -> None:
    box_id, c = scripted_box(cloud, tmp_path, "ACK-2")
    assert cloud.receiver is not None
    rejected = cloud.receiver.counters.rejected
    try:
        c.client.publish(topics.up(box_id, Up.DATA), b"\x01\xff", 1).wait_for_publish(5)
        c.client.publish(topics.up(box_id, Up.DATA), batch(1), 1).wait_for_publish(5)
        wait_for(lambda: cloud.store.batch_keys(box_id), 15, "the good batch")
    finally:
        c.close()
    assert cloud.receiver.counters.rejected - rejected == 1  # refused once: no redelivery loop


@pytest.fixture
def cloud_on_lazyfs(tmp_path: Path, mosquitto_available: None) -> Iterator[tuple[Cloud, LazyFS, Path]]:
    """A cloud whose database is on a LazyFS mount (with its WAL beside it): a host that can lose power.
    Mosquitto, which drops root, keeps its files on the ordinary disk."""
    if not Path("/dev/fuse").exists():
        pytest.skip("no /dev/fuse for the power-loss file system")
    disk = tmp_path / "disk"
    disk.mkdir()
    fs = LazyFS(disk)
    c = make_cloud(tmp_path / "home", database=fs.mount() / "cloud.db")
    c.start()
    try:
        yield c, fs, disk
    finally:
        c.stop()
        if fs.mounted:
            fs.crash()


def test_every_batch_the_receiver_acknowledged_survives_a_power_cut_of_the_cloud_host(
        cloud_on_lazyfs: tuple[Cloud, LazyFS, Path], tmp_path: Path) -> None:
    cloud, fs, backing = cloud_on_lazyfs
    assert cloud.receiver is not None
    box_id, c = scripted_box(cloud, tmp_path / "box", "HOST-1")
    # observe what the receiver acknowledges (its paho client's ack, wrapped: nothing else changes)
    rx = cloud.receiver._client
    assert rx is not None
    acked = acks_of_batches(rx)
    try:
        for seq in range(1, 401):
            c.client.publish(topics.up(box_id, Up.DATA), batch(seq), 1)
        wait_for(lambda: len(acked) >= 60, 60, "batches stored and acknowledged")
        fs.crash()  # the power goes: the disk keeps what was synced ...
        pid = cloud.broker.running_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)  # ... and the broker dies with the host
        cut = len(acked)
    finally:
        c.close()
    cloud.stop()  # what still runs of the cloud fails on its dead disk: nothing more is acknowledged
    after = LazyFS(backing)
    mnt = after.mount()
    try:
        store = Store(mnt / "cloud.db")
        with store.engine.connect() as db:
            assert db.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        kept = {seq for _, seq in store.batch_keys(box_id)}
    finally:
        after.unmount()
    missing = sorted(set(acked) - kept)
    assert not missing, f"{len(missing)} acknowledged batches lost at the power cut: {missing[:10]}"
    print(f"\ncloud host power cut: {cut} batches acknowledged to the broker before the cut, "
          f"{len(acked)} in all, {len(kept)} on the disk after it, 0 lost")
