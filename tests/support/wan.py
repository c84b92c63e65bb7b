"""A WAN between the Box and the cloud: the Box in a network namespace of its own, a veth pair.

The cloud (Mosquitto, receiver) stays in the root namespace at the link's cloud address; the Box
(boxd, and the building simulator it polls over its own loopback) lives in namespace
``boxw-<pid>-<n>`` at its Box address. The two are a /30 of TEST-NET-2 (198.51.100.0/24, a
documentation range) that no other link here uses (`free_block()`: tests run beside each other),
whose only route is this veth, so nothing leaves the machine. Faults are real: the link
set down, a `tc tbf` bandwidth cap on both ends (this kernel has no netem; latency and
stalls come from `tests.support.faultproxy`).

`Wan(quiet=True)` carries nothing but the Box's IPv4 traffic (IPv6 off on both ends, permanent
neighbour entries instead of ARP), so that `counters()` (the cloud end's interface counters, less
the 14-byte Ethernet header of each frame) are the IP bytes a SIM would bill.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

_n = itertools.count(1)
_ETHERNET_HEADER = 14  # a veth frame: destination, source, EtherType; no preamble, no FCS


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@dataclass(frozen=True, slots=True)
class IpCounts:
    """IP bytes and packets that crossed the link each way (up: from the Box)."""

    up_bytes: int
    down_bytes: int
    up_packets: int
    down_packets: int

    def __sub__(self, other: IpCounts) -> IpCounts:
        return IpCounts(self.up_bytes - other.up_bytes, self.down_bytes - other.down_bytes,
                        self.up_packets - other.up_packets, self.down_packets - other.down_packets)

    @property
    def total(self) -> int:
        return self.up_bytes + self.down_bytes


def free_block() -> tuple[str, str]:
    """(cloud address, Box address) of a /30 in 198.51.100.0/24 that no interface here uses; each
    process starts looking at a place of its own, so that two picking at once do not pick the same."""
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, timeout=10).stdout
    start = os.getpid() % 64 * 4
    for base in [*range(start, 256, 4), *range(0, start, 4)]:
        if f"198.51.100.{base + 1}/" not in used and f"198.51.100.{base + 2}/" not in used:
            return f"198.51.100.{base + 1}", f"198.51.100.{base + 2}"
    raise RuntimeError("no free /30 in 198.51.100.0/24")


class Wan:
    """The namespace and the link. Use as a context manager; cleans up on failure too."""

    def __init__(self, namespace: str | None = None, *, cloud_ip: str, box_ip: str, quiet: bool = False) -> None:
        """A new namespace for the Box, or the WAN side of an existing one (e.g. a FieldNetwork's box);
        the link's addresses from `free_block()` (the cloud's certificate names `cloud_ip`)."""
        n = next(_n)
        self._own = namespace is None
        self.ns = namespace or f"boxw-{os.getpid()}-{n}"
        self.cloud_if, self.box_if = f"wc{os.getpid() % 100000}{n}", f"wb{os.getpid() % 100000}{n}"
        self.cloud_ip, self.box_ip, self.quiet = cloud_ip, box_ip, quiet

    def __enter__(self) -> Wan:
        if self._own:
            _ip("netns", "add", self.ns)
        try:
            _ip("link", "add", self.cloud_if, "type", "veth", "peer", "name", self.box_if)
            _ip("link", "set", self.box_if, "netns", self.ns)
            if self.quiet:
                self._silence()
            _ip("addr", "add", f"{self.cloud_ip}/30", "dev", self.cloud_if)
            _ip("link", "set", self.cloud_if, "up")
            for args in (("addr", "add", f"{self.box_ip}/30", "dev", self.box_if), ("link", "set", self.box_if, "up"),
                         ("link", "set", "lo", "up")):
                _ip("-n", self.ns, *args)
            if self.quiet:
                self._neighbours()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        subprocess.run(["ip", "link", "del", self.cloud_if], capture_output=True, timeout=10)
        if self._own:
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=10)

    def _silence(self) -> None:
        """IPv6 off on both ends (no router solicitations, no MLD), before the link comes up."""
        Path(f"/proc/sys/net/ipv6/conf/{self.cloud_if}/disable_ipv6").write_text("1")
        _ip("netns", "exec", self.ns, "sysctl", "-qw", f"net.ipv6.conf.{self.box_if}.disable_ipv6=1")

    def _neighbours(self) -> None:
        """Permanent neighbour entries both ways: no ARP on the link."""
        cloud_mac = Path(f"/sys/class/net/{self.cloud_if}/address").read_text().strip()
        box_mac = subprocess.run([*self.prefix(), "cat", f"/sys/class/net/{self.box_if}/address"], check=True,
                                 capture_output=True, text=True, timeout=10).stdout.strip()
        _ip("neigh", "replace", self.box_ip, "lladdr", box_mac, "dev", self.cloud_if, "nud", "permanent")
        _ip("-n", self.ns, "neigh", "replace", self.cloud_ip, "lladdr", cloud_mac, "dev", self.box_if,
            "nud", "permanent")

    def counters(self) -> IpCounts:
        """IP bytes and packets through the link so far, from the cloud end's interface counters (its rx
        is the Box's upload). Only the Box's IP traffic with `quiet=True` (else ARP and IPv6 too)."""
        stats = Path(f"/sys/class/net/{self.cloud_if}/statistics")
        rx_b, tx_b, rx_p, tx_p = (int((stats / name).read_text())
                                  for name in ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets"))
        return IpCounts(rx_b - _ETHERNET_HEADER * rx_p, tx_b - _ETHERNET_HEADER * tx_p, rx_p, tx_p)

    def prefix(self) -> list[str]:
        """The command prefix that runs a program inside the Box's namespace."""
        return ["ip", "netns", "exec", self.ns]

    def link(self, up: bool) -> None:
        """Pull the cable (or put it back), on the cloud's side."""
        _ip("link", "set", self.cloud_if, "up" if up else "down")

    def cap(self, rate: str | None) -> None:
        """Cap the bandwidth both ways with a token bucket (tc tbf), or lift the cap."""
        for ns, dev in ((None, self.cloud_if), (self.ns, self.box_if)):
            pre = ["-n", ns] if ns else []
            subprocess.run(["tc", *pre, "qdisc", "del", "dev", dev, "root"], capture_output=True, timeout=10)
            if rate:
                subprocess.run(["tc", *pre, "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate,
                                "burst", "4kb", "latency", "500ms"], check=True, capture_output=True, timeout=10)


def retarget(identity_dir: Path, host: str, port: int) -> None:
    """Point a provisioned Box at another broker address (the WAN side, or a proxy)."""
    import json

    meta = identity_dir / "identity.json"
    doc = json.loads(meta.read_text())
    doc["broker_host"], doc["broker_port"] = host, port
    meta.write_text(json.dumps(doc))
