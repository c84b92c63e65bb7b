"""Measure the users' API (issue 18): the cost of a login, and requests per second with p50/p99
latency for the reads users make, over real HTTPS on a real store.

The API serves in this process (`cloud.api.ApiServer`, its thread pool); the clients are
`--clients` processes (spawned: no GIL shared with the server, `bench._http_load`: a few µs of
Python a request), each with one keep-alive connection, sending requests one after the other for
`--seconds`. Each load prints the server's CPU a request (this process's CPU time over the run) and
the clients' (they share the same cores). Measured:

- a login: Argon2id's check of a password (OWASP's parameters), and SHA-256 of an API key's secret;
- `GET /v1/boxes/ID/latest` (25 points) with Basic cold (one client, the cache of good checks
  emptied before each request: every one runs Argon2), Basic cached, and an API key;
- `GET /v1/boxes/ID/history` of one point over the last hour of 1-second data (1000 a page), with
  an API key;
- one point's history over 7 days of 1-second data (604,800 samples): the whole walk page by page,
  and its hourly aggregates in one request.

    .venv/bin/python -m bench.api [--clients 4] [--seconds 10] [--latest-only]

`--latest-only`: the latest values with Basic cached and an API key, nothing else (no 7 days of
data to store first: a minute instead of four, to compare a change).

Figures, never assertions (docs/performance.md has a table of them).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench import _http_load
from bench.measure import percentile
from cloud.api import _secrets, operator
from tests.support.apikit import PASSWORD, add_box, add_samples, basic, serving

DAY_MS = 86_400_000
POINTS = 25


def load(url: str, ca: str, headers: dict[str, str], clients: int, seconds: float) -> dict[str, Any]:
    """Requests/s, latency and CPU a request (server's, clients') of `clients` clients asking `url`."""
    return _http_load.run(url, ca, headers, clients, seconds).summary()


def _line(name: str, f: dict[str, Any], width: int = 30) -> str:
    return (f"{name:<{width}} {f['requests']:>7} {f['rps']:>8.0f} req/s  p50 {f['p50_ms']:.1f} ms  "
            f"p99 {f['p99_ms']:.1f} ms  server CPU {f['server_cpu_us']:.0f} us/req  clients' "
            f"{f['client_cpu_us']:.0f} us/req ({f['client_share']:.0%} of the CPU used)")


def latest_only(clients: int, seconds: float) -> None:
    """Latest values of 25 points, Basic cached and API key: what a change to the request path moves."""
    with tempfile.TemporaryDirectory() as tmp, serving(Path(tmp)) as api:
        st = api.cloud.store
        operator.create_account(st, "bench", "bench@example.com", PASSWORD)
        add_box(api.cloud, "BOX-1", "bench")
        add_samples(api.cloud, "BOX-1", [f"p{i:02}" for i in range(POINTS)], int(time.time() * 1000) - 60_000, 60)
        key = operator.create_key(st, "bench@example.com", "bench", ["box.read", "box.data.read"], 1)[1]
        url, ca = f"{api.url}/v1/boxes/BOX-1/latest", str(api.cloud.pki.root_cert)
        for name, auth in (("latest values, Basic cached", basic("bench@example.com")), ("latest values, API key",
                                                                                          f"Bearer {key}")):
            print(_line(name, load(url, ca, {"Authorization": auth}, clients, seconds)), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(prog="bench.api", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--latest-only", action="store_true", help="only the latest values, Basic cached and API key")
    args = p.parse_args()
    if args.latest_only:
        latest_only(args.clients, args.seconds)
        return

    stored = _secrets.hash_password(PASSWORD)
    t = time.perf_counter()
    for _ in range(20):
        _secrets.check_password(stored, PASSWORD)
    argon = (time.perf_counter() - t) / 20
    key = _secrets.new_key()[1]
    t = time.perf_counter()
    for _ in range(10_000):
        _secrets.key_hash(key.split("_")[2][:32])
    sha = (time.perf_counter() - t) / 10_000
    print(f"login cost: Argon2id check {argon * 1000:.1f} ms (m=19 MiB, t=2, p=1); API key SHA-256 "
          f"{sha * 1e6:.1f} us", flush=True)

    with tempfile.TemporaryDirectory() as tmp, serving(Path(tmp)) as api:
        st = api.cloud.store
        operator.create_account(st, "bench", "bench@example.com", PASSWORD)
        add_box(api.cloud, "BOX-1", "bench")
        now = int(time.time() * 1000) // 1000 * 1000
        t = time.monotonic()
        add_samples(api.cloud, "BOX-1", ["ahu1.supply_temp"], now - 7 * DAY_MS, 7 * 86_400)
        add_samples(api.cloud, "BOX-1", [f"p{i:02}" for i in range(POINTS - 1)], now - 60_000, 60)
        print(f"stored 7 days of 1-second data of one point (604,800 samples) in {time.monotonic() - t:.0f} s",
              flush=True)
        key = operator.create_key(st, "bench@example.com", "bench", ["box.read", "box.data.read"], 1)[1]
        ca = str(api.cloud.pki.root_cert)
        latest, hist = f"{api.url}/v1/boxes/BOX-1/latest", f"{api.url}/v1/boxes/BOX-1/history"
        hour = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now / 1000 - 3600))
        bearer = {"Authorization": f"Bearer {key}"}
        rows = []
        # cold Basic: one client, the cache emptied before each request
        s = api.session("bench@example.com")
        cold = []
        for _ in range(30):
            assert api.server.auth is not None
            api.server.auth.forget()
            t0 = time.perf_counter()
            s.get(latest).raise_for_status()
            cold.append(time.perf_counter() - t0)
        rows.append(("latest values, Basic cold (1 client, serial)", {
            "requests": len(cold), "rps": 1 / statistics.mean(cold), "p50_ms": percentile(cold, 0.5) * 1000,
            "p99_ms": percentile(cold, 0.99) * 1000}))
        rows.append(("latest values, Basic cached", load(latest, ca, {"Authorization": basic("bench@example.com")},
                                                         args.clients, args.seconds)))
        rows.append(("latest values, API key", load(latest, ca, bearer, args.clients, args.seconds)))
        rows.append(("history, 1 point, last hour (1000 a page), API key",
                     load(f"{hist}?point=ahu1.supply_temp&since={hour}&limit=1000", ca, bearer, args.clients,
                          args.seconds)))
        print(f"\n{'request':<55} {'n':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'server us':>10} "
              f"{'clients us':>10}")
        for name, f in rows:
            print(f"{name:<55} {f['requests']:>7} {f['rps']:>8.0f} {f['p50_ms']:>8.1f} {f['p99_ms']:>8.1f} "
                  f"{f.get('server_cpu_us', float('nan')):>10.0f} {f.get('client_cpu_us', float('nan')):>10.0f}")

        k = api.session(key=key)
        week = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now / 1000 - 7 * 86_400))
        until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now / 1000 + 1))
        t = time.monotonic()
        n, pages, cursor = 0, 0, None
        while True:
            page = f"{hist}?point=ahu1.supply_temp&since={week}&until={until}&limit=1000"
            doc = k.get(page + (f"&cursor={quote(cursor)}" if cursor else "")).json()
            n, pages, cursor = n + len(doc["items"]), pages + 1, doc["next"]
            if not cursor:
                break
        walk = time.monotonic() - t
        t = time.monotonic()
        agg = k.get(f"{hist}?point=ahu1.supply_temp&since={week}&until={until}&bucket_s=3600&limit=1000").json()
        took = time.monotonic() - t
        print(f"\n7 days of 1-second data, one point: {n} samples in {pages} pages of 1000 in {walk:.1f} s "
              f"({walk / pages * 1000:.0f} ms a page); hourly aggregates ({len(agg['items'])} buckets) in "
              f"{took * 1000:.0f} ms")


if __name__ == "__main__":
    main()
