"""The simulated modem's data path: a real network interface in the Box's network namespace (root only).

`NetnsBearer` is a veth pair: one end in the Box's namespace, named as a modem's interface is
(``wwan0``), the other in the root namespace (the operator's side, where the platform's address is
routed). The simulated modem (`drivers.sim.at_modem`) drives it: `up` gives the Box's end the
bearer's address, a carrier and a default route (the metric networkd gives a modem's DHCP route),
`down` takes the carrier away (the routes go with it), `stall` cuts the operator's side only (the
Box's end keeps its address and route and nothing passes: a bearer that says it is up and carries
nothing), `reenumerate` deletes and re-creates the pair, as a modem's USB reset makes a new
interface whose counters start at zero. `totals` adds up the bytes of every incarnation, the truth
the Box's count of data used is checked against.

Does not: simulate radio latency (the kernel has no netem here; `tc tbf` and the fault proxy do
what can be done).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess

CELLULAR_METRIC = 700
_n = itertools.count(1)


def _ip(*args: str, check: bool = True) -> str:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15)
    if check and r.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


class NetnsBearer:
    """The bearer's interface. The constructor does no I/O; `create()` makes the pair (down)."""

    def __init__(self, box_ns: str, *, interface: str = "wwan0", subnet: str = "100.64.0",
                 metric: int = CELLULAR_METRIC) -> None:
        """`subnet` is the first three octets of its /30: the operator's side .1, the Box's .2."""
        self.box_ns, self.interface, self.metric = box_ns, interface, metric
        self.peer = f"mdm{os.getpid() % 100000}{next(_n)}"[:15]
        self.gateway, self.address = f"{subnet}.1", f"{subnet}.2"
        self.done_rx = self.done_tx = 0  # bytes of interfaces already gone
        self.incarnations = 0

    def create(self) -> None:
        """The pair, down, the operator's side addressed and up."""
        _ip("link", "add", self.peer, "type", "veth", "peer", "name", self.interface, "netns", self.box_ns)
        _ip("addr", "add", f"{self.gateway}/30", "dev", self.peer)
        _ip("link", "set", self.peer, "up")
        self.incarnations += 1

    def remove(self) -> None:
        """Delete the pair (idempotent)."""
        _ip("link", "del", self.peer, check=False)

    def up(self, address: str) -> None:
        """The bearer is up: the Box's end gets the address, a carrier and its default route."""
        _ip("link", "set", self.peer, "up")
        _ip("-n", self.box_ns, "addr", "replace", f"{address}/30", "dev", self.interface)
        _ip("-n", self.box_ns, "link", "set", self.interface, "up")
        _ip("-n", self.box_ns, "route", "replace", "default", "via", self.gateway, "dev", self.interface,
            "metric", str(self.metric))

    def down(self) -> None:
        """The bearer is down: no carrier, no route."""
        _ip("-n", self.box_ns, "link", "set", self.interface, "down", check=False)
        _ip("-n", self.box_ns, "addr", "flush", "dev", self.interface, check=False)

    def stall(self, stalled: bool) -> None:
        """Nothing passes (the operator's side is cut), or passes again."""
        _ip("link", "set", self.peer, "down" if stalled else "up")

    def counters(self) -> tuple[int, int]:
        """(received, sent) by the Box's end now ((0, 0) when it is not there)."""
        out = _ip("-n", self.box_ns, "-j", "-s", "link", "show", "dev", self.interface, check=False)
        try:
            stats = json.loads(out)[0]["stats64"]
            return int(stats["rx"]["bytes"]), int(stats["tx"]["bytes"])
        except (ValueError, LookupError, TypeError):
            return 0, 0

    def reenumerate(self) -> None:
        """The modem's USB device went away: a new interface comes, counters at zero, down."""
        rx, tx = self.counters()
        self.done_rx, self.done_tx = self.done_rx + rx, self.done_tx + tx
        self.remove()
        self.create()

    def totals(self) -> tuple[int, int]:
        """(received, sent) by the Box over every incarnation of the interface."""
        rx, tx = self.counters()
        return self.done_rx + rx, self.done_tx + tx
