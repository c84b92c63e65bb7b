"""The platform's monitoring rules: offline, silence, sequence, gaps, clocks, devices."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from cloud.monitor import Monitor
from cloud.store import Store
from drivers import PointInfo, Quality
from proto import wire
from proto.errors import WireError
from proto.modem import ModemEvent, ModemReport, WanEvent, decode_report
from proto.uplink import Evicted, Health, decode_event, decode_health
from proto.wire import encode_doc
from tests.support.storedb import sqlite_only

TABLE = [PointInfo("ahu.t", "degC", "float32"), PointInfo("meter.e", "kWh", "uint32")]


@pytest.fixture
def mon(store: Store) -> Monitor:
    s = store
    s.enroll_box("B1", "B1", 1, 2e9)
    s.put_table("B1", wire.table_id(TABLE), TABLE)
    return Monitor(s)


def kinds(mon: Monitor) -> list[str]:
    return sorted(a.kind + (f":{a.subject}" if a.subject else "") for a in mon.store.alerts("B1"))


def health(**kw: object) -> dict[str, object]:
    doc: dict[str, object] = {"v": 1, "ts": int(time.time() * 1000), "clock_ok": True, "epoch": 7, "last_seq": 0,
                              "oldest_seq": 0, "hb_s": 10}
    doc.update(kw)
    return doc


def store(mon: Monitor, seq: int, q: int = 0) -> None:
    b = wire.decode_batch(wire.encode_batch(7, seq, wire.table_id(TABLE), int(time.time() * 1000),
                                            [wire.encode_group(0, 0, [1.0, None], {1: q} if q else {})]))
    mon.store.store_batch("B1", b, TABLE)
    mon.on_samples("B1", list(b.samples(TABLE)))


def test_offline_is_one_alert_and_online_closes_it(mon: Monitor) -> None:
    mon.store.set_status("B1", False, time.time(), "connection lost", None)
    mon.on_status("B1", False, "connection lost")
    mon.on_status("B1", False, "connection lost")
    assert kinds(mon) == ["offline"]
    mon.on_status("B1", True, "")
    assert kinds(mon) == []


def online(mon: Monitor, box_id: str) -> bool:
    row = mon.store.box(box_id)
    assert row is not None
    return row.online


def test_missed_heartbeats_mark_the_box_offline(mon: Monitor) -> None:
    mon.store.set_status("B1", True, time.time(), "", None)
    mon.on_health("B1", health())
    store(mon, 1)
    mon.check(now=time.time() + 5)
    assert kinds(mon) == []
    mon.check(now=time.time() + 60)
    assert kinds(mon) == ["offline"] and not online(mon, "B1")
    mon.on_health("B1", health())  # it speaks again
    assert kinds(mon) == [] and online(mon, "B1")


def test_heartbeats_without_data_raise_no_data(mon: Monitor) -> None:
    mon.store.set_status("B1", True, time.time(), "", None)
    mon.on_health("B1", health())
    mon.check(now=time.time() + 20)  # heartbeat still fresh enough? no: 3*10+5 = 35 s
    assert "no_data" in kinds(mon)
    store(mon, 1)
    assert "no_data" not in kinds(mon)


def test_sequence_backwards_and_reset_are_alerts(mon: Monitor) -> None:
    mon.on_health("B1", health(last_seq=10, oldest_seq=1))
    mon.on_health("B1", health(last_seq=4, oldest_seq=1))
    assert kinds(mon) == ["sequence"]
    mon.store.close_alert("B1", "sequence")
    mon.on_health("B1", health(epoch=8, last_seq=1, oldest_seq=1))
    assert kinds(mon) == ["sequence"]


def test_a_gap_is_an_alert_unless_the_batches_were_evicted(mon: Monitor) -> None:
    for seq in (1, 2, 4):
        store(mon, seq)
    mon.on_health("B1", health(last_seq=4, oldest_seq=0))  # the Box says all 4 were acknowledged
    assert kinds(mon) == ["gap:7"]
    mon.on_evicted("B1", Evicted(ts_ms=0, samples=2, total=2, seqs=[(3, 3)], epoch=7))
    mon.on_health("B1", health(last_seq=4, oldest_seq=0))
    assert kinds(mon) == ["evicted"]


def test_batches_a_box_said_it_evicted_are_no_gap_while_its_eviction_event_is_on_the_way(mon: Monitor) -> None:
    for seq in (1, 2, 4):
        store(mon, seq)
    mon.on_health("B1", health(last_seq=2, oldest_seq=0, evicted=0))
    # the heartbeat (published at once) overtakes the eviction event (queued behind the backlog)
    mon.on_health("B1", health(last_seq=4, oldest_seq=0, evicted=5))
    assert kinds(mon) == []
    mon.on_evicted("B1", Evicted(ts_ms=0, samples=5, total=5, seqs=[(3, 3)], epoch=7))
    mon.on_health("B1", health(last_seq=4, oldest_seq=0, evicted=5))
    assert kinds(mon) == ["evicted"]
    # a batch missing that the Box never said it evicted is a gap, as before
    for seq in (5, 7):
        store(mon, seq)
    mon.on_health("B1", health(last_seq=7, oldest_seq=0, evicted=5))
    assert kinds(mon) == ["evicted", "gap:7"]


def test_a_box_heard_before_evictions_were_told_is_checked_for_gaps_from_its_count_then(mon: Monitor) -> None:
    store(mon, 1)
    store(mon, 3)
    mon.on_health("B1", health(last_seq=0, oldest_seq=0, evicted=40))  # its first report: those were told
    mon.on_health("B1", health(last_seq=3, oldest_seq=0, evicted=40))
    assert kinds(mon) == ["gap:7"]


def test_the_evicted_alert_says_the_largest_total_the_box_told(mon: Monitor) -> None:
    mon.on_health("B1", health(evicted=0))
    for total, samples in ((9, 9), (2619, 210), (100, 91)):  # the last one late (sent again after a refusal)
        mon.on_evicted("B1", Evicted(ts_ms=0, samples=samples, total=total, seqs=[], epoch=7))
    (alert,) = mon.store.alerts("B1")
    assert alert.kind == "evicted" and "2619 oldest samples dropped in all" in alert.message, alert
    health_row = mon.store.health("B1")
    assert health_row is not None and health_row[1]["evicted_told"] == 2619


def test_an_eviction_event_before_any_heartbeat_makes_no_health_report(mon: Monitor) -> None:
    mon.on_evicted("B1", Evicted(ts_ms=0, samples=9, total=9, seqs=[], epoch=7))
    assert mon.store.health("B1") is None  # "no heartbeat yet" stays true for the operator's tools


def test_a_clock_far_off_is_an_alert(mon: Monitor) -> None:
    mon.on_health("B1", health(ts=int(time.time() * 1000) + 3_600_000))
    assert kinds(mon) == ["clock"]
    mon.on_health("B1", health())
    assert kinds(mon) == []


def test_an_unreachable_device_is_its_own_alert_only_while_the_box_is_online(mon: Monitor) -> None:
    mon.store.set_status("B1", True, time.time(), "", None)
    mon.on_health("B1", health())
    store(mon, 1, q=Quality.NO_ANSWER)  # meter.e does not answer, ahu.t does
    mon.check(now=time.time() + 30)
    assert kinds(mon) == []
    mon.on_health("B1", health(ts=int(time.time() * 1000)))
    mon.check(now=time.time() + 61 + 0)
    # the heartbeat is older than 35 s by then: the Box is offline, and nothing is said per device
    assert kinds(mon) == ["offline"]
    mon.on_status("B1", True, "")
    mon.on_health("B1", health())
    mon.store.set_status("B1", True, time.time(), "", None)
    with mon.store.engine.begin() as db:  # the device went quiet two minutes ago
        db.execute(sa.text("UPDATE devices SET bad_since=bad_since-120"))
    mon.check()
    assert kinds(mon) == ["device:meter"]
    store(mon, 2)
    assert kinds(mon) == []


def test_a_planned_restart_is_no_alert_unless_the_box_stays_away(mon: Monitor) -> None:
    mon.on_health("B1", health())
    now = time.time()
    mon.store.set_status("B1", False, now, "restarting", None)
    mon.on_status("B1", False, "restarting")
    mon.check(now + 60)
    assert kinds(mon) == []
    mon.check(now + 200)  # past the grace (2 min, or 3 heartbeats if longer)
    assert kinds(mon) == ["offline"] and "not back" in mon.store.alerts("B1")[0].message
    mon.store.set_status("B1", True, now + 201, "", None)
    mon.on_status("B1", True, "")
    assert kinds(mon) == []


def test_a_rollback_is_an_alert_until_acknowledged_or_a_configuration_is_kept(mon: Monitor) -> None:
    mon.on_config_answer("B1", 3, "applied", ["on probation for 60 s: ..."])
    assert kinds(mon) == []
    mon.on_config_answer("B1", 3, "rolled_back", ["no device of configuration 3 gave a good reading"])
    assert kinds(mon) == ["config:3"] and "rolled back" in mon.store.alerts("B1")[0].message
    mon.on_config_answer("B1", 4, "kept", [])
    assert kinds(mon) == []
    mon.on_config_answer("B1", 5, "rolled_back", ["..."])
    (alert,) = mon.store.alerts("B1")
    assert mon.store.ack_alert(alert.id, close=True) and kinds(mon) == []
    assert not mon.store.ack_alert(alert.id, close=True)  # once only: "nothing changed"


def test_an_acknowledgement_keeps_who_when_and_why_with_the_alert(store: Store) -> None:
    store.open_alert("B1", "offline", "", "the Box is offline")
    (a,) = store.alerts("B1")
    t = time.time()
    assert store.ack_alert(a.id, close=False, by="user:ann", note="technician on site")
    acked = store.alert(a.id)
    assert acked is not None and (acked.acked_by, acked.ack_note) == ("user:ann", "technician on site")
    assert acked.acked is not None and t - 1 <= acked.acked <= time.time() + 1 and acked.closed is None
    assert not store.ack_alert(a.id, close=False, by="user:bob", note="me too")  # acknowledged already
    assert store.ack_alert(a.id, close=True, by="user:bob", note="fixed")  # closing keeps the first acknowledgement
    done = store.alert(a.id)
    assert done is not None and done.closed is not None
    assert (done.acked, done.acked_by, done.ack_note) == (acked.acked, "user:ann", "technician on site")


@sqlite_only
def test_an_older_database_gets_the_new_columns(tmp_path: Path) -> None:
    import sqlite3

    db = sqlite3.connect(tmp_path / "old.db")
    db.executescript("CREATE TABLE alerts (id INTEGER PRIMARY KEY, box_id TEXT NOT NULL, kind TEXT NOT NULL, "
                     "subject TEXT NOT NULL, message TEXT NOT NULL, opened REAL NOT NULL, closed REAL);"
                     "INSERT INTO alerts VALUES (1, 'B1', 'evicted', '', 'full', 1.0, NULL);")
    db.close()
    s = Store(tmp_path / "old.db")
    (a,) = s.alerts("B1")
    assert a.acked is None and s.ack_alert(1, close=False) and s.alert(1).acked is not None  # type: ignore[union-attr]


def modem(**kw: object) -> ModemReport:
    """A modem report as the platform decodes it from a heartbeat."""
    doc: dict[str, object] = {"state": "connected", "reg": "home", "operator": "Sim Telecom", "iccid": "8949001",
                              "signal": {"grade": "good", "rsrp": -85}, "weak": False, "fault": "", "wan": "cellular",
                              "usage": {"rx": 1, "tx": 1, "budget": 0, "near": False}}
    doc.update(kw)
    return decode_health(Health(ts_ms=1, epoch=1, last_seq=0, modem=decode_report(doc)).encode()).modem or \
        ModemReport()


def event(ev: ModemEvent | WanEvent) -> ModemEvent | WanEvent:
    """An event as the platform decodes it."""
    decoded = decode_event(ev.encode())
    assert isinstance(decoded, ModemEvent | WanEvent)
    return decoded


def test_the_modem_report_raises_sim_change_roaming_weak_signal_and_budget_alerts(mon: Monitor) -> None:
    mon.on_modem("B1", modem())
    assert kinds(mon) == []
    mon.on_modem("B1", modem(iccid="8949002", reg="roaming", weak=True, signal={"grade": "poor", "rsrp": -118},
                             usage={"rx": 460_000_000, "tx": 0, "budget": 500_000_000, "near": True}))
    assert kinds(mon) == ["data_budget", "roaming", "signal", "sim_changed"]
    assert "8949001 -> 8949002" in next(a.message for a in mon.store.alerts("B1") if a.kind == "sim_changed")
    mon.on_health("B1", health())  # a heartbeat without the modem's part changes nothing
    assert kinds(mon) == ["data_budget", "roaming", "signal", "sim_changed"]
    mon.on_modem("B1", modem(iccid="8949002"))
    assert kinds(mon) == ["sim_changed"]  # closed by an operator only
    assert mon.store.modem("B1") is not None


def test_a_sim_swapped_while_the_box_reported_no_sim_is_a_change(mon: Monitor) -> None:
    mon.on_modem("B1", modem())
    mon.on_modem("B1", modem(iccid="", state="fault", fault="sim_missing"))  # the SIM taken out
    assert kinds(mon) == []
    mon.on_modem("B1", modem(iccid="8949002"))  # another one put in
    assert kinds(mon) == ["sim_changed"]


def test_modem_events_raise_configuration_recovery_and_failover_alerts(mon: Monitor) -> None:
    mon.on_modem_event("B1", event(ModemEvent("fault", cause="apn_rejected", words="the network refused the APN 'x'")))
    mon.on_modem_event("B1", event(ModemEvent("recovery", rung="reconnect", why="silent")))
    assert kinds(mon) == ["modem_config:apn_rejected"]  # a soft rung is no alert
    mon.on_modem_event("B1", event(ModemEvent("recovery", rung="power_cycle", why="no answer")))
    mon.on_modem_event("B1", event(WanEvent("cellular", "wwan0", "eth0 is down")))
    assert kinds(mon) == ["modem_config:apn_rejected", "modem_recovery:power_cycle", "wan_failover"]
    mon.on_modem_event("B1", event(ModemEvent("fault_cleared")))
    mon.on_modem_event("B1", event(WanEvent("preferred", "eth0", "eth0 is up")))
    assert kinds(mon) == ["modem_recovery:power_cycle"]


def test_a_modem_report_or_event_out_of_bounds_is_refused_with_what_is_wrong() -> None:
    for bad, words in (({"reg": "elsewhere"}, "'reg' must be one of"), ({"iccid": "8" * 99}, "'iccid' must be text"),
                       ({"signal": {"rsrp": "-80"}}, "'rsrp' must be an integer"), ({"x": 1}, "unknown field"),
                       ({"usage": {"rx": -1}}, "'rx' must be an integer")):
        with pytest.raises(WireError, match=words):
            decode_report(bad)
    doc = ModemEvent("fault", 5, "apn_rejected", "x").to_doc() | {"cause": "format_the_disk"}
    with pytest.raises(WireError, match="'cause' must be one of"):
        decode_event(encode_doc(doc))
