"""The simulated Boxes of `bench.fleet`: one asyncio loop runs many, each over its own mutual TLS
connection with its own enrolled certificate (`bench._mqtt5`, a lean MQTT 5 client).

Each Box does what boxd does on the wire, in its real formats (`proto`):
  - connects with a Last Will (its retained status, offline: "connection lost"), subscribes to
    its downlink, publishes its retained status (online, with the digest of the platform's CRL it
    holds, so the platform has no CRL to send it) and, once, its retained point table;
  - every `period_s` (10 s, at a random phase) polls its `points` points (20) and publishes them
    as one format 2 batch (`proto.wire.encode_batch_v2`), QoS 1, numbered (epoch, seq); the
    batch's readings are timed at the moment it is published, so the platform's stored row minus
    that time is the latency from the Box's publish to the committed row;
  - every `heartbeat_s` (300 s, boxd's default, random phase) a heartbeat;
  - keeps every batch until the broker acknowledges it and sends it again after a reconnection
    (as boxd's queue does); reconnects with boxd's own policy (`boxd.backoff.Reconnect`, imported,
    not copied: after the broker closed the connection, the first try within the spread window,
    `[uplink] reconnect_spread_s`; else within a second; doubling to `reconnect_max_s`).

What a Box costs here (the simulator is not the product; its cost decides how many Boxes one host
drives): its own `ssl.SSLContext` (its certificate: 32 KB, 1.2 ms to build, built once and kept for
its reconnections; all built before the connections start, as a Box has its own when it connects),
its TLS connection and two tasks. asyncio's TLS protocol gives each connection a
256 KB read buffer (`asyncio.sslproto.SSLProtocol.max_size`): 2.5 GB for 10,000 Boxes, the most of
what a Box cost (0.4 MB); 4 KB here (the broker sends small packets; a larger TLS record is read
in several pieces). The garbage collector's long-lived objects are frozen once the fleet is built.

Run as a child process: ``python -m bench._fleet_box SPEC.json`` builds its Boxes' TLS contexts,
prints "ready", reads the run's start and end times (a JSON line) on its standard input, and writes
its results as JSON to the spec's "out".
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextlib
import gc
import json
import random
import resource
import ssl
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench._mqtt5 import Client, MqttError, Will
from boxd.backoff import Reconnect
from drivers import PointInfo
from proto import topics, wire
from proto.topics import Up
from proto.uplink import Health, Status, crl_digest

VERSION = "fleet-sim"
READ_BUFFER = 4096  # asyncio's TLS read buffer a connection (its default: 256 KB)


def point_table(points: int) -> list[PointInfo]:
    """A controller's points: a few kinds, as `bench.workload` has them."""
    kinds = ("float32", "uint16", "int16", "bool")
    return [PointInfo(f"plc.p{i:02d}", "", kinds[i % len(kinds)]) for i in range(points)]


@dataclass
class Box:
    box_id: str
    pem: Path  # its key and certificate chain
    epoch: int
    seq: int = 0
    pending: dict[int, bytes] = field(default_factory=dict)  # seq -> payload, until acknowledged
    connacks: list[float] = field(default_factory=list)  # wall times
    refused: int = 0  # PUBACKs with a failure reason (the batch is kept and sent again)
    client: Client | None = None
    online: bool = False
    ctx: ssl.SSLContext | None = None  # its certificate, built at the first connection


