"""Webhooks' throughput, delay and drain after an outage (issue 19), on the tests' real parts.

The users' API and the platform's `HookWorker` (in a network namespace) deliver over HTTPS to the
customer's receiver (`tests.support.hookrecv`, another namespace, verifying both signature schemes
of every delivery); batches are stored through the receiver's own path (`Receiver.handle`), one
point table of 3 points, `--boxes` Boxes in turn.

- **steady**: `--batches` batches stored as fast as the store takes them; items delivered a second
  (first store to last arrival), and each item's delay from its store to its arrival (p50, p99);
- **outage**: the endpoint answers 503 while `--batches` more are stored; then it is back (the
  retry wait skipped with the worker's clock): the drain rate (items a second from "back" to the
  last arrival). Counts: sent, delivered, duplicated.

    sudo .venv/bin/python -m bench.webhooks [--batches 2000] [--boxes 10]

Figures, never assertions. Needs root (network namespaces).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from cloud.api import operator
from cloud.receiver import Receiver
from tests.support.apikit import PASSWORD, add_box, serving
from tests.support.hookkit import HOST, rig, store_batches


class _Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def _arrivals(entries: list[dict[str, object]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for e in entries:
        if e.get("status") == 200 and e.get("type") == "data":
            for item in e["items"]:  # type: ignore[attr-defined]
                out.setdefault(item[0], float(e["at"]))  # type: ignore[arg-type]
    return out


def _store(recv: Receiver, boxes: list[str], n: int, first: int) -> dict[str, float]:
    stored = {}
    for k in range(n):
        box, seq = boxes[k % len(boxes)], first + k
        store_batches(recv, box, range(seq, seq + 1))
        stored[f"{box}/7/{seq}"] = time.time()
    return stored


def _wait(got: dict[str, float], want: set[str], receiver: object, timeout: float = 600) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while not want <= set(got) and time.monotonic() < deadline:
        time.sleep(0.2)
        got = _arrivals(receiver.entries())  # type: ignore[attr-defined]
    return got


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=2000)
    p.add_argument("--boxes", type=int, default=10)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        with serving(home) as api, rig(home) as r:
            st = api.cloud.store
            acme, _ = operator.create_account(st, "acme", "owner@acme", PASSWORD)
            boxes = [f"BOX-{i:03d}" for i in range(a.boxes)]
            for b in boxes:
                add_box(api.cloud, b, "acme")
            sa = st.add_user(acme.id, "hooks@acme", "service", None)
            st.bind(acme.id, sa, "viewer", "account", "")
            clock = _Clock()
            r.start_worker(st, home, clock)
            s = api.session("owner@acme")
            c = s.post(api.url + "/v1/connectors", json={"name": "bench", "service_account_id": sa,
                                                         "url": f"https://{HOST}/hook"}).json()
            r.receiver.command(f"secrets {c['signing_secret']}")
            s.post(f"{api.url}/v1/connectors/{c['id']}/confirm")
            while s.get(f"{api.url}/v1/connectors/{c['id']}").json()["state"] != "enabled":
                time.sleep(0.1)
            recv = Receiver(api.cloud.pki, st, "localhost", 1)

            t0 = time.time()
            stored = _store(recv, boxes, a.batches, 1)
            t_stored = time.time()
            got = _wait({}, set(stored), r.receiver)
            delays = sorted(got[i] - stored[i] for i in stored if i in got)
            last = max(got[i] for i in stored if i in got)
            print(f"steady: {len(stored)} batches stored in {t_stored - t0:.1f} s, {len(delays)} delivered; "
                  f"{len(delays) / (last - t0):.0f} items/s; delay store->receiver p50 "
                  f"{statistics.median(delays) * 1000:.0f} ms, p99 {delays[int(len(delays) * 0.99) - 1] * 1000:.0f} ms")

            r.receiver.command("mode fail")
            outage = _store(recv, boxes, a.batches, 1_000_000)
            time.sleep(2)
            r.receiver.command("mode ok")
            clock.offset += 7200
            back = time.time()
            got = _wait(got, set(outage), r.receiver)
            done = max(got[i] for i in outage if i in got)
            total = sum(len(e["items"]) for e in r.receiver.entries() if e.get("status") == 200)
            want = len(stored) + len(outage)
            print(f"outage: {len(outage)} stored while the endpoint answered 503; drained in {done - back:.1f} s "
                  f"({len(outage) / (done - back):.0f} items/s); sent {want}, delivered "
                  f"{len(set(got) & (set(stored) | set(outage)))}, duplicated {total - len(got)}")


if __name__ == "__main__":
    main()
