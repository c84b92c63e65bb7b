"""A WAN between the Box and the cloud: the Box in a network namespace of its own, a veth pair.

The cloud (Mosquitto, receiver) stays in the root namespace at 198.51.100.1; the Box
(boxd, and the building simulator it polls over its own loopback) lives in namespace
``boxw-<pid>-<n>`` at 198.51.100.2. The /30 is TEST-NET-2, a documentation range: the
only route to it is this veth, so nothing leaves the machine. Faults are real: the link
set down, a `tc tbf` bandwidth cap on both ends (this kernel has no netem; latency and
stalls come from `tests.support.faultproxy`).
"""

from __future__ import annotations

import itertools
import os
import subprocess
from pathlib import Path

CLOUD_IP, BOX_IP = "198.51.100.1", "198.51.100.2"
_n = itertools.count(1)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class Wan:
    """The namespace and the link. Use as a context manager; cleans up on failure too."""

    def __init__(self, namespace: str | None = None) -> None:
        """A new namespace for the Box, or the WAN side of an existing one (e.g. a FieldNetwork's box)."""
        n = next(_n)
        self._own = namespace is None
        self.ns = namespace or f"boxw-{os.getpid()}-{n}"
        self.cloud_if, self.box_if = f"wc{os.getpid() % 100000}{n}", f"wb{os.getpid() % 100000}{n}"

    def __enter__(self) -> Wan:
        if self._own:
            _ip("netns", "add", self.ns)
        try:
            _ip("link", "add", self.cloud_if, "type", "veth", "peer", "name", self.box_if)
            _ip("link", "set", self.box_if, "netns", self.ns)
            _ip("addr", "add", f"{CLOUD_IP}/30", "dev", self.cloud_if)
            _ip("link", "set", self.cloud_if, "up")
            for args in (("addr", "add", f"{BOX_IP}/30", "dev", self.box_if), ("link", "set", self.box_if, "up"),
                         ("link", "set", "lo", "up")):
                _ip("-n", self.ns, *args)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        subprocess.run(["ip", "link", "del", self.cloud_if], capture_output=True, timeout=10)
        if self._own:
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=10)

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