class Fleet:
    """Many Boxes in this loop. The constructor does no I/O."""

    def __init__(self, spec: dict[str, object]) -> None:
        self.spec = spec
        self.host, self.port = str(spec["host"]), int(str(spec["port"]))
        self.period = float(str(spec["period_s"]))
        self.heartbeat = float(str(spec["heartbeat_s"]))
        self.table = point_table(int(str(spec["points"])))
        self.tid = wire.table_id(self.table)
        self.meta = wire.encode_table(self.table)
        ca = Path(str(spec["ca"]))
        self.crl = crl_digest(Path(str(spec["crl"])).read_bytes())
        self.ca_data = ca.read_text()
        rng = random.Random()
        self.boxes = [Box(b, Path(str(spec["pem_dir"])) / f"{b}.pem", rng.getrandbits(63))
                      for b in list(spec["boxes"])]  # type: ignore[call-overload]
        self.spread_s, self.cap_s = float(str(spec["reconnect_spread_s"])), float(str(spec["reconnect_max_s"]))
        self.stop = asyncio.Event()
        self.unacked = 0  # batches of all Boxes waiting for the broker's acknowledgement
        self.all_acked = asyncio.Event()

    def prepare(self) -> None:
        """Build every Box's TLS context (its key and certificate loaded): 1.2 ms of CPU each."""
        for box in self.boxes:
            self._context(box)

    def _context(self, box: Box) -> ssl.SSLContext:
        if box.ctx is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_verify_locations(cadata=self.ca_data)
            ctx.load_cert_chain(box.pem)
            box.ctx = ctx
        return box.ctx

    def _batch(self, box: Box, now: float) -> bytes:
        box.seq += 1
        values = [round(random.uniform(0, 100), 2) if p.kind == "float32" else
                  (random.random() < 0.5 if p.kind == "bool" else random.randrange(0, 1000))
                  for p in self.table]
        return wire.encode_batch_v2(box.epoch, box.seq, self.tid, int(now * 1000), [(0, 0, values, {})])

    def _send(self, box: Box, seq: int) -> None:
        if box.client is None or not box.online:
            return
        fut = box.client.publish(topics.up(box.box_id, Up.DATA), box.pending[seq], 1)

        def done(f: asyncio.Future[int]) -> None:
            if f.cancelled() or f.exception() is not None:
                return  # the connection ended: sent again after the next one
            if f.result() < 0x80:
                if box.pending.pop(seq, None) is not None:
                    self.unacked -= 1
                    if not self.unacked:
                        self.all_acked.set()
            else:
                box.refused += 1
        fut.add_done_callback(done)

    async def _connect(self, box: Box, first: bool) -> None:
        will = Will(topics.up(box.box_id, Up.STATUS), Status(False, int(time.time() * 1000), None,
                                                                "connection lost").encode())
        client = Client(box.box_id)
        await client.connect(self.host, self.port, self._context(box), keepalive=120, will=will)
        box.connacks.append(time.time())
        box.client, box.online = client, True
        client.subscribe(topics.down_filter(box.box_id), 1)
        client.publish(topics.up(box.box_id, Up.STATUS),
                       Status(True, int(time.time() * 1000), VERSION, "", self.crl).encode(), 1, True)
        if first:
            client.publish(topics.up(box.box_id, Up.META), self.meta, 1, True)
        for seq in sorted(box.pending):
            self._send(box, seq)

    async def _link(self, box: Box, delay: float) -> None:
        """Keep the Box connected until the end (boxd's reconnection policy between attempts)."""
        await asyncio.sleep(delay)
        policy, first = Reconnect(1.0, self.spread_s, self.cap_s), True
        while not self.stop.is_set():
            try:
                await self._connect(box, first)
            except (OSError, MqttError, ssl.SSLError, TimeoutError, asyncio.IncompleteReadError):
                wait = policy.failed()
            else:
                first = False
                assert box.client is not None
                since = time.monotonic()
                await box.client.closed.wait()
                wait = policy.ended(time.monotonic() - since, box.client.closed_by_peer)
            box.online = False
            if not self.stop.is_set():
                await asyncio.sleep(wait)

    async def _pattern(self, box: Box, end: float) -> None:
        """Batches every period (from a random phase), heartbeats every heartbeat period."""
        now = time.time()
        next_batch = now + random.uniform(0, self.period)
        next_hb = now + random.uniform(0, self.heartbeat)
        while True:
            wake = min(next_batch, next_hb)
            if wake >= end:
                return
            await asyncio.sleep(max(0.0, wake - time.time()))
            now = time.time()
            if now >= next_batch:
                next_batch += self.period
                payload = self._batch(box, now)
                box.pending[box.seq] = payload
                self.unacked += 1
                self.all_acked.clear()
                try:
                    self._send(box, box.seq)
                except MqttError:
                    box.online = False
            if now >= next_hb:
                next_hb += self.heartbeat
                if box.client is not None and box.online:
                    doc = Health(int(now * 1000), box.epoch, box.seq, clock_ok=True, version=VERSION,
                                 hb_s=int(self.heartbeat), queue=len(box.pending))
                    try:
                        box.client.publish(topics.up(box.box_id, Up.HEALTH), doc.encode(), 1)
                    except MqttError:
                        box.online = False

    async def run(self) -> dict[str, object]:
        start, end = float(str(self.spec["start"])), float(str(self.spec["end"]))
        rate = float(str(self.spec["connect_rate"]))
        links = [asyncio.create_task(self._link(b, max(0.0, start - time.time()) + i / rate))
                 for i, b in enumerate(self.boxes)]
        gc.freeze()  # the fleet's objects live to the end: no collection scans them again
        first_connect = start + len(self.boxes) / rate
        await asyncio.sleep(max(0.0, first_connect - time.time()))
        await asyncio.gather(*(self._pattern(b, end) for b in self.boxes))
        if self.unacked:  # the last acknowledgements (what is left is counted as unacknowledged)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_acked.wait(), float(str(self.spec["drain_s"])))
        self.stop.set()
        for b in self.boxes:
            if b.client is not None:
                await b.client.disconnect()
        for t in links:
            t.cancel()
        await asyncio.gather(*links, return_exceptions=True)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "boxes": {b.box_id: {"epoch": b.epoch, "seq": b.seq, "unacked": len(b.pending),
                                 "connacks": b.connacks} for b in self.boxes},
            "refused": sum(b.refused for b in self.boxes),
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "max_rss_mb": usage.ru_maxrss / 1024,
        }


def _rss_mb() -> float:
    """This process's resident memory now (not ru_maxrss: a child started by fork and exec inherits
    its parent's peak there)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    asyncio.sslproto.SSLProtocol.max_size = READ_BUFFER  # this process's connections only
    base_mb = _rss_mb()  # the interpreter and its imports
    fleet = Fleet(spec)
    cpu, wall = time.process_time(), time.monotonic()
    fleet.prepare()
    prepared = {"base_rss_mb": base_mb, "prepare_cpu_s": time.process_time() - cpu,
                "prepare_s": time.monotonic() - wall, "prepared_rss_mb": _rss_mb()}
    print("ready", flush=True)
    spec.update(json.loads(sys.stdin.readline()))  # the start and end, once every process is ready
    result = asyncio.run(fleet.run()) | prepared
    Path(str(spec["out"])).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
