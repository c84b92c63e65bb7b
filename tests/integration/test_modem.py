"""A Box on a (simulated) 4G modem keeps itself connected, on real parts, and loses no sample.

The Box (boxd, and the building it polls) runs in a network namespace of its own whose only way
to the platform is the modem's data bearer: ``wwan0``, a real interface that the AT modem simulator
(`drivers.sim.at_modem`, on a pty, a thread of this process) brings up and down as its bearer goes
(`tests.support.cell`). So the MQTT link really breaks when the modem does, and comes back only
when boxd has mended the modem. boxd talks to the modem with its AT backend over the pty, exactly
as it would to a Quectel's /dev/ttyUSB2; its power-cycle and reboot commands go to the simulator.
The ladder's timings are compressed (seconds, not minutes); the rungs and budgets are the real ones.

The tests share one Box and run in order (each leaves the link working). The last one counts every
sample the building served against what the platform stored (`tests.support.proofs`): nothing lost,
nothing twice, across every fault, reset, power-cycle, re-enumeration and a daemon restart.
Figures (seconds from each fault to the first batch after it) are printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cloud.platform import Cloud
from tests.support.boxproc import BoxProcess
from tests.support.cell import Cell, tally
from tests.support.cloudkit import make_cloud, provision
from tests.support.proofs import assert_nothing_lost, wait_stored
from tests.support.simthread import SimThread
from tests.support.wait import wait_for
from tests.support.wan import retarget

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
BOX = "CELL-1"
LADDER = "resets_per_hour = 10\nresets_per_day = 20\nreboots_per_day = 1"


@dataclass
class Rig:
    cloud: Cloud
    cell: Cell
    building: SimThread
    state: Path
    conf: Path
    figures: dict[str, float] = field(default_factory=dict)
    _box: BoxProcess | None = None  # from `start`

    @property
    def box(self) -> BoxProcess:
        assert self._box is not None, "the Rig's boxd is not started"
        return self._box

    @box.setter
    def box(self, box: BoxProcess) -> None:
        self._box = box

    def modem(self) -> dict[str, object]:
        st = self.box.status().get("modem")
        return st if isinstance(st, dict) else {}

    def ladder(self) -> dict[str, object]:
        ladder = self.modem().get("ladder")
        return dict(ladder) if isinstance(ladder, dict) else {}

    def usage(self) -> dict[str, int]:
        """The modem's data counts in the status (rx and tx bytes)."""
        use = self.modem()["usage"]
        assert isinstance(use, dict), use
        return dict(use)

    def batches(self) -> int:
        return len(self.cloud.store.batch_keys(BOX))

    def flowing(self, timeout: float = 60) -> None:
        n = self.batches()
        wait_for(lambda: self.batches() > n + 3 and self.box.status().get("connected"), timeout, "data to flow")

    def boxctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "provisioning.cli", "--state-dir", str(self.state), "modem", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    def config(self, ladder: str = LADDER, apn: str = "internet.test",
               timeouts: tuple[int, int, int, int] = (5, 5, 8, 8)) -> str:
        return ("[uplink]\nkeepalive_s = 10\nreconnect_max_s = 2\nbatch_delay_ms = 100\nheartbeat_s = 5\n\n"
                + self.cell.modem_toml(apn=apn, extra='pin_file = "sim.pin"', ladder=ladder, timeouts=timeouts)
                + "\n"
                # no retry, a long timeout (as the crash proofs): a read the Box gave up on would count as lost
                + self.building.sim.points_toml(0.5, timeout_s=10.0, retries=0))

    def start(self) -> None:
        self.box = BoxProcess.start(self.state, self.conf, prefix=self.cell.prefix(),
                                    env={**self.cell.env(), "BOXD_PROBATION_S": "20"})
        self.box.wait_connected(60)

    @contextlib.contextmanager
    def reconfiguring(self) -> Iterator[None]:
        """The building answers nothing while the Box takes a pushed configuration: a reconfiguration
        cancels the bus tasks, and a read served just then and cancelled before it was handed to the
        queue was never acknowledged to the bus; the proof (which sees the wire only) would count it
        lost. A new life of the proof begins before the building answers again."""
        sim = self.building.sim
        for unit in (1, 2, 3):
            self.building.call(sim.set_offline, unit, True)
        try:
            yield
        finally:
            self.building.call(self.building.served.new_life)
            for unit in (1, 2, 3):
                self.building.call(sim.set_offline, unit, False)

    def alerts(self, kind: str, *, closed: bool = True) -> list[str]:
        return [f"{a.kind}:{a.subject}" for a in self.cloud.store.alerts(BOX, include_closed=closed) if a.kind == kind]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("modem")
    with Cell(tmp / "cell") as cell:
        cloud = make_cloud(tmp / "cloud", bind="", names=[cell.platform_ip])
        cloud.start()
        try:
            with SimThread(netns=cell.ns, host="127.0.0.1", update_interval_s=0.1, counters=True,
                           record=True) as building:
                state = tmp / "box"
                ident = provision(cloud, state, BOX)
                retarget(ident.directory, cell.platform_ip, cloud.settings.broker_port)
                pin = state / "sim.pin"
                pin.write_text("1234\n")
                pin.chmod(0o600)
                r = Rig(cloud, cell, building, state, state / "boxd.toml")
                r.conf.write_text(r.config())
                r.start()
                try:
                    r.flowing()
                    yield r
                finally:
                    r.box.stop()
                    print("\nseconds from each fault to the first batch after it: "
                          + ", ".join(f"{k} {v:.1f}" for k, v in r.figures.items()))
        finally:
            cloud.stop()


