"""Measure an update: the bundle, its installation, and one Box updated through the real cloud.

A release of this source tree is built and published in a reference cloud's TUF repository;
one Box (`boxd launch`, a Modbus TCP simulator behind it) is sent the ``update`` command
through a counting proxy in front of the cloud's HTTPS endpoint. Prints:

- the bundle: size on the wire, files, unpacked size, build time; unpacking and checking it;
- the update on the Box, from the command: downloaded and unpacked (the release directory
  appears), switched (``slot.json`` says so), committed (the new version healthy);
- bytes the Box downloaded (TUF metadata and the bundle, TLS included);
- the memory of the launcher, of the daemon before the update and while it downloads, of the
  download process (python-tuf runs there, not in the daemon), and of the new daemon; the CPU
  of the process tree.

    .venv/bin/python -m bench.ota [--health-s 30]

Figures, never assertions (this machine, x86-64; not an ARM Box).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench.measure import Tree, print_figures
from boxkit.machine import hardware_id
from cloud import release
from ota import bundle, slots
from tests.support.cloudkit import make_cloud
from tests.support.faultproxy import FaultProxy
from tests.support.otakit import HEAD, SOURCE, LaunchedBox, publish
from tests.support.simthread import SimThread
from tests.support.wait import wait_for


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _daemon_pid(box: LaunchedBox) -> int:
    pid = box.status().get("pid")
    return pid if isinstance(pid, int) else 0


def measure(work: Path, health_s: int) -> dict[str, object]:
    figures: dict[str, object] = {}
    t = time.perf_counter()
    built = release.build(SOURCE, work / "build", "0.2.0", [hardware_id()])
    figures["bundle build, s"] = round(time.perf_counter() - t, 3)
    manifest = release.read_manifest(built)
    figures["bundle size, kB"] = round(built.stat().st_size / 1000, 1)
    figures["bundle files"] = len(manifest.files)
    t = time.perf_counter()
    bundle.extract(built, work / "unpacked")
    figures["unpack and check every file, s"] = round(time.perf_counter() - t, 3)
    figures["unpacked size, kB"] = round(sum(p.stat().st_size for p in (work / "unpacked").rglob("*")
                                             if p.is_file()) / 1000, 1)

    cloud = make_cloud(work / "cloud")
    cloud.start()
    proxy = FaultProxy("127.0.0.1", cloud.settings.enroll_port).start()
    try:
        with SimThread(update_interval_s=0.2) as building:
            box = LaunchedBox(cloud, work / "box", "BENCH-OTA-1", HEAD + building.sim.points_toml(1.0), start=False)
            meta = box.state / "identity" / "identity.json"
            meta.write_text(json.dumps({**json.loads(meta.read_text()), "server": f"https://127.0.0.1:{proxy.port}"}))
            box.start()
            try:
                assert box.proc is not None
                box.wait_running("0.1.0")
                launcher = Tree(box.proc.pid)
                old_pid = _daemon_pid(box)
                figures["launcher RSS, MB"] = round(_rss_mb(box.proc.pid), 1)
                figures["daemon RSS before the update, MB"] = round(_rss_mb(old_pid), 1)
                publish(cloud, work / "out", "0.2.0")
                cpu0, bytes0 = launcher.cpu_seconds(), proxy.downstream_bytes
                peak_old = peak_fetch = 0.0
                t0 = time.monotonic()
                cloud.send_command(box.box_id, "update", {"deployment": "d-bench", "target": "boxd-0.2.0.tar.gz",
                                                         "version": "0.2.0", "health_s": health_s})

                def installed() -> bool:
                    nonlocal peak_old, peak_fetch
                    peak_old = max(peak_old, _rss_mb(old_pid))
                    for child in Tree(old_pid).pids()[1:]:  # the download process
                        peak_fetch = max(peak_fetch, _rss_mb(child))
                    return (slots.release_dir(box.software, "0.2.0") / "manifest.json").exists()

                wait_for(installed, 120, "the release to be unpacked", step=0.01)
                t_installed = time.monotonic()
                wait_for(lambda: box.slot().active == "0.2.0", 60, "the switch", step=0.01)
                t_switched = time.monotonic()
                box.wait_committed("0.2.0", 120)
                t_committed = time.monotonic()
                figures["command to downloaded and unpacked, s"] = round(t_installed - t0, 2)
                figures["command to switched, s"] = round(t_switched - t0, 2)
                figures["switch to committed (restart, connect, every bus polled, a batch acked), s"] = round(
                    t_committed - t_switched, 2)
                figures["command to committed, s"] = round(t_committed - t0, 2)
                figures["bytes downloaded by the Box (TUF metadata + bundle, TLS), kB"] = round(
                    (proxy.downstream_bytes - bytes0) / 1000, 1)
                figures["CPU of launcher + daemons during the update, s"] = round(launcher.cpu_seconds() - cpu0, 2)
                figures["daemon RSS while it downloads, MB"] = round(peak_old, 1)
                figures["download process (python-tuf) RSS, MB"] = round(peak_fetch, 1)
                figures["new daemon RSS after commit, MB"] = round(_rss_mb(_daemon_pid(box)), 1)
            finally:
                box.stop()
    finally:
        proxy.stop()
        cloud.stop()
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.ota", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--health-s", type=int, default=30, help="the trial's deadline (default %(default)s)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-ota-") as tmp:
        print_figures(measure(Path(tmp), args.health_s), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
