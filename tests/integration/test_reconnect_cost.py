"""A reconnection costs a metered link little: TLS resumed, point table not resent, no keepalive while data flows.

Real parts: the reference cloud's Mosquitto (mutual TLS, CRL) and receiver, the Box's own uplink
(`boxd.uplink.MqttUplink`) and point-table publisher (`boxd.pointtable`) in this process
(`bench.reconnect.Box`), through a counting TCP proxy that also drops the connection (a cell
losing it). Bytes are asserted only where they prove what was (not) sent; the figures are
bench/reconnect.py's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from bench.reconnect import Box, connection_bytes, settled
from boxd.pointtable import digest
from cloud.platform import Cloud
from drivers import PointInfo
from proto import wire
from proto.topics import Up
from tests.support.cloudkit import provision
from tests.support.tcpproxy import CountingProxy
from tests.support.wait import eventually, in_loop


def _table(*names: str) -> tuple[int, bytes]:
    points = [PointInfo(n, "degC", "int16") for n in names]
    return wire.table_id(points), wire.encode_table(points)


def _der_chain(pem_file: Path) -> int:
    return sum(len(c.public_bytes(Encoding.DER))
               for c in x509.load_pem_x509_certificates(pem_file.read_bytes()))


@in_loop
async def test_a_reconnection_resumes_the_tls_session_without_the_brokers_certificates(
        cloud: Cloud, tmp_path: Path) -> None:
    ident = provision(cloud, tmp_path / "box", "RESUME-1")
    with CountingProxy("127.0.0.1", cloud.settings.broker_port) as proxy:
        box = Box(tmp_path / "box", _table("d.t")[1])
        try:
            _, first_down = await connection_bytes(proxy, box, 1, ident)
            assert not box.uplink.state.resumed  # nothing to resume yet: a full handshake
            _, second_down = await connection_bytes(proxy, box, 2)
            assert box.uplink.state.resumed, "the reconnection did not resume the TLS session"
            _, third_down = await connection_bytes(proxy, box, 3)  # each connection brings a fresh ticket
        finally:
            await box.link.stop("test over")
    assert box.uplink.state.resumed and box.uplink.state.resumptions == 2
    broker_chain = _der_chain(cloud.pki.dir / "broker.crt")
    # the broker's certificate chain crossed the link once, not at each reconnection
    assert first_down - second_down > broker_chain, (first_down, second_down, broker_chain)
    assert first_down - third_down > broker_chain, (first_down, third_down, broker_chain)


@in_loop
async def test_a_revoked_box_cannot_come_back_by_resuming_its_session(cloud: Cloud, tmp_path: Path) -> None:
    ident = provision(cloud, tmp_path / "box", "RESUME-REVOKED")
    with CountingProxy("127.0.0.1", cloud.settings.broker_port) as proxy:
        box = Box(tmp_path / "box", _table("d.t")[1])
        try:
            await connection_bytes(proxy, box, 1, ident)
            await connection_bytes(proxy, box, 2)
            assert box.uplink.state.resumed, "the broker does not resume this Box's sessions: nothing proved"
            attempts = proxy.connections
            assert cloud.revoke("RESUME-REVOKED") is True  # the broker kicks the live session
            # the Box tries again and again, offering the session that the broker resumed a moment ago
            await eventually(lambda: box.uplink.state.connects > 2 or proxy.connections > attempts + 3,
                             "the revoked Box's attempts to reconnect")
            assert box.uplink.state.connects == 2, "the revoked Box came back in"
            assert box.uplink.offers_session, "the Box dropped its session: resumption was not tried"
            assert not box.uplink.state.connected
            assert "REVOKED" in box.uplink.state.last_error or "revoked" in box.uplink.state.last_error, (
                box.uplink.state.last_error)
        finally:
            await box.link.stop("test over")


@in_loop
async def test_the_table_is_sent_once_then_only_when_it_changes(cloud: Cloud, tmp_path: Path) -> None:
    ident = provision(cloud, tmp_path / "box", "TABLE-ONCE")
    one_id, one = _table("d.a", "d.b")
    two_id, two = _table("d.a", "d.b", "d.c")
    with CountingProxy("127.0.0.1", cloud.settings.broker_port) as proxy:
        box = Box(tmp_path / "box", one)
        try:
            await connection_bytes(proxy, box, 1, ident)
            await eventually(lambda: cloud.store.table("TABLE-ONCE", one_id), "the platform to have the table")
            for n in (2, 3):
                await connection_bytes(proxy, box, n)
            assert box.publisher.sent == 1, "the table was sent again on a reconnection"
            box.table = two  # a configuration changed the points
            box.publisher.changed()
            await eventually(lambda: cloud.store.table("TABLE-ONCE", two_id), "the platform to have the new table")
            assert box.publisher.sent == 2
            await eventually(lambda: (tmp_path / "box" / "table.sent").read_text().strip() == digest(two, ""),
                             "the Box to record the new table as acknowledged")
        finally:
            await box.link.stop("restarting")
        # boxd restarts: the table acknowledged before is not sent again
        again = Box(tmp_path / "box", two)
        try:
            await connection_bytes(proxy, again, 1, ident)
            assert again.publisher.sent == 0, "the restarted Box sent a table the broker holds"
        finally:
            await again.link.stop("test over")


@in_loop
async def test_the_platform_asks_for_a_table_it_lacks_and_stores_the_waiting_batch(
        cloud: Cloud, tmp_path: Path) -> None:
    ident = provision(cloud, tmp_path / "box", "TABLE-LOST")
    table_id, table = _table("d.lost_a", "d.lost_b")
    # the Box sent this table before, to a platform that lost it since (a restored database, the
    # broker's retained messages gone): the Box's record says the broker holds it
    (tmp_path / "box" / "table.sent").write_text(digest(table, "") + "\n")
    with CountingProxy("127.0.0.1", cloud.settings.broker_port) as proxy:
        box = Box(tmp_path / "box", table)
        try:
            await connection_bytes(proxy, box, 1, ident)
            assert box.publisher.sent == 0
            now = int(time.time() * 1000)
            batch = wire.encode_batch(7, 1, table_id, now, [wire.encode_group(0, 0, [21, 22], {})])
            assert box.link.publish(Up.DATA, batch) is not None
            await eventually(lambda: len(cloud.store.samples("TABLE-LOST")) == 2,
                             "the parked batch to be stored once the Box sent its table")
            assert box.publisher.sent == 1
            assert cloud.store.table("TABLE-LOST", table_id) is not None
        finally:
            await box.link.stop("test over")
    assert sorted(str(v) for _p, _t, v, _q in cloud.store.samples("TABLE-LOST")) == ["21", "22"]


@in_loop
async def test_no_keepalive_ping_goes_out_while_data_flows(
        cloud: Cloud, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="boxd.uplink.mqtt")
    ident = provision(cloud, tmp_path / "box", "KEEPALIVE")
    with CountingProxy("127.0.0.1", cloud.settings.broker_port) as proxy:
        table_id, table = _table("d.k")
        box = Box(tmp_path / "box", table, keepalive_s=2)
        await box.link.start(replace(ident, broker_port=proxy.port))
        try:
            await settled(proxy, lambda: box.uplink.state.connected)
            flowing, seq = time.monotonic(), 0
            while time.monotonic() - flowing < 4.5:  # two keepalive intervals and more: a batch every 0.1 s
                seq += 1
                ts = int(time.time() * 1000)
                box.link.publish(Up.DATA, wire.encode_batch(9, seq, table_id, ts, [wire.encode_group(0, 0, [seq], {})]))
                await asyncio.sleep(0.1)  # the workload's pace, not a synchronisation
            pings = [r for r in caplog.records if "PINGREQ" in r.getMessage()]
            assert not pings, f"{len(pings)} keepalive ping(s) while data flowed"
            # idle, the same link does ping: the check above looked where pings show
            await eventually(lambda: any("PINGREQ" in r.getMessage() for r in caplog.records),
                             "a keepalive ping on the idle link")
        finally:
            await box.link.stop("test over")
