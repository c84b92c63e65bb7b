"""The benchmark runs (a smoke test: it must work, not be fast; figures are never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gateway import URGENT_FIGURES
from bench.measure import FIGURES


def test_gateway_benchmark_runs_boxd_and_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    r = subprocess.run([sys.executable, "-m", "bench.gateway", "--case", "tiny", "--gateway", "boxd", "--pin", "yes",
                        "--settings", "defaults", "--seconds", "2", "--json", str(out)],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    (figures,) = json.loads(out.read_text()).values()
    assert set(figures) >= set(FIGURES) | set(URGENT_FIGURES)
    assert figures["urgent_probes"] > 0  # the alarm device's urgent probe was measured
    assert figures["points_per_second"] > 0
    assert figures["minimum_requests_per_cycle"] == 6  # 2 devices: input registers, holding registers, coils
    assert "bytes on the wire per point" in r.stdout  # the table


def _run_bench(module: str, out: Path, *args: str) -> dict[str, object]:
    r = subprocess.run([sys.executable, "-m", module, *args, "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    figures: dict[str, object] = json.loads(out.read_text())
    return figures


def test_backlog_benchmark_drains_every_sample_once_and_reports_every_figure(tmp_path: Path) -> None:
    figures = _run_bench("bench.backlog", tmp_path / "backlog.json", "--samples", "20000")
    assert set(figures) >= {"drain_s", "connect_s", "points_per_second", "points_per_second_from_connect",
                            "boxd_cpu_s", "receiver_cpu_s", "broker_cpu_s", "batches_stored"}
    assert figures["stored"] == figures["stored_distinct"] == 20000 and figures["stored_exact"] is True


@pytest.mark.skipif(not Path("/dev/fuse").exists(), reason="no /dev/fuse for the slow-disk file system")
def test_reconnect_benchmark_counts_a_resumed_reconnection(tmp_path: Path) -> None:
    figures = _run_bench("bench.reconnect", tmp_path / "reconnect.json", "--reconnects", "1", "--points", "100")
    assert figures["resumed_handshakes"] == 1 and figures["tables_sent_by_publisher"] == 1
    assert int(str(figures["reconnection_total"])) > 0


def test_loop_stall_benchmark_measures_the_loop_on_a_slow_disk(tmp_path: Path) -> None:
    figures = _run_bench("bench.loop_stall", tmp_path / "stall.json", "--case", "tiny", "--seconds", "2")
    (run,) = figures.values()
    assert isinstance(run, dict) and set(run) >= {"loop_stall_max_ms", "loop_stall_p99_ms", "probe_wakeups"}
    assert run["probe_wakeups"] > 50 and run["points_stored_per_second"] > 0


def test_ingest_benchmark_stores_every_sample_once_both_ways(tmp_path: Path) -> None:
    for mode in ("broker", "direct"):
        figures = _run_bench("bench.ingest", tmp_path / f"ingest-{mode}.json", "--samples", "20000",
                             "--mode", mode)
        assert set(figures) >= {"seconds", "points_per_second", "cpu_s", "core_busy", "us_cpu_per_point"}
        assert figures["mode"] == mode and figures["rejected"] == 0
        assert figures["stored"] == 20000 and figures["stored_exact"] is True


def test_gateway_benchmark_runs_thingsboard_beside_it(tmp_path: Path) -> None:
    """ThingsBoard IoT Gateway from PyPI in its own venv (installed once, ~2 min) on the same tiny case."""
    out = tmp_path / "figures.json"
    r = subprocess.run([sys.executable, "-m", "bench.gateway", "--case", "tiny", "--gateway", "thingsboard",
                        "--pin", "no", "--seconds", "2", "--json", str(out)], capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    (figures,) = json.loads(out.read_text()).values()
    assert set(figures) >= set(FIGURES)
    assert figures["points_per_second"] > 0
    assert figures["requests_per_cycle"] > figures["minimum_requests_per_cycle"]  # one request per coil, at least


def test_ota_benchmark_updates_one_box_and_reports_every_figure(tmp_path: Path) -> None:
    figures = _run_bench("bench.ota", tmp_path / "ota.json")
    assert _number(figures["bundle files"]) > 10
    assert (_number(figures["bytes downloaded by the Box (TUF metadata + bundle, TLS), kB"])
            >= _number(figures["bundle size, kB"]))
    assert all(isinstance(v, int | float) and v >= 0 for v in figures.values()), figures


def _number(value: object) -> float:
    assert isinstance(value, int | float), value
    return value


def _last_json(stdout: str) -> dict[str, dict[str, float]]:
    figures: dict[str, dict[str, float]] = json.loads(stdout.strip().splitlines()[-1])
    return figures


def test_attacks_benchmark_runs_every_phase() -> None:
    r = subprocess.run([sys.executable, "-m", "bench.attacks", "--settle", "1"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    figures = _last_json(r.stdout)
    assert set(figures) == {"baseline", "bombs", "tables"}
    assert all(f["victim batches"] > 0 for f in figures.values())


def test_https_clients_benchmark_runs_both_attacks() -> None:
    r = subprocess.run([sys.executable, "-m", "bench.https_clients", "--slow", "5", "--idle", "20", "--hold", "4"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    figures = _last_json(r.stdout)
    assert len(figures) == 5 and all("threads" in f for f in figures.values())
