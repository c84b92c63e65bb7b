"""The recovery ladder with a simulated clock: which rung, when, within which budgets (pure)."""

from __future__ import annotations

import itertools
import random

from boxconfig.modem import LadderSettings
from boxd._modem_ladder import HOUR_S, Evidence, Ladder, Ledger

WALL0 = 1_800_000_000.0


def run(ladder: Ladder, seconds: float, *, step: float = 5.0, answers: bool = True, path_ok: bool | None = False,
        fault: str = "", other_wan: bool = False, link_ok: bool = False, t0: float = 0.0) -> list[tuple[float, str]]:
    """Checks every `step` seconds of an uplink silent since t0; the rungs climbed, with their times."""
    out = []
    t = t0
    while t < t0 + seconds:
        ev = Evidence(t, WALL0 + t, link_ok, t - t0 if not link_ok else 0.0, answers, path_ok, fault, other_wan)
        action = ladder.step(ev)
        if action is not None:
            out.append((t - t0, action.rung))
        t += step
    return out


def test_a_silent_link_climbs_every_rung_in_order_each_after_its_timeout() -> None:
    s = LadderSettings()
    rungs = run(Ladder(s, rng=random.Random(1)), 2000)
    names = [r for _, r in rungs][:5]
    assert names == ["reconnect", "reregister", "reset", "power_cycle", "reboot"]
    times = [t for t, _ in rungs][:5]
    assert times[0] == s.silent_s  # the first rung as soon as the uplink is silent long enough
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for gap, timeout in zip(gaps, (s.bearer_timeout_s, s.register_timeout_s, s.reset_timeout_s, s.power_timeout_s),
                            strict=True):
        assert timeout <= gap <= timeout + s.backoff_s + 5  # the rung's timeout, its jitter, one check


def test_a_modem_that_does_not_answer_is_power_cycled_first_within_90_s_of_the_uplink_going_silent() -> None:
    """Default settings; each check costs an AT timeout (the modem is silent), the modem counts as not
    answering after two checks (boxd.modem): the decision still comes well within 90 s."""
    s = LadderSettings()
    rungs = run(Ladder(s), 200, step=s.check_s + s.at_timeout_s, answers=False)
    first_t, first = rungs[0]
    assert first == "power_cycle"
    assert first_t <= 90


def test_the_platform_answering_holds_the_ladder() -> None:
    """The network works (a TCP handshake with the platform's host answered): no rung would mend it."""
    assert run(Ladder(LadderSettings()), 3600, path_ok=True) == []


def test_a_configuration_fault_never_resets_anything() -> None:
    ladder = Ladder(LadderSettings())
    for fault in ("sim_missing", "pin_wrong", "pin_unsafe", "apn_rejected", "registration_denied"):
        assert run(ladder, 86400, step=30, fault=fault) == []
    assert "configuration fault" in ladder.held
    assert ladder.ledger.hardware == []


def test_budgets_hold_under_a_fault_that_never_clears() -> None:
    s = LadderSettings(resets_per_hour=2, resets_per_day=5, reboots_per_day=1)
    ladder = Ladder(s, rng=random.Random(7))
    rungs = run(ladder, 3 * 86400, step=5)
    hardware = [t for t, r in rungs if r in ("reset", "power_cycle", "reboot")]
    for t in hardware:
        assert sum(1 for u in hardware if t <= u < t + HOUR_S) <= s.resets_per_hour
        assert sum(1 for u in hardware if t <= u < t + 86400) <= s.resets_per_day
    reboots = [t for t, r in rungs if r == "reboot"]
    for t in reboots:
        assert sum(1 for u in reboots if t <= u < t + 86400) <= s.reboots_per_day
    assert len(hardware) >= 10  # and the budget is used: about five a day
    assert any(r == "reconnect" for t, r in rungs if t > 86400)  # the free rungs go on being tried
    assert "held back" in ladder.held or ladder.level > 0


def test_the_budget_is_kept_across_a_reboot() -> None:
    s = LadderSettings(resets_per_hour=1, resets_per_day=1, reboots_per_day=1)
    ladder = Ladder(s, rng=random.Random(3))
    first = run(ladder, 3000, answers=False)
    assert [r for _, r in first].count("power_cycle") == 1
    again = Ladder(s, Ledger.from_doc(ladder.ledger.to_doc()), rng=random.Random(4))  # a new boxd, the file kept
    assert [r for _, r in run(again, 3000, answers=False, t0=3000)] == []


def test_never_a_reboot_while_another_uplink_carries_the_box() -> None:
    rungs = run(Ladder(LadderSettings(resets_per_hour=60, resets_per_day=1000), rng=random.Random(2)), 86400,
                other_wan=True)
    assert "reboot" not in {r for _, r in rungs} and "power_cycle" in {r for _, r in rungs}


def test_the_link_back_ends_the_trouble_with_a_recovery() -> None:
    ladder = Ladder(LadderSettings(), rng=random.Random(5))
    assert run(ladder, 100) and ladder.trouble_since is not None
    ladder.step(Evidence(100.0, WALL0 + 100, True, 0.0, True))
    r = ladder.recovered
    assert r is not None and r.rung == "reconnect" and r.took_s == 40
    assert ladder.level == 0 and ladder.trouble_since is None


def test_a_ledger_from_a_damaged_file_or_a_stepped_clock() -> None:
    assert Ledger.from_doc("junk").hardware == []
    assert Ledger.from_doc({"hardware": [1.0, "x", True, None], "reboots": 5}).hardware == [1.0]
    ledger = Ledger([WALL0 + 10 * 86400, WALL0 - 10], [])  # one far ahead (a clock stepped back), one recent
    ledger.prune(WALL0)
    assert ledger.hardware == [WALL0 - 10]
