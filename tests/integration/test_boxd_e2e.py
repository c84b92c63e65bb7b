"""boxd end to end, as a real process: simulated building -> Box -> real Mosquitto (mTLS) -> cloud storage."""

from __future__ import annotations

import itertools
import logging
import math
import time
import tomllib
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.platform import Cloud
from drivers import PointInfo, Quality
from proto import topics, wire
from proto.topics import Up
from tests.support.boxproc import BoxProcess
from tests.support.cloudkit import mqtt_client, provision
from tests.support.simthread import SimThread
from tests.support.wait import wait_for

POLL_S = 0.5


@pytest.fixture(scope="module")
def building() -> Iterator[SimThread]:
    with SimThread(update_interval_s=0.2) as s:
        yield s


def box_config(path: Path, sim: SimThread, **uplink: int) -> Path:
    settings = {"batch_delay_ms": 100, "reconnect_max_s": 2, **uplink}
    head = "[uplink]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items())
    path.write_text(head + "\n" + sim.sim.points_toml(POLL_S))
    return path


def units(config: Path) -> dict[str, str]:
    raw = tomllib.loads(config.read_text())
    return {f"{d['name']}.{p['name']}": p.get("unit", "") for d in raw["modbus_tcp"] for p in d["points"]}


def slow_points(config: Path) -> set[str]:
    """Points polled less often than their device (e.g. a model name read once a minute)."""
    raw = tomllib.loads(config.read_text())
    return {f"{d['name']}.{p['name']}" for d in raw["modbus_tcp"] for p in d["points"]
            if p.get("poll_interval_s", d["poll_interval_s"]) > d["poll_interval_s"]}


def close(a: object, b: object) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and math.isclose(a, b, rel_tol=1e-5,
                                                                                         abs_tol=1e-4)
    return a == b


