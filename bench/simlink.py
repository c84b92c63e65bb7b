"""The gateway's uplink as its SIM would bill it: IP bytes both ways, counted at a network interface.

    gateway + device farm (namespace)  --veth-->  proxy (root namespace)  -->  Mosquitto --> cloud

`SimLink` puts the gateway under test (and the device farm it polls, on the namespace's own
loopback, so that field-bus traffic never crosses the link) in a network namespace whose only way
out is a veth pair (`tests.support.wan.Wan`, quiet: no ARP, no IPv6). On the root side a TCP proxy
(`tests.support.faultproxy.FaultProxy`, no fault set) listens on the link's address and forwards to
the broker on 127.0.0.1: it counts the TCP payload (TLS records, MQTT) and can cut every
connection (`reset_all`) to force reconnections. `counts()` reads both: the IP bytes and packets
of the veth (every header, handshake and acknowledgement the SIM would carry: what 4G adds below
IP is not counted) and the payload bytes of the proxy. Needs root.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType

from tests.support.faultproxy import FaultProxy
from tests.support.wan import IpCounts, Wan, free_block


@dataclass(frozen=True, slots=True)
class LinkCounts:
    """What crossed the link: IP (interface counters) and TCP payload (the proxy), each way."""

    ip: IpCounts
    payload_up: int
    payload_down: int

    def __sub__(self, other: LinkCounts) -> LinkCounts:
        return LinkCounts(self.ip - other.ip, self.payload_up - other.payload_up,
                          self.payload_down - other.payload_down)


class SimLink:
    """The namespace, the veth and the proxy. `addresses` first (the broker's certificate must name
    `cloud_ip`), then use as a context manager around the gateway's run."""

    def __init__(self, broker_port: int, cloud_ip: str, box_ip: str) -> None:
        self.cloud_ip, self.box_ip, self.broker_port = cloud_ip, box_ip, broker_port
        self.wan = Wan(cloud_ip=cloud_ip, box_ip=box_ip, quiet=True)
        self.proxy = FaultProxy("127.0.0.1", broker_port, listen_host=cloud_ip)

    @staticmethod
    def addresses() -> tuple[str, str]:
        """(cloud address, gateway address) for a new link: a /30 no other link here uses."""
        return free_block()

    def __enter__(self) -> SimLink:
        self.wan.__enter__()
        try:
            self.proxy.start()
        except BaseException:
            self.wan.__exit__()
            raise
        return self

    def __exit__(self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None) -> None:
        try:
            self.proxy.stop()
        finally:
            self.wan.__exit__()

    @property
    def port(self) -> int:
        """The proxy's port on `cloud_ip`: where the gateway connects."""
        return self.proxy.port

    def prefix(self) -> list[str]:
        """The command prefix that runs a program in the gateway's namespace."""
        return self.wan.prefix()

    def counts(self) -> LinkCounts:
        return LinkCounts(self.wan.counters(), self.proxy.upstream_bytes, self.proxy.downstream_bytes)


def per_point(delta: LinkCounts, polled: int, window_s: float) -> dict[str, float]:
    """A window's bytes per polled point (points configured x poll cycles), both directions and each, and
    the IP bytes of a day and of a 30-day month at the window's rate (MB, 10^6 bytes)."""
    n = max(polled, 1)
    return {
        "ip_bytes_per_point": round(delta.ip.total / n, 3),
        "ip_up_bytes_per_point": round(delta.ip.up_bytes / n, 3),
        "ip_down_bytes_per_point": round(delta.ip.down_bytes / n, 3),
        "payload_bytes_per_point": round((delta.payload_up + delta.payload_down) / n, 3),
        "ip_mb_per_day": round(delta.ip.total * 86_400 / window_s / 1e6, 2),
        "ip_mb_per_month": round(delta.ip.total * 30 * 86_400 / window_s / 1e6, 1),
    }
