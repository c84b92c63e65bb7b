"""A cheap HTTPS load generator for the benchmarks: processes, each with one keep-alive TLS connection
sending the same GET one after the other, timing each, and the CPU each process and the server spent.

Why not `requests` (what the first figures used): its per-request work (a `PreparedRequest`, urllib3's
pool, `http.client`'s header parsing through `email`) cost the clients about as much CPU as the server
spent answering, on the same two cores. Here a client sends bytes prepared once and reads the
response by its Content-Length: a TLS record each way and little else, like `wrk` but in Python (no
tool to install). Each response's status is checked (anything but 200 stops the run with its text).

The clients start, connect (TLS handshake) and wait at a barrier, so that the timed span is requests
only; the caller's own CPU time over that span is the server's when the server runs in the caller's
process (`bench.api`). Figures, never assertions.
"""

from __future__ import annotations

import multiprocessing
import socket
import ssl
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from urllib.parse import urlsplit

from bench.measure import percentile


@dataclass
class Load:
    """What `run` measured."""

    requests: int
    seconds: float
    latencies: list[float]
    client_cpu_s: float  # all the clients together
    server_cpu_s: float  # the calling process over the same span

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def summary(self) -> dict[str, float]:
        return {"requests": self.requests, "rps": self.rps, "p50_ms": percentile(self.latencies, 0.5) * 1000,
                "p99_ms": percentile(self.latencies, 0.99) * 1000,
                "server_cpu_us": self.server_cpu_s / max(1, self.requests) * 1e6,
                "client_cpu_us": self.client_cpu_s / max(1, self.requests) * 1e6,
                "client_share": self.client_cpu_s / max(1e-9, self.client_cpu_s + self.server_cpu_s)}


def _read_response(sock: ssl.SSLSocket, buf: bytearray) -> tuple[int, bytes]:
    """(status, body) of one response; what follows it stays in `buf`."""
    while (end := buf.find(b"\r\n\r\n")) < 0:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buf += chunk
    head = bytes(buf[:end]).lower()
    del buf[:end + 4]
    status, length = int(head[9:12]), -1
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name == b"content-length":
            length = int(value)
    if length < 0:
        raise ConnectionError(f"a response without Content-Length: {head[:200]!r}")
    while len(buf) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buf += chunk
    body = bytes(buf[:length])
    del buf[:length]
    return status, body


def _client(url: str, ca: str, headers: dict[str, str], seconds: float, ready: Connection, go: Event,
            out: Connection) -> None:
    u = urlsplit(url)
    host, port = u.hostname or "localhost", u.port or 443
    ctx = ssl.create_default_context(cafile=ca)
    sock = ctx.wrap_socket(socket.create_connection((host, port)), server_hostname=host)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    path = u.path + (f"?{u.query}" if u.query else "")
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
    buf = bytearray()
    ready.send(True)
    go.wait()
    lat: list[float] = []
    cpu = time.process_time()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.perf_counter()
        sock.sendall(request)
        status, body = _read_response(sock, buf)
        lat.append(time.perf_counter() - t)
        if status != 200:
            out.send(RuntimeError(f"{url}: {status} {body[:200]!r}"))
            return
    out.send((lat, time.process_time() - cpu))
    sock.close()


def run(url: str, ca: str, headers: dict[str, str], clients: int, seconds: float) -> Load:
    """`clients` processes asking `url` for `seconds`, each on one keep-alive connection."""
    mp = multiprocessing.get_context("spawn")
    go = mp.Event()
    pipes, procs = [], []
    for _ in range(clients):
        ready_r, ready_w = mp.Pipe(duplex=False)
        out_r, out_w = mp.Pipe(duplex=False)
        p = mp.Process(target=_client, args=(url, ca, headers, seconds, ready_w, go, out_w), daemon=True)
        p.start()
        pipes.append((ready_r, out_r))
        procs.append(p)
    try:
        for ready_r, _ in pipes:
            if not ready_r.poll(60):
                raise RuntimeError("a client did not connect within 60 s")
            ready_r.recv()
        cpu, t = time.process_time(), time.monotonic()
        go.set()
        results = []
        for _, out_r in pipes:
            if not out_r.poll(seconds + 60):
                raise RuntimeError("a client did not finish")
            results.append(out_r.recv())
        took, server_cpu = time.monotonic() - t, time.process_time() - cpu
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
    for r in results:
        if isinstance(r, Exception):
            raise r
    lat = [x for r, _ in results for x in r]
    return Load(len(lat), took, lat, sum(c for _, c in results), server_cpu)
