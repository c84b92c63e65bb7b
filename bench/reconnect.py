"""Bytes per reconnection of the Box's uplink, both directions, with and without the savings.

    .venv/bin/python -m bench.reconnect [--reconnects 10] [--points 500] [--no-resume] [--table-always] [--before]
                                        [--tls-compare] [--json FILE]

A real cloud (Mosquitto with mutual TLS and its CRL, the receiver), a provisioned Box, and the
Box's own uplink (`boxd.uplink.MqttUplink`) and point-table publisher (`boxd.pointtable`) in
this process, through a counting proxy (`tests.support.tcpproxy.CountingProxy`: TCP payload,
so TLS records and MQTT, not TCP/IP headers). The point table is the one boxd builds for
`--points` Modbus points (`bench.backlog.point_table`). Each reconnection: the proxy resets the
connection (a cell dropping it) and the uplink reconnects; its bytes are counted from the reset
until the Box is connected, its "online" status and (if sent) its table are acknowledged, the
platform's answers to "online" (its time and CRL) have arrived, and nothing more crosses.

`--no-resume`: every handshake a full one (certificate chains both ways); `--table-always`: the
table sent at every connection. `--before`: boxd before issue 15 (both, and a SUBSCRIBE and the
platform's CRL at every connection: `_Before`). Prints the first
connection's bytes and the mean of the reconnections, up (Box -> broker) and down. Figures,
never assertions.

`--tls-compare`: only TLS handshakes (and a minimal MQTT CONNECT/CONNACK) to the same broker,
full then resumed, for TLS 1.3 tickets (what the Box uses), TLS 1.2 tickets and TLS 1.2 session
ids (the alternatives weighed in docs/architecture.md, "Reconnection").
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from bench.backlog import box_config, point_table
from bench.measure import print_figures
from boxd.backoff import Reconnect
from boxd.link import Link
from boxd.pointtable import TablePublisher
from boxd.uplink import MqttUplink
from proto import wire
from proto.topics import Down, Up
from tests.support.cloudkit import make_cloud, provision
from tests.support.tcpproxy import CountingProxy
from trust import tls
from trust.identity import Identity

BOX_ID = "RECONNECT-1"
QUIET_S = 0.5  # nothing crossed the proxy for this long: the connection's exchange is over


class Box:
    """The Box's uplink, link and table publisher, and what it saw (on the event loop; the
    integration tests of issue 15 use it too: tests/integration/test_reconnect_cost.py)."""

    def __init__(self, state_dir: Path, table: bytes, *, resume: bool = True, table_always: bool = False,
                 keepalive_s: int = 60, before: bool = False) -> None:
        self.before = before
        self.table = table
        self.keepalive_s = keepalive_s
        self.acks = 0
        self.received: list[str] = []
        self.link = Link(self._uplink)
        self.publisher = TablePublisher(state_dir, self.link, table=lambda: self.table,
                                        table_id=lambda: wire.decode_table(self.table)[0], broker=lambda: self.broker)
        self.broker = ""  # the record's broker name (boxd: "<box id>@<host>:<port>")
        self.table_always = table_always
        self.resume = resume

    @property
    def uplink(self) -> MqttUplink:
        """The running uplink."""
        assert isinstance(self.link.uplink, MqttUplink)
        return self.link.uplink

    def _uplink(self, ident: Identity) -> MqttUplink:
        kind = _Before if self.before else MqttUplink
        return kind(ident, on_connected=self._connected, on_disconnected=lambda: None, on_ack=self._acked,
                    on_message=self._message, reconnect=Reconnect(0.05, 0.05, 0.2), resume=self.resume,
                    keepalive_s=self.keepalive_s)

    def _connected(self) -> None:
        self.link.on_connected()
        if self.table_always:
            self.link.publish(Up.META, self.table, qos=1, retain=True)
        else:
            self.publisher.connected()

    def _acked(self, mid: int, ok: bool) -> None:
        self.acks += 1
        self.link.on_ack(mid)
        self.publisher.acked(mid, ok)

    def _message(self, leaf: str, payload: bytes) -> None:
        self.received.append(leaf)
        if leaf == Down.TABLE:
            self.publisher.requested(payload)


class _Before(MqttUplink):
    """The uplink as boxd had it before issue 15, for `--before`: it subscribes at every connection and
    names no CRL in its status (so the platform sends its CRL at every connection)."""

    def _crl_held(self) -> str:
        return ""

    def _cb_connect(self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags, rc: ReasonCode,
                    props: object) -> None:
        self._subscribed = False
        super()._cb_connect(client, userdata, flags, rc, props)


async def settled(proxy: CountingProxy, done: Callable[[], bool], limit_s: float = 30.0) -> None:
    """Wait for `done()`, then for the proxy to be quiet for `QUIET_S`."""
    deadline = time.monotonic() + limit_s
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError("the connection's exchange did not complete in time")
        await asyncio.sleep(0.02)
    last = -1
    while (now := proxy.upstream_bytes + proxy.downstream_bytes) != last:
        last = now
        await asyncio.sleep(QUIET_S)


async def connection_bytes(proxy: CountingProxy, box: Box, n: int, ident: Identity | None = None) -> tuple[int, int]:
    """Bytes (up, down) of the Box's connection `n` (1: the first, the Box started here with `ident`
    pointed at the proxy; later ones: the proxy resets the last), until it is connected, something
    of it acknowledged and the platform's answers to "online" in."""
    up0, down0, acks0, got0 = proxy.upstream_bytes, proxy.downstream_bytes, box.acks, len(box.received)
    if ident is not None:
        await box.link.start(replace(ident, broker_port=proxy.port))
    else:
        proxy.reset_all()
    await settled(proxy, lambda: (box.uplink.state.connects == n and box.acks > acks0
                                  and Down.TIME in box.received[got0:]))
    return proxy.upstream_bytes - up0, proxy.downstream_bytes - down0


