"""The benchmark runs (a smoke test: it must work, not be fast; figures are never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.measure import FIGURES


def test_gateway_benchmark_runs_boxd_and_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    r = subprocess.run([sys.executable, "-m", "bench.gateway", "--case", "tiny", "--gateway", "boxd", "--pin", "yes",
                        "--seconds", "2", "--json", str(out)], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    (figures,) = json.loads(out.read_text()).values()
    assert set(figures) >= set(FIGURES)
    assert figures["points_per_second"] > 0
    assert figures["minimum_requests_per_cycle"] == 6  # 2 devices: input registers, holding registers, coils
    assert "bytes on the wire per point" in r.stdout  # the table