def _recovered_by(rig: Rig, fault: str, rung: str, started: float) -> None:
    """Inject `fault`; the ladder must mend it with `rung`; the data must flow again."""
    rig.cell.control(fault)

    def mended() -> bool:
        last = rig.ladder().get("last_recovery")
        return (isinstance(last, dict) and bool(last) and float(last["at"]) >= started
                and rig.ladder().get("trouble_s") is None)

    wait_for(mended, 90, f"the ladder to mend '{fault}'")
    last = rig.ladder()["last_recovery"]
    assert isinstance(last, dict) and last["rung"] == rung, (fault, last)
    n = rig.batches()
    wait_for(lambda: rig.batches() > n, 60, f"a batch after '{fault}'")
    rig.figures[fault.removeprefix("fault ")] = time.monotonic() - rig.figures.pop("_t0")
    rig.flowing()


def test_each_fault_leads_to_its_rung_and_the_link_comes_back(rig: Rig) -> None:
    for fault, rung in (("fault stall", "reconnect"), ("fault detach", "reregister"), ("fault wedge", "reset"),
                        ("fault stuck", "power_cycle")):
        before = rig.cell.counts()
        rig.figures["_t0"] = time.monotonic()
        _recovered_by(rig, fault, rung, time.time())
        after = rig.cell.counts()
        if rung == "reset":
            assert tally(after, "resets") == tally(before, "resets") + 1
        if rung == "power_cycle":
            assert tally(after, "power_cycles") == tally(before, "power_cycles") + 1
            assert "power-cycling the modem: the modem does not answer" in rig.box.log.read_text()
    # the cloud heard of the power-cycle (a durable event, sent once the link was back)
    wait_for(lambda: rig.alerts("modem_recovery"), 30, "the modem_recovery alert")


def test_noise_urc_storms_re_enumeration_and_short_silences_cost_no_reset(rig: Rig) -> None:
    before = rig.cell.counts()
    path = before["path"]
    rig.cell.control("garbage on")
    rig.cell.control("urc-storm 3000")
    rig.flowing()
    rig.cell.control("garbage off")
    rig.cell.control("silence 2")
    rig.flowing()
    t0 = time.monotonic()
    rig.cell.control("unplug 2")  # the USB device goes and comes back as another tty
    wait_for(lambda: rig.cell.counts()["path"] not in ("", path), 30, "the port to come back under a new name")
    rig.flowing()
    rig.figures["re-enumeration"] = time.monotonic() - t0
    after = rig.cell.counts()
    assert (after.get("resets", 0), after.get("power_cycles", 0)) == (before.get("resets", 0),
                                                                      before.get("power_cycles", 0))
    assert rig.modem().get("answers") is True


