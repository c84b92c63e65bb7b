"""Measure the Box's uplink on the real path: building simulator -> boxd -> counting proxy -> Mosquitto (mTLS) -> cloud.

Prints a table and JSON: start-up time (boxd process start to first sample stored in
the cloud), points delivered per second and the delivered/expected ratio, boxd CPU
seconds per 1,000 points, boxd peak RSS, and bytes on the wire per point (TLS and MQTT
included, counted on the socket by a proxy, both directions).

    .venv/bin/python -m bench.uplink [--seconds 20] [--poll 0.2]

Figures, never assertions: CI runs it only as a smoke test (`--seconds 3`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from tests.support.boxproc import BoxProcess
from tests.support.cloudkit import make_cloud, provision
from tests.support.simthread import SimThread
from tests.support.tcpproxy import CountingProxy
from tests.support.wait import wait_for


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run(seconds: float, poll_s: float) -> dict[str, float]:
    """One measured run; returns the figures."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, SimThread(update_interval_s=0.1) as building:
        root = Path(tmp)
        cloud = make_cloud(root / "cloud")
        cloud.start()
        try:
            with CountingProxy("127.0.0.1", cloud.settings.broker_port) as proxy:
                ident = provision(cloud, root / "box", "BENCH-1")
                meta = ident.directory / "identity.json"
                meta.write_text(meta.read_text().replace(f": {cloud.settings.broker_port}", f": {proxy.port}"))
                conf = root / "box" / "boxd.toml"
                conf.write_text("[uplink]\nbatch_delay_ms = 200\n\n" + building.sim.points_toml(poll_s))
                points = building.sim.points_toml(poll_s).count("[[modbus_tcp.points]]")
                t0 = time.monotonic()
                box = BoxProcess.start(root / "box", conf)
                try:
                    wait_for(lambda: cloud.store.latest("BENCH-1"), 30, "the first sample")
                    startup = time.monotonic() - t0
                    stored0 = len(cloud.store.samples("BENCH-1"))
                    cpu0, bytes0, m0 = _cpu_seconds(box.proc.pid), proxy.upstream_bytes + proxy.downstream_bytes, \
                        time.monotonic()
                    time.sleep(seconds)  # the measurement window (a benchmark, not a test)
                    stored = len(cloud.store.samples("BENCH-1")) - stored0
                    window = time.monotonic() - m0
                    cpu = _cpu_seconds(box.proc.pid) - cpu0
                    wire = proxy.upstream_bytes + proxy.downstream_bytes - bytes0
                    rss = _peak_rss_mb(box.proc.pid)
                finally:
                    box.stop()
        finally:
            cloud.stop()
    expected = points * window / poll_s
    return {
        "points_configured": points,
        "poll_interval_s": poll_s,
        "startup_to_first_stored_s": round(startup, 3),
        "points_per_second": round(stored / window, 1),
        "delivered_ratio": round(stored / expected, 3),
        "cpu_s_per_1000_points": round(1000 * cpu / max(stored, 1), 4),
        "peak_rss_mb": round(rss, 1),
        "wire_bytes_per_point": round(wire / max(stored, 1), 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.uplink", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=20.0, help="measurement window (default %(default)s)")
    p.add_argument("--poll", type=float, default=0.2, help="poll interval of every device (default %(default)s)")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    args = p.parse_args(argv)
    figures = run(args.seconds, args.poll)
    width = max(len(k) for k in figures)
    for k, v in figures.items():
        print(f"{k:<{width}}  {v}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
