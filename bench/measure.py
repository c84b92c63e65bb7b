"""What every gateway benchmark measures the same way: CPU and memory of a process tree, the farm, latency.

Pure measurement helpers, shared by the run of boxd and the run of ThingsBoard IoT
Gateway, so both sides of a comparison are measured by the same code:

- `Tree`: CPU seconds (user + sys) and peak RSS of a process and all its descendants,
  read from /proc (children that already exited count through cutime/cstime);
- `Farm`: `bench.farm` in its own process (never on the gateway's pinned core), with
  its report of requests served and probe times once stopped;
- `latency_ms`: p50/p99 from the farm's probe log and the times the cloud stored them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support.wait import wait_for

_TICK = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parent.parent

# The keys of a gateway run's figures, in table order, with their labels.
FIGURES: dict[str, str] = {
    "points_per_second": "points delivered per second",
    "delivered_ratio": "delivered / expected",
    "requests_per_cycle": "Modbus requests per poll cycle",
    "minimum_requests_per_cycle": "  minimum for the layout (planner)",
    "cpu_s_per_1000_points": "CPU s per 1,000 points (process tree)",
    "peak_rss_mb": "peak RSS, MB",
    "wire_bytes_per_point": "TCP payload per point stored (TLS+MQTT)",
    "payload_bytes_per_point": "TCP payload per polled point",
    "ip_bytes_per_point": "IP bytes per polled point, both ways",
    "ip_up_bytes_per_point": "  of which up (gateway -> broker)",
    "ip_down_bytes_per_point": "  of which down",
    "ip_mb_per_day": "IP MB a day at this rate",
    "ip_mb_per_month": "IP MB a 30-day month at this rate",
    "latency_p50_ms": "latency p50, ms (value change -> stored)",
    "latency_p99_ms": "latency p99, ms",
    "startup_s": "start-up to first stored point, s",
}


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


class Tree:
    """A process and its descendants, measured from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._peak_kb: dict[int, int] = {}

    def pids(self) -> list[int]:
        out, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            try:
                for task in Path(f"/proc/{pid}/task").iterdir():
                    todo += [int(c) for c in (task / "children").read_text().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue
        return out

    def cpu_seconds(self) -> float:
        """User + system CPU of the whole tree so far (reaped children included)."""
        total = 0
        for pid in self.pids():
            f = _stat(pid)
            if f is not None:
                total += int(f[11]) + int(f[12]) + (int(f[13]) + int(f[14]) if pid == self.pid else 0)
        return total / _TICK

    def own_cpu_seconds(self) -> float:
        """User + system CPU of the root process alone (its children not counted)."""
        f = _stat(self.pid)
        return (int(f[11]) + int(f[12])) / _TICK if f is not None else 0.0

    def own_peak_rss_mb(self) -> float:
        """The root process's peak RSS (as sampled)."""
        return self._peak_kb.get(self.pid, 0) / 1024

    def sample_rss(self) -> None:
        """Remember each process's peak RSS (VmHWM); call now and then and before stopping."""
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self._peak_kb[pid] = max(self._peak_kb.get(pid, 0), int(line.split()[1]))
            except (FileNotFoundError, ProcessLookupError):
                continue

    def peak_rss_mb(self) -> float:
        """The sum of the peaks of every process seen in the tree."""
        return sum(self._peak_kb.values()) / 1024


class Farm:
    """`bench.farm` as a subprocess; `report()` after `stop()`."""

    def __init__(self, devices: int, points: int, base_port: int, work: Path, cpus: str | None = None, *,
                 alarm: bool = False, workload: str = "counter", prefix: Sequence[str] = ()) -> None:
        """`prefix`: a command prefix to run it under (e.g. `ip netns exec NS`, in the Box's namespace)."""
        self.report_path = work / "farm.json"
        cmd = [sys.executable, "-m", "bench.farm", "--devices", str(devices), "--points", str(points),
               "--base-port", str(base_port), "--report", str(self.report_path), "--workload", workload,
               *(["--alarm"] if alarm else [])]
        if cpus:
            cmd = ["taskset", "-c", cpus, *cmd]
        cmd = [*prefix, *cmd]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            self.proc.kill()
            raise RuntimeError("the device farm did not start (ports in use?)")

    def stop(self) -> dict[str, object]:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        wait_for(self.report_path.exists, 10, "the farm's report")
        report: dict[str, object] = json.loads(self.report_path.read_text())
        return report


def device_windows(probes: Mapping[str, Sequence[Sequence[float]]], start: float, cycles: int,
                   interval_s: float) -> dict[str, tuple[int, int]]:
    """Per device, a window of `cycles` whole poll intervals (ms) whose edges fall half an
    interval away from its polls, so that jitter never moves a poll across an edge.

    A device's polls are where the farm served its probe; its window starts half an interval
    before its first poll at or after `start` (wall-clock seconds). Counting the samples
    each device's window holds against `cycles` x its points gives the delivered ratio.
    """
    out = {}
    for device, served in probes.items():
        first = next((t for _, t in served if t >= start), None)
        if first is not None:
            lo = int((first - interval_s / 2) * 1000)
            out[device] = (lo, lo + int(cycles * interval_s * 1000))
    return out


def requests_per_cycle(report: Mapping[str, object]) -> float:
    """Modbus requests per poll cycle, from the farm's report: each device's requests divided
    by the times its probe was read (once per poll), summed over the devices."""
    requests: Mapping[str, int] = report["requests"]  # type: ignore[assignment]
    probes: Mapping[str, Sequence[object]] = report["probes"]  # type: ignore[assignment]
    return sum(n / max(1, len(probes.get(d, ()))) for d, n in requests.items())


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency_ms(probes: Mapping[str, Sequence[Sequence[float]]],
               stored: Mapping[str, Mapping[int, float]]) -> tuple[float, float, int]:
    """(p50, p99, count) of the time from the farm serving a probe value to the cloud storing it.

    `probes`: device -> [(probe value, wall time served)]; `stored`: device -> {probe value:
    wall time stored}. Values served but never stored do not count here (the delivered
    ratio shows them).
    """
    lat = []
    for device, served in probes.items():
        got = stored.get(device, {})
        for value, t in served:
            if int(value) in got:
                lat.append((got[int(value)] - t) * 1000)
    return round(percentile(lat, 0.5), 1), round(percentile(lat, 0.99), 1), len(lat)


def print_figures(figures: Mapping[str, object], json_path: Path | None = None) -> None:
    """Print one run's figures as a two-column table, then as JSON (also to `json_path`)."""
    width = max(len(k) for k in figures)
    for k, v in figures.items():
        print(f"{k:<{width}}  {v}")
    if json_path:
        json_path.write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures))


def free_port_block(count: int, start: int = 20000) -> int:
    """The first of `count` consecutive free TCP ports on 127.0.0.1."""
    import socket

    base = start
    while base < 60000:
        try:
            socks = []
            for p in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            base += count
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no block of free ports")


def print_phases(figures: Mapping[str, Mapping[str, object]]) -> None:
    """Print figures by phase as a Markdown table (a column a phase, a row a figure), then as JSON."""
    cols = list(figures)
    print(f"| figure | {' | '.join(cols)} |\n|---|{'---:|' * len(cols)}")
    for row in figures[cols[0]]:
        print(f"| {row} | {' | '.join(str(figures[c].get(row, '')) for c in cols)} |")
    print(json.dumps(figures))
