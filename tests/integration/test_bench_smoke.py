"""The benchmark runs (a smoke test: it must work, not be fast; figures are never asserted)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gateway import URGENT_FIGURES
from bench.measure import FIGURES
from bench.simlink import SimLink
from tests.support.wait import wait_for

# A benchmark's own deadline (the subprocess's timeout) bounds its test, not the suite's 120 s: a
# benchmark's run is long, and longer on a machine that runs other tests beside it
SLACK_S = 30


@pytest.mark.timeout(180 + SLACK_S)
def test_gateway_benchmark_runs_boxd_at_its_defaults_reporting_on_change_on_the_building_trace(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    r = _bench(["bench.gateway", "--case", "tiny", "--gateway", "boxd", "--pin", "yes", "--settings", "defaults",
                "--seconds", "2", "--workload", "building", "--report", "change", "--json", str(out)], 180)
    assert r.returncode == 0, r.stderr[-2000:]
    (figures,) = json.loads(out.read_text()).values()
    assert set(figures) >= set(FIGURES) | set(URGENT_FIGURES)
    assert figures["urgent_probes"] > 0  # the alarm device's urgent probe was measured
    # every value of every poll, counted against the farm's polls: a value, or a poll found unchanged
    assert figures["delivered_ratio"] == 1.0
    assert figures["minimum_requests_per_cycle"] == 6  # 2 devices: input registers, holding registers, coils
    # the SIM's bytes: every IP header and acknowledgement on top of the TCP payload, both ways
    assert figures["ip_bytes_per_point"] > figures["payload_bytes_per_point"] > 0
    assert figures["ip_up_bytes_per_point"] > figures["ip_down_bytes_per_point"] > 0
    assert "IP bytes per polled point" in r.stdout  # the table


def test_simlink_counts_the_ip_bytes_of_a_connection_exactly(tmp_path: Path) -> None:
    """1,000 bytes sent from the gateway's namespace through the link: the proxy counts the payload, the
    interface counters the IP packets and nothing else (no ARP, no IPv6): each packet 20 bytes of IP
    header and 32 of TCP (Linux's timestamps option), the SYN and SYN-ACK 8 more (MSS, SACK, window scale)."""
    with socket.create_server(("127.0.0.1", 0)) as sink:
        cloud_ip, box_ip = SimLink.addresses()
        with SimLink(sink.getsockname()[1], cloud_ip, box_ip) as link:
            before = link.counts()
            send = (f"import socket; s = socket.create_connection(({cloud_ip!r}, {link.port})); "
                    "s.sendall(b'x' * 1000); s.shutdown(socket.SHUT_WR); s.recv(1); s.close()")
            client = subprocess.Popen([*link.prefix(), sys.executable, "-c", send])
            conn, _ = sink.accept()
            with conn:
                got = b""
                while chunk := conn.recv(4096):
                    got += chunk
            assert client.wait(30) == 0 and got == b"x" * 1000
            wait_for(lambda: (link.counts() - before).ip.down_packets >= 3, 10, "the connection's end")
            d = link.counts() - before
    assert (d.payload_up, d.payload_down) == (1000, 0)
    assert 3 <= d.ip.up_packets <= 8 and 3 <= d.ip.down_packets <= 8  # handshake, data, its ack, the close
    assert d.ip.up_bytes == 1000 + 52 * d.ip.up_packets + 8
    assert d.ip.down_bytes == 52 * d.ip.down_packets + 8


@pytest.mark.timeout(300 + SLACK_S)
def test_simbytes_benchmark_reports_every_phase(tmp_path: Path) -> None:
    figures = _run_bench("bench.simbytes", tmp_path / "simbytes.json", "--points", "20", "--repeat", "1",
                         "--idle-s", "1", "--quiet-s", "0.5")
    phases = {k: v for k, v in figures.items() if isinstance(v, dict)}
    assert len(phases) == 6, list(figures)
    for name, phase in phases.items():
        if not name.startswith("idle"):  # a second of idling may well carry nothing
            assert phase["ip_bytes"] > phase["payload_bytes"] > 0, (name, phase)
    # a reconnection costs a TLS handshake with the certificate chain: kilobytes, not bytes
    assert phases["reconnection"]["ip_bytes"] > 2000


def _bench(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a benchmark in a session of its own; if the test ends first (its timeout), the benchmark ends
    with everything it started (a cloud, a broker, boxd): nothing is left running beside the next test."""
    with subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _run_bench(module: str, out: Path, *args: str) -> dict[str, object]:
    r = _bench([module, *args, "--json", str(out)], 300)
    assert r.returncode == 0, r.stderr[-3000:]
    figures: dict[str, object] = json.loads(out.read_text())
    return figures


@pytest.mark.timeout(300 + SLACK_S)
def test_backlog_benchmark_drains_every_sample_once_and_reports_every_figure(tmp_path: Path) -> None:
    figures = _run_bench("bench.backlog", tmp_path / "backlog.json", "--samples", "20000")
    assert set(figures) >= {"drain_s", "connect_s", "points_per_second", "points_per_second_from_connect",
                            "boxd_cpu_s", "receiver_cpu_s", "broker_cpu_s", "batches_stored"}
    assert figures["stored"] == figures["stored_distinct"] == 20000 and figures["stored_exact"] is True


@pytest.mark.timeout(300 + SLACK_S)
@pytest.mark.skipif(not Path("/dev/fuse").exists(), reason="no /dev/fuse for the slow-disk file system")
def test_reconnect_benchmark_counts_a_resumed_reconnection(tmp_path: Path) -> None:
    figures = _run_bench("bench.reconnect", tmp_path / "reconnect.json", "--reconnects", "1", "--points", "100")
    assert figures["resumed_handshakes"] == 1 and figures["tables_sent_by_publisher"] == 1
    assert int(str(figures["reconnection_total"])) > 0


@pytest.mark.timeout(300 + SLACK_S)
def test_loop_stall_benchmark_measures_the_loop_on_a_slow_disk(tmp_path: Path) -> None:
    figures = _run_bench("bench.loop_stall", tmp_path / "stall.json", "--case", "tiny", "--seconds", "2")
    (run,) = figures.values()
    assert isinstance(run, dict) and set(run) >= {"loop_stall_max_ms", "loop_stall_p99_ms", "probe_wakeups"}
    assert run["probe_wakeups"] > 50 and run["points_stored_per_second"] > 0


@pytest.mark.timeout(600 + SLACK_S)
def test_ingest_benchmark_stores_every_sample_once_both_ways(tmp_path: Path) -> None:
    for mode in ("broker", "direct"):
        figures = _run_bench("bench.ingest", tmp_path / f"ingest-{mode}.json", "--samples", "20000",
                             "--mode", mode)
        assert set(figures) >= {"seconds", "points_per_second", "cpu_s", "core_busy", "us_cpu_per_point"}
        assert figures["mode"] == mode and figures["rejected"] == 0
        assert figures["stored"] == 20000 and figures["stored_exact"] is True


@pytest.mark.timeout(900 + SLACK_S)
def test_gateway_benchmark_runs_thingsboard_beside_it(tmp_path: Path) -> None:
    """ThingsBoard IoT Gateway from PyPI in its own venv (installed once, ~2 min) on the same tiny case."""
    out = tmp_path / "figures.json"
    r = _bench(["bench.gateway", "--case", "tiny", "--gateway", "thingsboard", "--pin", "no", "--seconds", "2",
                "--json", str(out)], 900)
    assert r.returncode == 0, r.stderr[-2000:]
    (figures,) = json.loads(out.read_text()).values()
    assert set(figures) >= set(FIGURES)
    assert figures["points_per_second"] > 0
    assert figures["requests_per_cycle"] > figures["minimum_requests_per_cycle"]  # one request per coil, at least


@pytest.mark.timeout(300 + SLACK_S)
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


@pytest.mark.timeout(300 + SLACK_S)
def test_attacks_benchmark_runs_every_phase() -> None:
    r = _bench(["bench.attacks", "--settle", "1"], 300)
    assert r.returncode == 0, r.stderr[-3000:]
    figures = _last_json(r.stdout)
    assert set(figures) == {"baseline", "bombs", "tables"}
    assert all(f["victim batches"] > 0 for f in figures.values())


@pytest.mark.timeout(300 + SLACK_S)
def test_https_clients_benchmark_runs_both_attacks() -> None:
    r = _bench(["bench.https_clients", "--slow", "5", "--idle", "20", "--hold", "4"], 300)
    assert r.returncode == 0, r.stderr[-3000:]
    figures = _last_json(r.stdout)
    assert len(figures) == 5 and all("threads" in f for f in figures.values())


def test_service_rss_benchmark_measures_both_ways_of_running_the_service(tmp_path: Path) -> None:
    out = tmp_path / "rss.json"
    r = subprocess.run([sys.executable, "-m", "bench.service_rss", "--case", "tiny", "--seconds", "1", "--json",
                        str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = {f["mode"]: f for f in json.loads(out.read_text())}
    # one process either way: `boxd launch` becomes the daemon of its slot (no second interpreter)
    assert len(runs["run"]["processes"]) == 1 and len(runs["launch"]["processes"]) == 1, runs
    assert runs["launch"]["processes"][0]["cmd"].endswith(" run"), runs
    assert all(f["service_rss_max_mb"] > 0 for f in runs.values())


@pytest.mark.timeout(300 + SLACK_S)
def test_fleet_benchmark_stores_every_batch_of_every_box_across_a_broker_restart(tmp_path: Path) -> None:
    """20 simulated Boxes, each its own certificate, against `boxcloud run`; the broker restarted."""
    figures = _run_bench("bench.fleet", tmp_path / "fleet.json", "--boxes", "20", "--procs", "1", "--duration", "4",
                         "--period", "2", "--connect-rate", "40", "--restart", "--after", "4",
                         "--reconnect-spread", "2", "--reconnect-max", "4",
                         "--cache", str(tmp_path / "cache"))
    assert set(figures) >= {"batches_per_s", "points_per_s", "latency_p50_ms", "latency_p99_ms", "cpu_s_broker",
                            "cpu_s_receiver_process", "rss_mb_broker", "restart_all_back_s",
                            "restart_busiest_second_share"}
    assert figures["connected"] == 20 and figures["restart_back"] == 20  # every Box, and again after the restart
    sent = figures["batches_sent"]
    assert isinstance(sent, int) and sent >= 20 * 4  # each Box sent batches before and after the restart
    assert figures["batches_stored"] == sent and figures["lost"] == 0 and figures["unacked_at_end"] == 0
