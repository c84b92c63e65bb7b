"""Network interfaces as an unprivileged process sees them: counters, address, state, the route taken.

Does: parse ``/proc/net/dev`` (the byte counters of the calling process's network namespace; pure
`parse_net_dev`), read an interface's index, IPv4 address and flags with ioctls, and find the
source address the kernel would use towards a host (a UDP socket's ``connect``: no packet is
sent). No netlink (the daemon's sandbox allows AF_INET, AF_INET6 and AF_UNIX only) and no
privilege.

Does not: change anything (addresses, routes and metrics belong to the network's own tools;
`boxd`'s WAN choice asks a root unit for that).
"""

from __future__ import annotations

import fcntl
import re
import socket
import struct
from pathlib import Path

from drivers.modem._types import ByteCounters

NET_DEV = Path("/proc/net/dev")
IFNAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_SIOCGIFFLAGS, _SIOCGIFADDR = 0x8913, 0x8915
_IFF_UP, _IFF_RUNNING = 0x1, 0x40


def parse_net_dev(text: str) -> dict[str, ByteCounters]:
    """``/proc/net/dev`` -> interface -> bytes received and sent (malformed lines are skipped)."""
    out: dict[str, ByteCounters] = {}
    for line in text.splitlines()[2:]:
        name, colon, rest = line.partition(":")
        values = rest.split()
        if not colon or len(values) < 9 or not all(v.isdigit() for v in (values[0], values[8])):
            continue
        out[name.strip()] = ByteCounters(rx=int(values[0]), tx=int(values[8]))
    return out


def counters(interface: str) -> ByteCounters | None:
    """The interface's byte counters now (None when it does not exist)."""
    try:
        return parse_net_dev(NET_DEV.read_text()).get(interface)
    except OSError:
        return None


def index(interface: str) -> int:
    """The interface's index (0 when it does not exist). A new index means a new interface: a modem
    that re-enumerated on USB, whose counters started again at zero."""
    if not IFNAME_RE.fullmatch(interface):
        return 0
    try:
        return socket.if_nametoindex(interface)
    except OSError:
        return 0


def _ioctl(interface: str, request: int) -> bytes | None:
    if not IFNAME_RE.fullmatch(interface):
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            return fcntl.ioctl(s.fileno(), request, struct.pack("256s", interface.encode()))
        except OSError:
            return None


def address(interface: str) -> str:
    """The interface's IPv4 address ("" when it has none or does not exist)."""
    raw = _ioctl(interface, _SIOCGIFADDR)
    return socket.inet_ntoa(raw[20:24]) if raw is not None else ""


def running(interface: str) -> bool:
    """Whether the interface is up and has a carrier."""
    raw = _ioctl(interface, _SIOCGIFFLAGS)
    if raw is None:
        return False
    flags = struct.unpack("H", raw[16:18])[0]
    return bool(flags & _IFF_UP and flags & _IFF_RUNNING)


def source_towards(host: str, port: int = 9) -> str:
    """The local address the kernel would send from to reach `host` ("" when there is no route).
    Nothing is sent: connecting a UDP socket only chooses the route."""
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
    except (OSError, UnicodeError):
        return ""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(infos[0][4])
            return str(s.getsockname()[0])
        except OSError:
            return ""
