"""The resident cost of the whole boxd service (every process of the unit) at 10,000 points.

    .venv/bin/python -m bench.service_rss                  # 50 x 200 points, both ways
    .venv/bin/python -m bench.service_rss --case tiny      # a smoke run

boxd polls the bench farm (`bench.farm`, `bench.workload`'s "large" case: 50 devices x 200
points, every second) and delivers to the reference cloud, started the two ways a service runs
it:

- ``run``: the daemon alone, as on the Box image (systemd runs ``boxd run``; the boot loader
  chooses the slot);
- ``launch``: on a generic Linux install, ``boxd launch`` (the directory-slot launcher,
  `ota.launcher`), which chooses the slot and becomes its daemon (exec: one process).

Once every device's data is flowing it samples, every 0.5 s for `--seconds`, each process of
the tree: RSS now (VmRSS) and its peak (VmHWM). Printed per process and summed (the service's
figure; the budget is 45 MB). Figures only, never assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.gateway import BATCH_DELAY_MS, CASES
from bench.measure import ROOT, Farm, Tree, free_port_block
from bench.workload import boxd_toml, layout
from tests.support.boxproc import stop_process
from tests.support.cloudkit import make_cloud, provision
from tests.support.wait import wait_for

BOX = "RSS-1"
UPLINK = f"[uplink]\nbatch_delay_ms = {BATCH_DELAY_MS}\n\n"


def _status_kb(pid: int) -> tuple[str, int, int]:
    """(command, VmRSS kB, VmHWM kB) of a process; ("", 0, 0) once it is gone."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if ":" in line)
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return "", 0, 0
    return cmd.strip(), int(fields.get("VmRSS", "0 kB").split()[0]), int(fields.get("VmHWM", "0 kB").split()[0])


def measure(mode: str, case: str, seconds: float, work: Path) -> dict[str, object]:
    devices, points = CASES[case]
    devs = layout(devices, points, free_port_block(devices))
    cloud = make_cloud(work / "cloud")
    cloud.start()
    farm = Farm(devices, points, devs[0].port, work)
    proc = None
    try:
        state = work / "box"
        provision(cloud, state, BOX)
        conf = state / "boxd.toml"
        conf.write_text(UPLINK + boxd_toml(devs, "127.0.0.1", 1.0))
        subprocess.run([sys.executable, "-m", "boxd.cli", "--state-dir", str(state), "--config", str(conf),
                        "check-config"], check=True, capture_output=True)
        env = {**os.environ, "BOXD_SOFTWARE_DIR": str(state / "software")}
        with (work / "boxd.log").open("ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "boxd.cli", "--state-dir", str(state), "--config",
                                     str(conf), mode], cwd=ROOT, env=env, stdout=log, stderr=log,
                                    stdin=subprocess.DEVNULL)
        expected = {d.name for d in devs}
        wait_for(lambda: {p.partition(".")[0] for p, *_ in cloud.store.latest(BOX)} >= expected, 300,
                 "data from every device")
        tree = Tree(proc.pid)
        peak: dict[int, tuple[str, int, int]] = {}
        rss_sum: list[int] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            total = 0
            for pid in tree.pids():
                cmd, rss, hwm = _status_kb(pid)
                if cmd:
                    total += rss
                    old = peak.get(pid, ("", 0, 0))
                    peak[pid] = (cmd, max(old[1], rss), max(old[2], hwm))
            rss_sum.append(total)
            time.sleep(0.5)  # the sampling period of a benchmark
    finally:
        if proc is not None:
            stop_process(proc, 20)
        farm.stop()
        cloud.stop()
    return {
        "mode": mode, "points": devices * points,
        "processes": [{"cmd": c[-80:], "rss_max_mb": round(r / 1024, 1), "hwm_mb": round(h / 1024, 1)}
                      for c, r, h in peak.values()],
        "service_rss_max_mb": round(max(rss_sum) / 1024, 1),
        "service_peak_hwm_mb": round(sum(h for _, _, h in peak.values()) / 1024, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.service_rss", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--case", choices=list(CASES), default="large", help="workload (default: large, 10,000 points)")
    p.add_argument("--mode", choices=["run", "launch", "both"], default="both")
    p.add_argument("--seconds", type=float, default=20.0, help="sampling window, s (default %(default)s)")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "service_rss.json")
    args = p.parse_args(argv)
    results = []
    for mode in (["run", "launch"] if args.mode == "both" else [args.mode]):
        with tempfile.TemporaryDirectory(prefix=f"bench-rss-{mode}-") as tmp:
            results.append(measure(mode, args.case, args.seconds, Path(tmp)))
    for r in results:
        print(f"boxd {r['mode']} at {r['points']} points: the service's RSS at most {r['service_rss_max_mb']} MB "
              f"(sum of peaks {r['service_peak_hwm_mb']} MB)")
        for proc in r["processes"]:  # type: ignore[attr-defined]
            print(f"    {proc['rss_max_mb']:6.1f} MB RSS (peak {proc['hwm_mb']:.1f})  {proc['cmd']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
