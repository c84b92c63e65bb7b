"""The modem's pure parts: data usage across resets and restarts, the budget, the reports, the PIN
rule, the configuration, the choice of uplink."""

from __future__ import annotations

import datetime as dt

import pytest

import boxconfig as config
from boxconfig.errors import ConfigError
from boxconfig.modem import WanSettings
from boxd._modem_report import Reporter, grade, pin_digest, pin_verdict, signal_doc
from boxd._modem_usage import Usage, budget_state, period_end, period_start, slowed
from boxd._wan import WanChooser
from drivers.modem import ByteCounters, Signal, SimState, SimStatus
from drivers.sim import building_points_toml


def test_usage_counts_across_a_modem_reset_and_a_daemon_restart() -> None:
    u = Usage()
    u.roll("2026-06-01")
    u.take(ByteCounters(1000, 500), index=7)  # the first reading of an interface: all of it
    u.take(ByteCounters(1600, 900), index=7)
    assert (u.rx, u.tx) == (1600, 900)
    u.take(None, index=0)  # the interface is gone (the modem re-enumerating): nothing, the last reading kept
    u.take(ByteCounters(300, 200), index=8)  # a new interface: its counters started at zero
    assert (u.rx, u.tx) == (1900, 1100)
    again = Usage.from_doc(u.to_doc())  # the daemon restarts on the same interface
    again.take(ByteCounters(350, 260), index=8)
    assert (again.rx, again.tx) == (1950, 1160)  # only what moved since the record: nothing counted twice
    again.take(ByteCounters(10, 10), index=8)  # counters that went back (a driver reset): started again
    assert (again.rx, again.tx) == (1960, 1170)


def test_a_new_billing_period_starts_from_zero_and_keeps_the_previous() -> None:
    u = Usage("2026-05-15", 10, 20)
    u.roll("2026-06-15")
    assert (u.period, u.rx, u.tx) == ("2026-06-15", 0, 0) and u.previous == {"period": "2026-05-15", "rx": 10, "tx": 20}
    assert period_start(dt.datetime(2026, 1, 3), 15) == dt.date(2025, 12, 15)
    assert period_start(dt.datetime(2026, 3, 31), 28) == dt.date(2026, 3, 28)
    assert period_end(dt.date(2026, 12, 15)) == dt.date(2027, 1, 15)


def test_a_damaged_usage_file_starts_afresh() -> None:
    assert Usage.from_doc({"v": 1, "rx": -5, "tx": "x", "period": "y" * 100}).to_doc()["rx"] == 0
    assert Usage.from_doc([1, 2]).total == 0


def test_the_soft_budget_saves_data_over_80_percent_or_on_pace_to_exceed() -> None:
    now = dt.datetime(2026, 6, 11, 0, 0)  # ten days into a 30-day period
    assert not budget_state(Usage(rx=100_000_000), 500, now, 1).save  # 100 of 500 MB: projected 300
    s = budget_state(Usage(rx=200_000_000), 500, now, 1)
    assert s.save and not s.near and s.projected == 600_000_000  # on pace for 600 of 500 MB
    assert budget_state(Usage(rx=460_000_000), 500, dt.datetime(2026, 6, 28), 1).near
    early = budget_state(Usage(rx=100_000_000), 500, dt.datetime(2026, 6, 2), 1)  # one day: no pace yet
    assert not early.save and early.projected == 0
    assert not budget_state(Usage(rx=10**12), 0, now, 1).save  # no budget, nothing saved


def test_saving_data_slows_every_point_but_the_critical_ones() -> None:
    cfg = config.parse(__import__("tomllib").loads(building_points_toml("127.0.0.1", 1502, 1.0)))
    slow = slowed(cfg, 4, lambda p: p.startswith("ahu1."))

    def intervals(c: config.BoxConfig) -> dict[str, float]:
        return {f"{d.name}.{p.name}": (p.poll_interval_s or d.poll_interval_s) for d in c.modbus_tcp for p in d.points}

    before, after = intervals(cfg), intervals(slow)
    assert all(after[k] == (v if k.startswith("ahu1.") else 4 * v) for k, v in before.items())
    assert slowed(cfg, 1, lambda p: False) is cfg


def test_grades_from_lte_values_or_rssi() -> None:
    assert grade(Signal("lte", rsrp_dbm=-75, sinr_db=25)) == "excellent"
    assert grade(Signal("lte", rsrp_dbm=-75, sinr_db=5)) == "fair"  # the worse of the two
    assert grade(Signal("lte", rsrp_dbm=-95)) == "fair"
    assert grade(Signal("lte", rsrp_dbm=-115)) == "poor"
    assert grade(Signal("umts", rssi_dbm=-70)) == "good"
    assert grade(Signal()) == "none"
    assert signal_doc(Signal("lte", -60.4, -85.6, -9.2, 15.0)) == {"tech": "lte", "grade": "good", "rssi": -60,
                                                                   "rsrp": -86, "rsrq": -9, "sinr": 15}