def test_data_used_agrees_with_the_interface_within_1_percent_across_resets_and_a_restart(rig: Rig) -> None:
    history: list[tuple[float, tuple[int, int]]] = []  # the interface's totals over the last seconds
    seen: list[object] = []

    def close_enough() -> bool:
        """The Box's count matches the interface's totals of a moment of the last 10 s within 1 %, each
        direction (it reads the counters every second; on a loaded machine, beside other tests, that second
        and the status call that tells the count come late, while the data still flows)."""
        use = rig.modem().get("usage")
        assert rig.cell.bearer is not None
        now = time.monotonic()
        history.append((now, rig.cell.bearer.totals()))
        del history[:-500]
        seen[:] = [use, history[-1][1]]
        return isinstance(use, dict) and any(abs(use["rx"] - rx) <= 0.01 * rx and abs(use["tx"] - tx) <= 0.01 * tx
                                             for t, (rx, tx) in history if now - t <= 10.0)

    assert rig.cell.bearer is not None and rig.cell.bearer.incarnations >= 3  # reset, power-cycle, unplug
    try:
        wait_for(close_enough, 30, "the Box's count to agree with the interface's counters within 1 %", step=0.2)
    except AssertionError as e:
        raise AssertionError(f"{e}: Box, interface: {seen}") from None
    before = rig.usage()
    rig.box.stop()
    rig.building.end_life()
    rig.start()
    after = rig.usage()
    assert after["rx"] >= before["rx"] and after["tx"] >= before["tx"]  # nothing lost across the restart
    rig.flowing()
    try:
        wait_for(close_enough, 30, "the count to agree again after the restart (nothing counted twice)", step=0.2)
    except AssertionError as e:
        raise AssertionError(f"{e}: Box, interface: {seen}") from None
    print(f"\ndata used: Box {after}, interface totals {rig.cell.bearer.totals()}")


def test_configuration_faults_are_said_in_words_and_never_reset_the_modem(rig: Rig) -> None:
    before = rig.cell.counts()
    # no SIM: the Box says so (boxctl), the ladder holds; another SIM comes back: its ICCID is reported
    rig.cell.control("sim out")
    wait_for(lambda: rig.modem().get("fault") == "sim_missing", 30, "the missing SIM to be seen")
    r = rig.boxctl("status")
    assert r.returncode == 1 and "no SIM card detected" in r.stdout and "Traceback" not in r.stderr, r
    wait_for(lambda: "configuration fault" in str(rig.ladder().get("held")), 30, "the ladder to hold")
    rig.cell.control("iccid 89490200009999999999")
    rig.cell.control("sim in")
    rig.flowing()
    # a SIM asking for its PIN with one attempt left: never tried; with three: unlocked from the PIN file
    tries = tally(rig.cell.counts(), "pin_tries")
    rig.cell.control("pin 1")
    wait_for(lambda: rig.modem().get("fault") == "pin_unsafe", 30, "the PIN to be refused at one attempt left")
    assert "only 1 attempt(s) left" in rig.boxctl("status").stdout
    rig.cell.control("pin 3")
    rig.flowing()
    assert tally(rig.cell.counts(), "pin_tries") == tries + 1
    # registration denied; then roaming and a weak signal (reports, alerts)
    rig.cell.control("network denied")
    wait_for(lambda: rig.modem().get("fault") == "registration_denied", 30, "the denial to be seen")
    rig.cell.control("network roaming")
    rig.cell.control("signal -118 -18 -3 -100")
    rig.flowing()
    wait_for(lambda: rig.alerts("roaming", closed=False) and rig.alerts("signal", closed=False)
             and rig.alerts("sim_changed", closed=False), 60, "the roaming, signal and SIM change alerts")
    r = rig.boxctl("status", "--json")
    doc = json.loads(r.stdout)
    assert doc["reg"] == "roaming" and doc["signal"]["grade"] == "poor" and doc["iccid"].endswith("9999")
    r = rig.boxctl("watch", "--count", "2")  # for placing the antenna: a line a second with the grade
    lines = [line for line in r.stdout.splitlines() if "RSRP" in line]
    assert r.returncode == 0 and len(lines) == 2 and all("poor" in line for line in lines), r
    rig.cell.control("network home")
    rig.cell.control("signal -85 -9 15 -60")
    # a pushed configuration whose APN the network refuses is rolled back, with the reason
    with rig.reconfiguring():
        version = rig.cloud.push_config(BOX, rig.config(apn="wrong.apn"))
        wait_for(lambda: (c := rig.cloud.store.configs(BOX, 1)[0]).version == version and c.status == "rolled_back",
                 90, "the configuration with a refused APN to be rolled back")
    assert "refused the APN 'wrong.apn'" in rig.cloud.store.configs(BOX, 1)[0].reasons[0]
    rig.flowing()
    assert rig.alerts("modem_config") >= ["modem_config:apn_rejected"]
    causes = {a.split(":")[1] for a in rig.alerts("modem_config")}
    assert {"sim_missing", "pin_unsafe", "registration_denied", "apn_rejected"} <= causes
    after = rig.cell.counts()
    for hardware in ("resets", "power_cycles", "box_reboots"):
        assert after.get(hardware, 0) == before.get(hardware, 0), hardware


