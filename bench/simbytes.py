"""What a Box's SIM pays for besides its data: IP bytes per connection, reconnection, idle hour,
configuration push and command.

    .venv/bin/python -m bench.simbytes [--points 100] [--repeat 5] [--idle-s 180] [--heartbeat-s 60]
        [--keepalive-s 60] [--json FILE]

The rig is `bench.simlink.SimLink`: boxd in a network namespace whose only way out is a veth pair,
the device farm (`bench.farm`, one controller of `--points` points) on the namespace's loopback,
the reference cloud (Mosquitto with mutual TLS, the receiver, the outbox) in the root namespace
behind a counting proxy. IP bytes both ways come from the veth's interface counters (`Wan(quiet=True)`:
only the Box's IPv4 traffic crosses it), the TCP payload from the proxy. boxd runs at its default
settings (keepalive_s 60, heartbeat_s 60, batch_delay_ms 500; reconnect_max_s 2 instead of 300,
which sets when it reconnects, not what it sends); its points are polled once an hour,
so after the first poll no data flows and every phase counts only what it is about:

- first connection: from boxd's start until the link is quiet (`--quiet-s`, 2 s without a packet) after the
  first batch is stored: TCP and TLS handshakes (the chain), MQTT CONNECT, subscription, the point
  table, the first batch, the status;
- idle: a window of `--idle-s` seconds with nothing else to do (keepalives, heartbeats), scaled to
  an hour (say so when quoting it);
- reconnection, `--repeat` times: the proxy resets the connection (as a NAT or the cell network
  does); from the reset until boxd is connected again and the link is quiet. The TCP reset itself
  is in it. Then the same after a configuration push, which the cloud keeps retained on the
  Box's downlink, so that every resubscription receives it again;
- configuration push, `--repeat` times: the Box's configuration pushed again (a comment changed,
  so nothing is restarted), until the cloud has its "applied" and the link is quiet;
- command, `--repeat` times: ``read`` of one point, until the cloud has the reply and the link is
  quiet (the value read travels in a batch, counted).

Figures, never assertions (CI smoke-runs it small). Needs root.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

from bench.measure import Farm, print_figures
from bench.simlink import LinkCounts, SimLink
from bench.workload import boxd_toml, layout
from cloud.platform import Cloud
from tests.support.boxproc import BoxProcess
from tests.support.cloudkit import make_cloud, provision
from tests.support.wait import wait_for
from tests.support.wan import retarget

BOX = "BENCH-SIM-1"
QUIET_S = 2.0  # no packet for this long: a phase is over (--quiet-s)
POLL_S = 3600  # the points are polled once an hour: after the first poll, no data flows


def uplink_toml(heartbeat_s: int, keepalive_s: int) -> str:
    """boxd's [uplink]: the defaults (or the given heartbeat and keepalive) but the cap of the reconnection
    backoff (300 s): a reconnection sends the same bytes after 1 s or 5 minutes, and the repeated resets
    would otherwise make the run wait minutes."""
    return f"[uplink]\nreconnect_max_s = 2\nheartbeat_s = {heartbeat_s}\nkeepalive_s = {keepalive_s}\n\n"


def settle(link: SimLink, quiet_s: float = QUIET_S, timeout: float = 60.0) -> LinkCounts:
    """Wait until no packet has crossed the link for `quiet_s`; the counts then."""
    last, since = link.counts(), time.monotonic()
    deadline = since + timeout
    while time.monotonic() - since < quiet_s:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the link never went quiet for {quiet_s} s in {timeout} s")
        time.sleep(0.05)
        now = link.counts()
        if now.ip.up_packets != last.ip.up_packets or now.ip.down_packets != last.ip.down_packets:
            last, since = now, time.monotonic()
    return last


def _summary(deltas: list[LinkCounts]) -> dict[str, float]:
    """The mean of each count over the repeats, and the range of the IP total."""
    totals = [d.ip.total for d in deltas]
    return {
        "ip_bytes": round(statistics.mean(totals)),
        "ip_up_bytes": round(statistics.mean(d.ip.up_bytes for d in deltas)),
        "ip_down_bytes": round(statistics.mean(d.ip.down_bytes for d in deltas)),
        "ip_packets": round(statistics.mean(d.ip.up_packets + d.ip.down_packets for d in deltas), 1),
        "payload_bytes": round(statistics.mean(d.payload_up + d.payload_down for d in deltas)),
        "ip_bytes_min": min(totals),
        "ip_bytes_max": max(totals),
        "repeats": len(deltas),
    }


def _reconnections(link: SimLink, box: BoxProcess, repeat: int, quiet_s: float) -> list[LinkCounts]:
    out = []
    for _ in range(repeat):
        before = settle(link, quiet_s)
        connections = link.proxy.connections
        link.proxy.reset_all()
        wait_for(lambda n=connections: link.proxy.connections > n and box.status().get("connected"), 60,  # type: ignore[misc]
                 "boxd to reconnect")
        out.append(settle(link, quiet_s) - before)
    return out


def run(work: Path, points: int, repeat: int, idle_s: float, quiet_s: float = QUIET_S, heartbeat_s: int = 60,
        keepalive_s: int = 60) -> dict[str, object]:
    devices = max(1, (points + 99) // 100)
    devs = layout(devices, points // devices, 20000)
    cloud_ip, box_ip = SimLink.addresses()
    cloud = make_cloud(work / "cloud", names=[cloud_ip])
    cloud.start()
    figures: dict[str, object] = {"points": devices * (points // devices), "keepalive_s": keepalive_s,
                                  "heartbeat_s": heartbeat_s}
    try:
        with SimLink(cloud.settings.broker_port, cloud_ip, box_ip) as link:
            farm = Farm(devices, points // devices, devs[0].port, work, prefix=link.prefix())
            try:
                ident = provision(cloud, work / "box", BOX)
                retarget(ident.directory, cloud_ip, link.port)
                text = uplink_toml(heartbeat_s, keepalive_s) + boxd_toml(devs, "127.0.0.1", POLL_S)
                conf = work / "box" / "boxd.toml"
                conf.write_text(text)
                figures["configuration_bytes"] = len(text.encode())
                start = link.counts()
                box = BoxProcess.start(work / "box", conf, prefix=link.prefix())
                try:
                    figures.update(_phases(cloud, link, box, start, text, repeat, idle_s, quiet_s))
                finally:
                    box.stop()
            finally:
                farm.stop()
    finally:
        cloud.stop()
    return figures


def _phases(cloud: Cloud, link: SimLink, box: BoxProcess, start: LinkCounts, text: str, repeat: int,
            idle_s: float, quiet_s: float) -> dict[str, object]:
    out: dict[str, object] = {}
    wait_for(lambda: cloud.store.batch_keys(BOX), 60, "the first batch")
    out["first connection (start, handshake, point table, first poll)"] = _summary([settle(link, quiet_s) - start])

    before = settle(link, quiet_s)
    time.sleep(idle_s)
    idle = link.counts() - before
    out[f"idle, measured over {idle_s:g} s"] = _summary([idle])
    out["idle, per hour (scaled)"] = round(idle.ip.total * 3600 / idle_s)

    out["reconnection"] = _summary(_reconnections(link, box, repeat, quiet_s))

    pushes = []
    for n in range(repeat):
        before = settle(link, quiet_s)
        version = cloud.push_config(BOX, f"# push {n}\n{text}")
        wait_for(lambda v=version: (s := cloud.store.config_state(BOX)) is not None  # type: ignore[misc]
                 and s.version == v and s.status is not None, 60, "the Box's answer to the push")
        state = cloud.store.config_state(BOX)
        assert state is not None and state.status == "applied", state
        pushes.append(settle(link, quiet_s) - before)
    out["configuration push"] = _summary(pushes)
    out["reconnection, a configuration retained"] = _summary(_reconnections(link, box, repeat, quiet_s))

    commands = []
    for _ in range(repeat):
        before = settle(link, quiet_s)
        cmd_id = cloud.send_command(BOX, "read", {"points": ["d000.p001"]})
        wait_for(lambda i=cmd_id: (c := cloud.store.command(i)) is not None  # type: ignore[misc]
                 and c.status is not None, 60,
                 "the command's reply")
        commands.append(settle(link, quiet_s) - before)
    out["command (read one point)"] = _summary(commands)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.simbytes", description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--points", type=int, default=100, help="points of the Box, 100 a controller (default %(default)s)")
    ap.add_argument("--repeat", type=int, default=5, help="reconnections, pushes, commands (default %(default)s)")
    ap.add_argument("--idle-s", type=float, default=180.0, help="the idle window, s (default %(default)s)")
    ap.add_argument("--quiet-s", type=float, default=QUIET_S,
                    help="a phase ends after this long without a packet (default %(default)s)")
    ap.add_argument("--heartbeat-s", type=int, default=60, help="boxd's heartbeat_s (default %(default)s)")
    ap.add_argument("--keepalive-s", type=int, default=60, help="boxd's keepalive_s (default %(default)s)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.points < 5 or args.repeat < 1 or args.idle_s <= 0 or args.quiet_s <= 0:
        ap.error("--points at least 5, --repeat at least 1, --idle-s and --quiet-s above 0")
    logging.getLogger("boxcloud").setLevel(logging.ERROR)  # the cloud's alerts when the Box goes away
    with tempfile.TemporaryDirectory(prefix="bench-simbytes-") as tmp:
        figures = run(Path(tmp), args.points, args.repeat, args.idle_s, args.quiet_s, args.heartbeat_s,
                      args.keepalive_s)
    print(table(figures))
    print_figures(figures, args.json)
    return 0


def table(figures: dict[str, object]) -> str:
    """The phases as a Markdown table (a row a phase), then the other figures."""
    cols = ("ip_bytes", "ip_up_bytes", "ip_down_bytes", "ip_packets", "payload_bytes", "ip_bytes_min",
            "ip_bytes_max", "repeats")
    lines = [f"| phase | {' | '.join(cols)} |", f"|---|{'---:|' * len(cols)}"]
    rest = []
    for name, v in figures.items():
        if isinstance(v, dict):
            lines.append(f"| {name} | {' | '.join(f'{v[c]:,}' for c in cols)} |")
        else:
            rest.append(f"{name}: {v}")
    return "\n".join([*lines, "", *rest])


if __name__ == "__main__":
    raise SystemExit(main())
