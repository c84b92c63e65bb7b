"""Issue 12, finding 2: one Box cannot exhaust the cloud's memory or stall the receiver for the others.

On real parts: the cloud's Mosquitto (mTLS, boxguard, dynsec) and its receiver, two enrolled
Boxes publishing real wire payloads with their own certificates. The victim sends a batch and a
heartbeat (every 1 s heartbeats, as `hb_s` says) four times a second while the attacker sends what
the issue found: payloads of a few KB that inflate to four million empty maps, and a flood of
100,000-point tables. The monitor's own rule (3 missed heartbeats: offline) is the judge of
"stalled": the victim must raise no alert of any kind, and every batch it sent must be stored.
How long the victim's messages waited is measured by `python -m bench.attacks`, not asserted here.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cloud.platform import Cloud
from cloud.store import MAX_TABLES_PER_BOX
from drivers import PointInfo
from proto import topics, wire
from proto.topics import Up
from tests.support.cloudkit import Client, make_cloud, mqtt_client, provision
from tests.support.wait import wait_for

VICTIM, ATTACKER = "CALM-1", "FLOOD-1"
TABLE = [PointInfo("meter.p", "kW", "float32"), PointInfo("meter.q", "kvar", "float32")]


@pytest.fixture
def arena(tmp_path: Path, mosquitto_available: None) -> Iterator[tuple[Cloud, Client, Client]]:
    cloud = make_cloud(tmp_path / "cloud")
    cloud.start()
    clients = []
    try:
        for box in (VICTIM, ATTACKER):
            ident = provision(cloud, tmp_path / box, box).directory
            c = mqtt_client(cloud, box, ident / "box.crt", ident / "box.key")
            wait_for(c.connected.is_set, 10, f"{box} to connect")
            clients.append(c)
        yield cloud, clients[0], clients[1]
    finally:
        for c in clients:
            c.close()
        cloud.stop()


class Victim:
    """A well-behaved Box: point table, then a batch and a heartbeat every 0.25 s, in a thread."""

    def __init__(self, cloud: Cloud, client: Client) -> None:
        self.cloud, self.client, self.seq = cloud, client, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        c = client.client
        c.publish(topics.up(VICTIM, Up.STATUS), b'{"v":1,"online":true}', 1, retain=True).wait_for_publish(5)
        c.publish(topics.up(VICTIM, Up.META), wire.encode_table(TABLE), 1, retain=True).wait_for_publish(5)

    def _run(self) -> None:
        tid = wire.table_id(TABLE)
        while not self._stop.wait(0.25):
            self.seq += 1
            now = int(time.time() * 1000)
            batch = wire.encode_batch(42, self.seq, tid, now, [wire.encode_group(0, 0, [1.5, float(self.seq)], {})])
            self.client.client.publish(topics.up(VICTIM, Up.DATA), batch, 1)
            health = wire.encode_doc({"v": 1, "ts": now, "epoch": 42, "last_seq": self.seq,
                                      "oldest_seq": self.seq, "hb_s": 1, "clock_ok": True})
            self.client.client.publish(topics.up(VICTIM, Up.HEALTH), health, 1)
            assert self.cloud.receiver is not None
            self.cloud.receiver.monitor.check()  # what `boxcloud run` does every second

    def run_while(self, attack: Callable[[], None], seconds: float) -> None:
        """Keep sending during `attack` and `seconds` after it; then every batch must be stored."""
        self._thread.start()
        try:
            wait_for(lambda: self.cloud.store.health(VICTIM), 15, "the victim's first heartbeat stored")
            attack()
            self._stop.wait(seconds)
        finally:
            self._stop.set()
            self._thread.join()
        store = self.cloud.store
        wait_for(lambda: len(store.batch_keys(VICTIM)) == self.seq, 60, "every batch of the victim stored")
        assert store.alerts(VICTIM, include_closed=True) == [], [a.message for a in store.alerts(VICTIM, True)]


def _bomb() -> bytes:
    body = b"\x9a" + (4_000_000).to_bytes(4, "big") + b"\xa0" * 4_000_000
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return bytes([wire.VERSION | 0x80]) + c.compress(body) + c.flush()


def test_payloads_of_four_million_empty_maps_stall_nobody(arena: tuple[Cloud, Client, Client]) -> None:
    cloud, victim_client, attacker = arena
    victim = Victim(cloud, victim_client)
    bomb = _bomb()
    assert len(bomb) < 8 * 1024

    def attack() -> None:
        for _ in range(60):
            attacker.client.publish(topics.up(ATTACKER, Up.DATA), bomb, 1)

    victim.run_while(attack, 8)
    assert cloud.receiver is not None
    counters = cloud.receiver.counters
    assert counters.rejected >= 1 and "more than" in counters.last_rejection, counters.last_rejection
    assert cloud.store.samples(ATTACKER) == []
    assert [a.kind for a in cloud.store.alerts(ATTACKER)] == ["rate"]


def test_a_flood_of_huge_point_tables_grows_no_cache_and_stalls_nobody(arena: tuple[Cloud, Client, Client]) -> None:
    cloud, victim_client, attacker = arena
    victim = Victim(cloud, victim_client)
    tables = [wire.encode_table([PointInfo(f"d{n}.p{i}", "", "f") for i in range(wire.MAX_POINTS)]) for n in range(8)]

    def attack() -> None:
        for t in tables:
            attacker.client.publish(topics.up(ATTACKER, Up.META), t, 1)

    victim.run_while(attack, 8)
    assert cloud.store.cached_points() <= MAX_TABLES_PER_BOX * wire.MAX_POINTS + len(TABLE)
    assert [a.kind for a in cloud.store.alerts(ATTACKER)] == ["rate"]
    assert cloud.receiver is not None
    assert cloud.receiver.pacer.waiting(ATTACKER) > 0  # the rest waits its turn, in the database
