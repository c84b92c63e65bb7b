"""After a broker restart, a fleet reconnects spread out in time, not at one instant.

300 lightweight Boxes (one asyncio loop, raw MQTT 3.1.1 CONNECT over mutual TLS, each
with its own platform certificate) reconnect with the daemon's own policy (`boxd.backoff.Reconnect`:
the broker closed their connections, so the first try is drawn from the spread window; an 8 s
window here, 30 s on a Box, to keep the test short). The broker is a real Mosquitto; the CONNACK
times are what is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
import time
from pathlib import Path

from boxd.backoff import Reconnect
from cloud.platform import Cloud
from tests.support.cloudkit import forge_cert
from trust import tls

FLEET = 300
SPREAD_S = 8.0


def connect_packet(client_id: str) -> bytes:
    cid = client_id.encode()
    var = b"\x00\x04MQTT\x04\x02\x00\x3c"  # protocol 3.1.1, clean session, keepalive 60
    payload = len(cid).to_bytes(2, "big") + cid
    rem = len(var) + len(payload)
    return bytes([0x10, rem]) + var + payload


class LightBox:
    def __init__(self, name: str, ctx: ssl.SSLContext, port: int) -> None:
        self.name, self.ctx, self.port = name, ctx, port
        self.connack_times: list[float] = []
        self.reconnect = Reconnect(1.0, SPREAD_S, 2 * SPREAD_S)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("localhost", self.port, ssl=self.ctx)
                writer.write(connect_packet(self.name))
                await writer.drain()
                ack = await reader.readexactly(4)
                if ack[0] != 0x20 or ack[3] != 0:
                    raise ConnectionError(f"refused: {ack!r}")
            except (OSError, ssl.SSLError, asyncio.IncompleteReadError, ConnectionError):
                delay = self.reconnect.failed()
            else:
                self.connack_times.append(time.monotonic())
                with contextlib.suppress(OSError, ssl.SSLError):
                    await reader.read()  # until the broker goes away: its end of stream, or a reset
                writer.close()
                delay = self.reconnect.ended(time.monotonic() - self.connack_times[-1], by_broker=True)
            if not stop.is_set():
                await asyncio.sleep(delay)


def test_a_fleet_reconnects_spread_out_after_a_broker_restart(fresh_cloud: Cloud, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    boxes = []
    for i in range(FLEET):
        cert, key = forge_cert(fresh_cloud, tmp_path / "fleet", f"FLEET-{i:03d}",
                               not_before=now - dt.timedelta(days=1), not_after=now + dt.timedelta(days=1))
        boxes.append(LightBox(f"FLEET-{i:03d}", tls.client_context(fresh_cloud.pki.root_cert, cert, key),
                              fresh_cloud.settings.broker_port))

    async def scenario() -> float:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(b.run(stop)) for b in boxes]
        deadline = time.monotonic() + 120
        while not all(b.connack_times for b in boxes):
            assert time.monotonic() < deadline, "the fleet did not connect"
            await asyncio.sleep(0.1)
        await asyncio.to_thread(fresh_cloud.broker.stop)
        await asyncio.sleep(3)  # the outage itself: the broker is down for 3 s (not synchronisation)
        await asyncio.to_thread(fresh_cloud.broker.start)
        restarted = time.monotonic()
        while not all(len(b.connack_times) >= 2 for b in boxes):
            assert time.monotonic() < restarted + 120, "the fleet did not come back"
            await asyncio.sleep(0.1)
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return restarted

    restarted = asyncio.run(scenario())
    back = sorted(b.connack_times[1] - restarted for b in boxes)
    starts = [x * 0.25 for x in range(int(back[-1] * 4) + 1)]
    busiest_second = max(sum(1 for t in back if s <= t < s + 1) for s in starts)
    # spread: no second takes a quarter of the fleet (without jitter, 213 of 300 came back in one
    # second; with full jitter from 1 s, 60-120), and the returns cover at least half the window
    assert busiest_second < FLEET // 4, f"{busiest_second} of {FLEET} Boxes came back within one second"
    assert back[int(FLEET * 0.9)] - back[int(FLEET * 0.1)] >= SPREAD_S / 2, back
    print(f"\n{FLEET} Boxes after a 3 s broker restart: back within {back[-1]:.1f} s; "
          f"p10 {back[int(FLEET * 0.1)]:.1f} s, p50 {back[FLEET // 2]:.1f} s, p90 {back[int(FLEET * 0.9)]:.1f} s; "
          f"busiest second {busiest_second}")
