"""Measure the 4G modem's recovery: seconds from each injected fault to data flowing again, and the
hardware resets the ladder spends under a fault that never clears.

The rig is the one of `tests/integration/test_modem.py`: boxd in a network namespace whose only
way to the platform is the simulated modem's data bearer (`tests.support.cell`: the AT modem
simulator on a pty, ``wwan0`` going up and down with its bearer), the reference cloud in the root
namespace, a simulated building polled every 0.5 s. The ladder's timings are compressed as in the
test (`--silent-s`, default 3 s of uplink silence before acting; each rung 5-8 s to bring the link
back; pauses up to 1 s); the budgets are the defaults (3 hardware rungs an hour, 6 a day, 1 reboot).

For each fault (stall: the bearer stops carrying; detach: deregistered; wedge: the modem answers
but carries nothing until reset; stuck: the modem answers nothing until power-cycled) it prints the
rung that mended it, seconds until the ladder acted, and seconds until the first batch after it
reached the platform. Then "network searching" for `--permanent-s` seconds: the rungs climbed, the
resets, power-cycles and reboots used (the hour's budget, partly spent by the faults before, must cap
them), then the time to recover once the network is back. Figures, never assertions::

    .venv/bin/python -m bench.modem [--silent-s 3] [--permanent-s 120] [--json FILE]

Needs root (network namespaces).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.measure import print_figures
from boxd._modem_ladder import WORDS
from tests.support.boxproc import BoxProcess
from tests.support.cell import Cell
from tests.support.cloudkit import make_cloud, provision
from tests.support.simthread import SimThread
from tests.support.wait import wait_for
from tests.support.wan import retarget

BOX = "BENCH-CELL-1"
FAULTS = (("stall", "reconnect"), ("detach", "reregister"), ("wedge", "reset"), ("stuck", "power_cycle"))
HARDWARE = ("resets", "power_cycles", "box_reboots")


def _config(cell: Cell, building: SimThread, silent_s: int) -> str:
    toml = cell.modem_toml(ladder="resets_per_hour = 3\nresets_per_day = 6\nreboots_per_day = 1")
    return ("[uplink]\nkeepalive_s = 10\nreconnect_max_s = 2\nbatch_delay_ms = 100\nheartbeat_s = 5\n\n"
            + toml.replace("silent_s = 3", f"silent_s = {silent_s}") + "\n" + building.sim.points_toml(0.5))


def run(work: Path, silent_s: int, permanent_s: float) -> dict[str, object]:
    figures: dict[str, object] = {}
    with Cell(work / "cell") as cell:
        cloud = make_cloud(work / "cloud", bind="", names=[cell.platform_ip])
        cloud.start()
        try:
            with SimThread(netns=cell.ns, host="127.0.0.1", update_interval_s=0.1) as building:
                state = work / "box"
                ident = provision(cloud, state, BOX)
                retarget(ident.directory, cell.platform_ip, cloud.settings.broker_port)
                conf = state / "boxd.toml"
                conf.write_text(_config(cell, building, silent_s))
                box = BoxProcess.start(state, conf, prefix=cell.prefix(), env=cell.env())
                try:
                    _measure(cloud, cell, box, figures, permanent_s)
                finally:
                    box.stop()
        finally:
            cloud.stop()
    return figures


def _ladder(box: BoxProcess) -> dict[str, object]:
    modem = box.status().get("modem")
    return dict(modem.get("ladder") or {}) if isinstance(modem, dict) else {}


def _batches(cloud: object) -> int:
    return len(cloud.store.batch_keys(BOX))  # type: ignore[attr-defined]


def _one_fault(cloud: object, cell: Cell, box: BoxProcess, fault: str) -> tuple[str, float]:
    """Inject `fault`: (the rung that mended it, seconds from the fault to the first batch after it)."""
    t0, mono = time.time(), time.monotonic()
    cell.control(f"fault {fault}")
    last = wait_for(lambda: (r := _ladder(box).get("last_recovery")) and float(r["at"]) >= t0  # type: ignore[index]
                    and _ladder(box).get("trouble_s") is None and r, 120, f"the ladder to mend {fault}")
    n = _batches(cloud)
    mended = wait_for(lambda: _batches(cloud) > n and time.monotonic(), 120, f"a batch after {fault}")
    return str(last["rung"]), round(float(mended) - mono, 1)  # type: ignore[index]


def _measure(cloud: object, cell: Cell, box: BoxProcess, figures: dict[str, object], permanent_s: float) -> None:
    box.wait_connected(90)
    n = _batches(cloud)
    wait_for(lambda: _batches(cloud) > n + 3, 60, "data to flow")
    for fault, rung in FAULTS:
        used, seconds = _one_fault(cloud, cell, box, fault)
        figures[f"{fault}: rung"] = f"{used} (expected {rung})"
        figures[f"{fault}: s to data again"] = seconds
        time.sleep(3)  # data flows a while before the next fault
    before, logged = cell.counts(), len(box.log.read_text())
    cell.control("network searching")
    time.sleep(permanent_s)
    during = cell.counts()
    figures[f"permanent fault: hardware rungs used in {permanent_s:.0f} s"] = {
        k: int(during.get(k, 0)) - int(before.get(k, 0)) for k in HARDWARE}  # type: ignore[call-overload]
    climbed = box.log.read_text()[logged:]
    figures[f"permanent fault: rungs climbed in {permanent_s:.0f} s"] = {
        rung: climbed.count(f"modem: {words}:") for rung, words in WORDS.items()}
    figures["hardware rungs used in the run (budget: 3 an hour)"] = sum(
        int(during.get(k, 0)) for k in HARDWARE)  # type: ignore[call-overload]
    back, n = time.monotonic(), _batches(cloud)
    cell.control("network home")
    mended = wait_for(lambda: _batches(cloud) > n and time.monotonic(), 300, "data after the network came back")
    figures["network back: s to data again"] = round(float(mended) - back, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--silent-s", type=int, default=3)
    ap.add_argument("--permanent-s", type=float, default=120.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-modem-") as tmp:
        print_figures(run(Path(tmp), args.silent_s, args.permanent_s), args.json)


if __name__ == "__main__":
    main()