def test_the_pin_is_never_tried_at_one_attempt_left_nor_twice_when_refused() -> None:
    asks = SimStatus(SimState.PIN_REQUIRED, 3)
    assert pin_verdict(asks, "1234", "").send
    assert pin_verdict(SimStatus(SimState.PIN_REQUIRED, 1), "1234", "").cause == "pin_unsafe"
    assert pin_verdict(SimStatus(SimState.PIN_REQUIRED, None), "1234", "").cause == "pin_unsafe"
    assert pin_verdict(asks, "1234", pin_digest("1234")).cause == "pin_wrong"
    assert pin_verdict(asks, "5678", pin_digest("1234")).send  # a corrected PIN file is tried
    assert pin_verdict(asks, "", "").cause == "pin_required"
    assert pin_verdict(SimStatus(SimState.PUK_REQUIRED, 0), "1234", "").cause == "puk_required"
    assert "1234" not in pin_digest("1234")


def test_the_modem_report_is_bounded_by_a_deadband_and_an_interval() -> None:
    r = Reporter(min_interval_s=300)
    doc = {"reg": "home", "signal": {"grade": "good", "rsrp": -85}, "usage": {"rx": 1}}
    assert r.take(doc, 0) is not None  # the first
    assert r.take({**doc, "reg": "roaming"}, 100) is None  # a change, but too soon
    assert r.take({**doc, "signal": {"grade": "good", "rsrp": -88}}, 400) is None  # within the deadband
    assert r.take({**doc, "usage": {"rx": 9}}, 400) is None  # data used alone: only at the hourly refresh
    assert r.take({**doc, "signal": {"grade": "good", "rsrp": -79}}, 400) is not None  # 6 dB: beyond the deadband
    assert r.take({**doc, "reg": "roaming"}, 800) is not None
    assert r.take({**doc, "reg": "roaming"}, 1200) is None  # nothing changed
    assert r.take({**doc, "reg": "roaming"}, 800 + 3600) is not None  # the hourly refresh


def test_the_modem_section_of_the_configuration() -> None:
    good = {"modem": {"apn": "internet.test", "backend": "at", "port": "/dev/ttyUSB2", "pin_file": "sim.pin",
                      "critical": ["ahu1.*"], "ladder": {"silent_s": 5}}, "wan": {"prefer": "eth0"}}
    cfg = config.parse(good)
    assert cfg.modem is not None and cfg.modem.ladder.silent_s == 5 and cfg.wan.prefer == "eth0"
    assert cfg.modem.is_critical("ahu1.alarm") and not cfg.modem.is_critical("meter1.energy")
    assert config.parse({}).modem is None
    bad = {"modem": {"apn": "bad apn!", "backend": "ppp", "pin_file": "../etc/shadow", "interface": "wwan0; reboot",
                     "ladder": {"silent_s": 1, "resets_per_day": 5000}, "budget_mb": -1}, "wan": {"prefer": "wwan0"}}
    reasons = config.problems(bad)
    for expected in ("apn", "backend", "pin_file", "interface", "silent_s", "resets_per_day", "budget_mb"):
        assert any(expected in r for r in reasons), (expected, reasons)
    with pytest.raises(ConfigError, match="port is required"):
        config.parse({"modem": {"apn": "internet", "backend": "at"}})
    with pytest.raises(ConfigError, match="needs a \\[modem\\]"):
        config.parse({"wan": {"prefer": "eth0"}})


def test_the_uplink_fails_over_to_4g_and_back_with_a_growing_hold_down() -> None:
    w = WanChooser(WanSettings("eth0", failover_s=30, failback_s=60))
    assert w.active == "preferred"
    assert w.step(0, True, True, 0) is None
    assert w.step(10, False, False, 0) is None  # down, not yet for failover_s
    sw = w.step(41, False, False, 0)
    assert sw is not None and sw.to == "cellular" and "eth0 is down" in sw.why
    assert w.step(50, True, True, 0) is None  # up again: wait failback_s
    back = w.step(111, True, True, 0)
    assert back is not None and back.to == "preferred"
    sw = w.step(120, True, False, 35)  # up, but the platform silent over it
    assert sw is not None and sw.to == "cellular" and "no acknowledgement" in sw.why
    assert w.hold_down(121) == 120  # a second failure within the hour: twice as long before going back
    assert WanChooser(WanSettings()).step(0, False, False, 999) is None  # no preferred uplink: 4G only