def test_budgets_hold_under_a_fault_that_never_clears_across_a_restart(rig: Rig) -> None:
    """Every hardware rung of the day is spent (with those used above), then nothing more, even after boxd
    starts again (as after the reboot rung); the reboot rung is reached once."""
    used = tally(rig.cell.counts(), "resets", "power_cycles", "box_reboots")
    budget = used + 3  # room for one reset, one power-cycle, one reboot
    ladder = f"resets_per_hour = {budget}\nresets_per_day = {budget}\nreboots_per_day = 1"
    with rig.reconfiguring():
        version = rig.cloud.push_config(BOX, rig.config(ladder=ladder, timeouts=(2, 2, 4, 4)))
        wait_for(lambda: rig.cloud.store.configs(BOX, 1)[0].status in ("applied", "kept")
                 and rig.cloud.store.configs(BOX, 1)[0].version == version, 60, "the new ladder settings")
    rig.cell.control("network searching")  # no coverage, for ever
    wait_for(lambda: rig.cell.counts().get("box_reboots", 0) == 1, 90, "the ladder to reach the reboot rung")
    spent = tally(rig.cell.counts(), "resets", "power_cycles", "box_reboots")
    assert spent == budget
    wait_for(lambda: "held back" in str(rig.ladder().get("held")), 30, "the ladder to hold the next hardware rung")
    rig.box.stop()  # what the reboot would have done
    rig.building.end_life()
    rig.box = BoxProcess.start(rig.state, rig.conf, prefix=rig.cell.prefix(), env=rig.cell.env())
    wait_for(lambda: "held back" in str(rig.ladder().get("held")), 60, "the restarted ladder to hold too")
    assert tally(rig.cell.counts(), "resets", "power_cycles", "box_reboots") == budget
    rig.cell.control("network home")
    rig.box.wait_connected(90)
    rig.flowing()
    wait_for(lambda: "modem_recovery:reboot" in rig.alerts("modem_recovery"), 30, "the reboot rung's alert")


def test_not_a_sample_lost_or_doubled_across_all_of_it(rig: Rig) -> None:
    log = rig.building.served
    reads = log.reads()
    wait_stored(rig.cloud.store, BOX, reads, 90)
    figures = assert_nothing_lost(rig.cloud.store, BOX, reads, log=log)
    print(f"\nsamples across every modem fault: {figures}")
