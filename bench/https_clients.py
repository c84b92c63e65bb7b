"""Measure what slow and idle clients hold on the enrollment/OTA HTTPS port (issue 12, finding 3).

A reference cloud runs as `boxcloud run` in its own process. Two attacks, one after the other:

- ``slow``: `--slow` clients complete the TLS handshake, send the start of a request, then one
  more byte every 5 s (slowloris);
- ``idle``: `--idle` TCP connections that never start TLS.

During each (sampled 3 s and `--hold` s after it started): the cloud process's threads, the TCP
connections to the port that the server holds (ESTABLISHED, from /proc/net/tcp), its RSS, how many
of the attacker's connections are still open, and the time a legitimate `GET /v1/health` takes.

    .venv/bin/python -m bench.https_clients [--slow 200] [--idle 2000] [--hold 20]

Figures, never assertions; it runs against any checkout with `boxcloud`, so the same script measured
the endpoint before the fix.
"""

from __future__ import annotations

import argparse
import http.client
import math
import resource
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.measure import print_phases


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _source(i: int) -> tuple[str, int]:
    """Attackers come from 127.0.1.1 .. 127.0.1.50 (the health check from 127.0.0.1)."""
    return (f"127.0.1.{1 + i % 50}", 0)


def _held(port: int) -> int:
    """ESTABLISHED TCP connections whose local port is `port` (the server's side)."""
    n = 0
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(f).read_text().splitlines()[1:]:
            cols = line.split()
            if int(cols[1].split(":")[1], 16) == port and cols[3] == "01":
                n += 1
    return n


def _proc(pid: int) -> tuple[int, float]:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(status["Threads"]), int(status["VmRSS"].split()[0]) / 1024


def _health_ms(ctx: ssl.SSLContext, port: int) -> float:
    t = time.monotonic()
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=30)
    try:
        conn.request("GET", "/v1/health")
        conn.getresponse().read()
    except (OSError, http.client.HTTPException):
        return float("nan")
    finally:
        conn.close()
    return round((time.monotonic() - t) * 1000, 1)


def _alive(socks: list[socket.socket]) -> int:
    n = 0
    for s in socks:
        try:
            s.settimeout(0)
            n += s.recv(1) != b""
        except (BlockingIOError, ssl.SSLWantReadError):
            n += 1
        except OSError:
            pass
    return n


def _slow(port: int, ctx: ssl.SSLContext, n: int, stop: threading.Event) -> list[socket.socket]:
    socks: list[socket.socket] = []
    for i in range(n):
        try:
            raw = socket.create_connection(("localhost", port), timeout=5, source_address=_source(i))
            s = ctx.wrap_socket(raw, server_hostname="localhost")
            s.sendall(b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        except OSError:
            pass

    def trickle() -> None:
        while not stop.wait(5):
            for s in socks:
                try:
                    s.sendall(b"X")
                except OSError:
                    pass
    threading.Thread(target=trickle, daemon=True).start()
    return socks


def _idle(port: int, n: int) -> list[socket.socket]:
    socks = []
    for i in range(n):
        s = socket.socket()
        s.bind(_source(i))
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            continue
        socks.append(s)
    return socks


def run(slow: int, idle: int, hold: float) -> dict[str, dict[str, float]]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, idle + slow + 1000)), hard))
    with tempfile.TemporaryDirectory(prefix="bench-https-") as tmp:
        home = Path(tmp) / "cloud"
        port = _free_port()
        subprocess.run([sys.executable, "-m", "cloud.cli", "--home", str(home), "init", "--broker-port",
                        str(_free_port()), "--enroll-port", str(port), "--api-port", str(_free_port())],
                       check=True, capture_output=True)
        cloud = subprocess.Popen([sys.executable, "-m", "cloud.cli", "--home", str(home), "run"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ctx = ssl.create_default_context(cafile=str(home / "pki" / "root.crt"))
        try:
            deadline = time.monotonic() + 60
            while math.isnan(_health_ms(ctx, port)):  # until it answers
                if time.monotonic() > deadline:
                    raise SystemExit("bench.https_clients: the cloud did not start")
                time.sleep(0.3)
            out: dict[str, dict[str, float]] = {}
            threads, rss = _proc(cloud.pid)
            out["quiet"] = {"threads": threads, "connections held": _held(port), "RSS, MB": round(rss, 1),
                            "attackers still connected": 0, "health request, ms": _health_ms(ctx, port)}
            for name, count in (("slow", slow), ("idle", idle)):
                stop = threading.Event()
                started = time.monotonic()
                socks = _slow(port, ctx, count, stop) if name == "slow" else _idle(port, count)
                for at in (3.0, hold):
                    time.sleep(max(0.0, started + at - time.monotonic()))
                    threads, rss = _proc(cloud.pid)
                    out[f"{count} {name}, {at:g} s"] = {
                        "threads": threads, "connections held": _held(port), "RSS, MB": round(rss, 1),
                        "attackers still connected": _alive(socks) if name == "slow" else _held(port),
                        "health request, ms": _health_ms(ctx, port)}
                stop.set()
                for s in socks:
                    s.close()
                time.sleep(3)
            return out
        finally:
            cloud.send_signal(signal.SIGTERM)
            try:
                cloud.wait(30)
            except subprocess.TimeoutExpired:
                cloud.kill()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slow", type=int, default=200)
    p.add_argument("--idle", type=int, default=2000)
    p.add_argument("--hold", type=float, default=20.0, help="seconds after an attack starts to measure (default 20)")
    args = p.parse_args()
    print_phases(run(args.slow, args.idle, args.hold))


if __name__ == "__main__":
    main()
