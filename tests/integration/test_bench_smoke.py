"""The benchmark runs (a smoke test: it must work, not be fast; figures are never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_uplink_benchmark_runs_and_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    r = subprocess.run([sys.executable, "-m", "bench.uplink", "--seconds", "2", "--json", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert set(figures) >= {"startup_to_first_stored_s", "points_per_second", "delivered_ratio",
                            "cpu_s_per_1000_points", "peak_rss_mb", "wire_bytes_per_point"}
    assert figures["points_per_second"] > 0
