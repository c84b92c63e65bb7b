"""What the platform's stored notice costs a Box on its SIM: IP bytes per notice, per hour, per month.

    .venv/bin/python -m bench.storedacks [--notices 20]

A real cloud (Mosquitto with mutual TLS, the receiver) and a provisioned Box whose uplink
(`boxd.uplink.MqttUplink`, in a process of its own) lives in a network namespace behind
`bench.simlink.SimLink`: the veth's counters are the IP bytes a SIM bills, both ways. The
receiver publishes stored notices (`proto.downlink.StoredNotice`, QoS 1, as `cloud._acker` does),
one at a time, each once the link was quiet: a notice's bytes are everything that crosses from
its publication until the link is quiet again (the notice, the Box's PUBACK, the TCP
acknowledgements). Two kinds: a plain one ("stored up to s"), and one past a hole (a bitmap of
the 96 batches after it, a third of them missing). Then per hour and per 30-day month at the
Box's notice interval (`boxd.sender.stored_notice_s`: one notice at most per interval, and only
when something new was stored) for the default batch delay (5 s) and a metered SIM's (300 s).
Figures, never assertions. Needs root (the namespace).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.simlink import LinkCounts, SimLink
from boxconfig import UplinkSettings
from boxd.sender import stored_notice_s
from proto.downlink import StoredNotice
from proto.topics import Down
from tests.support.cloudkit import make_cloud, provision
from tests.support.wan import retarget

BOX = "ACKS-1"
MONTH_H = 30 * 24


def _box(state: Path) -> None:
    """The Box's side (in the namespace): connect, print a line per stored notice received."""
    from boxd.uplink import MqttUplink
    from trust import identity

    async def run() -> None:
        got = 0

        def on_message(leaf: str, _payload: bytes) -> None:
            nonlocal got
            if leaf == Down.STORED:
                got += 1
                print(f"notice {got}", flush=True)

        up = MqttUplink(identity.load(state), on_connected=lambda: print("connected", flush=True),
                        on_disconnected=lambda: None, on_ack=lambda _m, _ok: None, on_message=on_message,
                        keepalive_s=1200)  # no PINGREQ in a measurement
        await up.start()
        await asyncio.Event().wait()

    asyncio.run(run())


def _quiet(link: SimLink, for_s: float = 0.6, limit_s: float = 30.0) -> LinkCounts:
    """Wait until nothing crossed the link for `for_s`; its counts then."""
    deadline, last, since = time.monotonic() + limit_s, link.counts(), time.monotonic()
    while time.monotonic() - since < for_s and time.monotonic() < deadline:
        time.sleep(0.1)
        now = link.counts()
        if now != last:
            last, since = now, time.monotonic()
    return last


def measure(n: int) -> dict[str, dict[str, float]]:
    """Per notice: IP bytes and packets up and down, for a plain notice and one past a hole."""
    with tempfile.TemporaryDirectory(prefix="bench-acks-") as tmp:
        work = Path(tmp)
        cloud_ip, box_ip = SimLink.addresses()
        cloud = make_cloud(work / "cloud", names=[cloud_ip])
        cloud.start()
        try:
            with SimLink(cloud.settings.broker_port, cloud_ip, box_ip) as link:
                ident = provision(cloud, work / "box", BOX)
                retarget(ident.directory, cloud_ip, link.port)
                box = subprocess.Popen([*link.prefix(), sys.executable, "-m", "bench.storedacks", "--box",
                                        str(work / "box")], stdout=subprocess.PIPE, text=True)
                try:
                    assert box.stdout is not None
                    if box.stdout.readline().strip() != "connected":
                        raise SystemExit("bench.storedacks: the Box did not connect")
                    rx = cloud.receiver
                    assert rx is not None
                    out: dict[str, dict[str, float]] = {}
                    hole = frozenset(range(1001, 1097)) - frozenset(range(1001, 1097, 3))
                    for kind, ahead in (("plain", frozenset[int]()), ("past a hole", hole)):
                        deltas = []
                        for i in range(n):
                            before = _quiet(link)
                            rx.publish_down(BOX, Down.STORED, StoredNotice(2**62 + 12345, 1000 + i, ahead).encode())
                            box.stdout.readline()
                            deltas.append(_quiet(link) - before)
                        out[kind] = {
                            "ip_down": statistics.mean(d.ip.down_bytes for d in deltas),
                            "ip_up": statistics.mean(d.ip.up_bytes for d in deltas),
                            "packets": statistics.mean(d.ip.up_packets + d.ip.down_packets for d in deltas),
                            "payload": len(StoredNotice(2**62 + 12345, 1000, ahead).encode()),
                        }
                    return out
                finally:
                    box.terminate()
                    box.wait(10)
        finally:
            cloud.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.storedacks", description=__doc__.split("\n\n")[0])
    p.add_argument("--notices", type=int, default=20, help="notices measured of each kind (default %(default)s)")
    p.add_argument("--box", type=Path, help=argparse.SUPPRESS)  # the Box's side, in the namespace
    args = p.parse_args(argv)
    if args.box is not None:
        _box(args.box)
        return 0
    figures = measure(args.notices)
    print(f"{'notice':<12} {'payload B':>9} {'IP B down':>9} {'IP B up':>8} {'packets':>7}")
    for kind, f in figures.items():
        print(f"{kind:<12} {f['payload']:>9.0f} {f['ip_down']:>9.0f} {f['ip_up']:>8.0f} {f['packets']:>7.1f}")
    per = figures["plain"]["ip_down"] + figures["plain"]["ip_up"]
    print(f"\na plain notice, both ways: {per:.0f} IP bytes")
    for name, delay_ms in (("default (batch_delay_ms 5000)", UplinkSettings().batch_delay_ms),
                           ("metered (batch_delay_ms 300000)", 300_000)):
        every = max(stored_notice_s(UplinkSettings(batch_delay_ms=delay_ms)), delay_ms / 1000)
        hour = 3600 / every * per
        print(f"{name}: a notice at most every {every:.0f} s -> {hour / 1e3:.1f} kB an hour, "
              f"{hour * MONTH_H / 1e6:.2f} MB a 30-day month")
    return 0


if __name__ == "__main__":
    sys.exit(main())