async def _run(work: Path, reconnects: int, points: int, resume: bool, table_always: bool,
               before: bool) -> dict[str, object]:
    cloud = make_cloud(work / "cloud")
    cloud.start()
    try:
        ident = provision(cloud, work / "box", BOX_ID)
        conf = work / "boxd.toml"
        conf.write_text(box_config(points, {}))
        table = wire.encode_table(point_table(conf))
        with CountingProxy("127.0.0.1", cloud.settings.broker_port) as proxy:
            box = Box(work / "box", table, resume=resume, table_always=table_always, before=before)
            try:
                samples = [await connection_bytes(proxy, box, n, ident if n == 1 else None)
                           for n in range(1, reconnects + 2)]
            finally:
                await box.link.stop("bench over")
    finally:
        cloud.stop()
    first, rest = samples[0], samples[1:]
    up, down = statistics.mean(s[0] for s in rest), statistics.mean(s[1] for s in rest)
    return {
        "before": before, "resume": resume, "table_always": table_always, "points": points, "table_bytes": len(table),
        "reconnects": reconnects, "resumed_handshakes": box.uplink.state.resumptions,
        "tables_sent_by_publisher": box.publisher.sent,
        "first_connection_up": first[0], "first_connection_down": first[1],
        "reconnection_up": round(up), "reconnection_down": round(down), "reconnection_total": round(up + down),
    }


_CONNECT = bytes.fromhex("100c00044d5154540402003c0000")  # MQTT 3.1.1, empty client id (the broker sets it)


def _handshakes(port: int, ident: Identity, mode: str, proxy: CountingProxy) -> dict[str, int]:
    ctx = tls.client_context(ident.ca_file, ident.cert_file, ident.key_file, resume=True)
    assert isinstance(ctx, tls.ResumingContext)
    if mode != "tls13":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if mode == "tls12_session_id":
        ctx.options |= ssl.OP_NO_TICKET
    out: dict[str, int] = {}
    for n in ("full", "resumed"):
        up0, down0 = proxy.upstream_bytes, proxy.downstream_bytes
        with ctx.wrap_socket(socket.create_connection(("localhost", port)), server_hostname="localhost") as s:
            s.sendall(_CONNECT)
            s.recv(4)
            ctx.remember(s)
            assert bool(s.session_reused) == (n == "resumed"), (mode, n)
            s.sendall(b"\xe0\x00")  # DISCONNECT
        deadline = time.monotonic() + 5
        while proxy.active and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(QUIET_S)
        out[f"{mode}_{n}"] = proxy.upstream_bytes - up0 + proxy.downstream_bytes - down0
    return out


def compare_tls(work: Path) -> dict[str, object]:
    """Bytes (both ways) of full and resumed handshakes for each TLS mode, to the real broker."""
    cloud = make_cloud(work / "cloud")
    cloud.start()
    try:
        ident = provision(cloud, work / "box", BOX_ID)
        figures: dict[str, object] = {}
        for mode in ("tls13", "tls12_ticket", "tls12_session_id"):
            with CountingProxy("127.0.0.1", cloud.settings.broker_port) as proxy:
                figures.update(_handshakes(proxy.port, ident, mode, proxy))
        return figures
    finally:
        cloud.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.reconnect", description=__doc__.splitlines()[0])
    ap.add_argument("--reconnects", type=int, default=10, help="reconnections measured (default 10)")
    ap.add_argument("--points", type=int, default=500, help="points in the Box's table, a multiple of 100")
    ap.add_argument("--no-resume", action="store_true", help="no TLS session resumption (full handshakes)")
    ap.add_argument("--table-always", action="store_true", help="send the point table at every connection")
    ap.add_argument("--before", action="store_true", help="boxd before issue 15 (implies the two above, and "
                    "a SUBSCRIBE and the platform's CRL at every connection)")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    ap.add_argument("--tls-compare", action="store_true", help="only handshakes: TLS 1.3 tickets, TLS 1.2 "
                    "tickets, TLS 1.2 session ids")
    args = ap.parse_args(argv)
    if args.reconnects < 1:
        ap.error("--reconnects must be at least 1")
    with tempfile.TemporaryDirectory(prefix="bench-reconnect-") as tmp:
        if args.tls_compare:
            print_figures(compare_tls(Path(tmp)), args.json)
            return 0
        figures = asyncio.run(_run(Path(tmp), args.reconnects, args.points, not (args.no_resume or args.before),
                                   args.table_always or args.before, args.before))
    print_figures(figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