@pytest.fixture
def box(cloud: Cloud, building: SimThread, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[BoxProcess]:
    serial = f"E2E-{request.node.name[5:30].replace('_', '-')}"
    provision(cloud, tmp_path, serial)
    p = BoxProcess.start(tmp_path, box_config(tmp_path / "boxd.toml", building))
    try:
        yield p
    finally:
        p.stop()


def test_every_point_arrives_with_its_value_type_and_unit(cloud: Cloud, building: SimThread, box: BoxProcess) -> None:
    box_id = box.state.joinpath("identity", "identity.json").read_text().split('"')[3]
    expected_units = units(box.state / "boxd.toml")
    wait_for(lambda: len(cloud.store.latest(box_id)) == len(expected_units), 30, "every point in the cloud")
    building.call(building.sim.pause)
    try:
        frozen = building.call(building.sim.values)

        def all_match() -> bool:
            latest = {p: v for p, _, v, q, _ in cloud.store.latest(box_id) if q == Quality.GOOD}
            return all(close(latest.get(p), v) for p, v in frozen.items())

        wait_for(all_match, 30, "the cloud to hold the simulator's frozen values")
    finally:
        building.call(building.sim.resume)
    latest = cloud.store.latest(box_id)
    assert {p: u for p, _, _, _, u in latest} == expected_units
    for point, _, value, _, _ in latest:  # types survive the trip: no float turned int or bool turned 0/1
        assert type(value) is type(frozen[point]) or (isinstance(frozen[point], float) and isinstance(value, float))


def test_status_goes_offline_with_the_reason(cloud: Cloud, box: BoxProcess) -> None:
    box.wait_connected()
    box_id = box.status() and box.state.joinpath("identity", "identity.json").read_text().split('"')[3]
    assert isinstance(box_id, str)
    wait_for(lambda: cloud.box(box_id).online, 15, "the Box to show online")
    assert box.stop() == 0
    wait_for(lambda: not cloud.box(box_id).online, 15, "the Box to show offline")
    assert cloud.box(box_id).status_reason == "stopped"


def test_a_killed_box_is_reported_offline_by_its_last_will(cloud: Cloud, box: BoxProcess) -> None:
    box.wait_connected()
    box_id = box.state.joinpath("identity", "identity.json").read_text().split('"')[3]
    wait_for(lambda: cloud.box(box_id).online, 15, "the Box to show online")
    box.kill()
    wait_for(lambda: not cloud.box(box_id).online, 15, "the Last Will")
    assert cloud.box(box_id).status_reason == "connection lost"


def test_samples_taken_while_the_broker_is_down_arrive_once(
    fresh_cloud: Cloud, building: SimThread, tmp_path: Path
) -> None:
    cloud = fresh_cloud
    provision(cloud, tmp_path, "OUTAGE-1")
    box = BoxProcess.start(tmp_path, box_config(tmp_path / "boxd.toml", building))
    try:
        box.wait_connected()
        wait_for(lambda: len(cloud.store.latest("OUTAGE-1")) == len(units(tmp_path / "boxd.toml")), 30,
                 "every point before the outage")
        outage_started_ms = time.time() * 1000
        cloud.broker.stop()
        wait_for(lambda: not box.status().get("connected"), 30, "boxd to notice the outage")
        # a broker that went away closed the Box's connection from its side: the reconnection policy
        # spreads such a fleet's returns (`boxd.backoff.Reconnect`); a link of its own failing does not
        wait_for(lambda: "connection to the broker lost: closed by the broker's side" in box.log.read_text(), 10,
                 "boxd to log the broker's closing")
        points = len(units(tmp_path / "boxd.toml"))
        wait_for(lambda: box.queue_samples(0) >= 8 * points, 60, "a backlog of 8 polls")
        outage_ended_ms = time.time() * 1000
        cloud.broker.start()
        box.wait_connected(60)
        # drained: only the last poll or two still wait, and the cloud holds data from after the outage
        wait_for(lambda: box.queue_samples(10**6) <= 2 * points, 60, "the backlog to drain")
        wait_for(lambda: max(t for _, t, _, _ in cloud.store.samples("OUTAGE-1")) > outage_ended_ms, 30,
                 "data from after the outage")
    finally:
        box.stop()
    # the receiver acknowledges after storing; give it the last batches
    keys = cloud.store.batch_keys("OUTAGE-1")
    epochs = {e for e, _ in keys}
    seqs = [s for _, s in keys]
    assert len(epochs) == 1 and seqs == list(range(1, len(seqs) + 1)), "a batch is missing"
    samples = cloud.store.samples("OUTAGE-1")
    dupes = [k for k, n in Counter((p, t) for p, t, _, _ in samples).items() if n > 1]
    assert dupes == [], "a sample was stored twice"
    by_point: dict[str, list[int]] = defaultdict(list)
    for p, t, _, _ in samples:
        by_point[p].append(t)
    assert len(by_point) == points
    slow = slow_points(tmp_path / "boxd.toml")
    for p, ts in by_point.items():
        if p in slow:
            continue
        assert ts[0] < outage_started_ms and ts[-1] > outage_ended_ms, f"{p}: the data does not span the outage"
        gaps = [b - a for a, b in itertools.pairwise(ts)]
        assert max(gaps) < 3 * POLL_S * 1000, f"{p}: a hole of {max(gaps)} ms in the data"


def test_malformed_batches_are_rejected_and_the_receiver_goes_on(
    cloud: Cloud, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = cloud.receiver
    assert receiver is not None
    ident = provision(cloud, tmp_path, "HOSTILE-1")
    c = mqtt_client(cloud, ident.box_id, ident.cert_file, ident.key_file)
    wait_for(c.connected.is_set, 10, "the hostile client")
    rejected = receiver.counters.rejected
    table = [PointInfo("x.t", "degC", "float32")]
    good = wire.encode_batch(9, 1, wire.table_id(table), 1000, [wire.encode_group(0, 0, [21.25], {})])
    caplog.set_level(logging.WARNING, "boxcloud.receiver")
    try:
        for garbage in (b"", b"\x01\xff", b"\x07hello", b"\x81" + b"\x00" * 50, b"\x01" + b"\x9f" * 2000):
            c.client.publish(topics.up(ident.box_id, Up.DATA), garbage, 1).wait_for_publish(5)
        c.client.publish(topics.up(ident.box_id, Up.STATUS), b"{not json", 1).wait_for_publish(5)
        c.client.publish(topics.up(ident.box_id, Up.META), wire.encode_table(table), 1).wait_for_publish(5)
        c.client.publish(topics.up(ident.box_id, Up.DATA), good, 1).wait_for_publish(5)
        wait_for(lambda: cloud.store.samples(ident.box_id), 10, "the good batch after the bad ones")
    finally:
        c.close()
    assert cloud.store.samples(ident.box_id) == [("x.t", 1000, 21.25, 0)]
    assert receiver.counters.rejected - rejected == 6
    reasons = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert any("empty payload" in r for r in reasons) and any("bad CBOR" in r for r in reasons)
    assert any("version 7" in r for r in reasons) and any("status is not JSON" in r for r in reasons)


def test_batches_for_unknown_tables_wait_for_their_table_within_a_bound(
    cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = cloud.receiver
    assert receiver is not None
    import cloud._batches as batches_module

    monkeypatch.setattr(batches_module, "MAX_PARKED", 3)
    ident = provision(cloud, tmp_path, "PARKER-1")
    c = mqtt_client(cloud, ident.box_id, ident.cert_file, ident.key_file)
    wait_for(c.connected.is_set, 10, "the client")
    table = [PointInfo("x.t", "degC", "float32")]
    tid = wire.table_id(table)
    rejected = receiver.counters.rejected
    try:
        for seq in range(1, 6):  # 5 batches before the table: 3 wait, 2 are refused
            batch = wire.encode_batch(9, seq, tid, 1000 + seq, [wire.encode_group(0, 0, [float(seq)], {})])
            c.client.publish(topics.up(ident.box_id, Up.DATA), batch, 1).wait_for_publish(5)
        c.client.publish(topics.up(ident.box_id, Up.META), wire.encode_table(table), 1).wait_for_publish(5)
        wait_for(lambda: len(cloud.store.samples(ident.box_id)) == 3, 10, "the parked batches to be stored")
    finally:
        c.close()
    assert [v for _, _, v, _ in cloud.store.samples(ident.box_id)] == [1.0, 2.0, 3.0]
    assert receiver.counters.rejected - rejected == 2
