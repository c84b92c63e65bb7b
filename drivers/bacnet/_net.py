"""The field-bus interface's IPv4 address, netmask and broadcast address.

Does: ask the kernel (SIOCGIFADDR / SIOCGIFNETMASK ioctls on a datagram socket that
is never bound or used) for an interface's first IPv4 address, at run time, in the
calling thread's network namespace. Does not: bind, send or receive anything, or
choose an interface (the configuration names it: the Box never guesses, and never
falls back to another interface such as the WAN).
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import socket
import struct
from dataclasses import dataclass
from typing import Final

from drivers.bacnet.errors import InterfaceError

_SIOCGIFADDR: Final = 0x8915
_SIOCGIFNETMASK: Final = 0x891B
_SIOCGIFFLAGS: Final = 0x8913
_IFF_UP: Final = 0x1


@dataclass(frozen=True, slots=True)
class InterfaceAddress:
    """An interface's IPv4 address within its network."""

    interface: str
    address: str  # e.g. "192.0.2.1"
    prefix: int  # e.g. 24
    broadcast: str  # e.g. "192.0.2.255"

    @property
    def cidr(self) -> str:
        """ "192.0.2.1/24"."""
        return f"{self.address}/{self.prefix}"


def interface_address(name: str) -> InterfaceAddress:
    """The IPv4 address of interface `name`.

    Raises:
        InterfaceError: no such interface, it is down, or it has no IPv4 address.
    """
    try:
        socket.if_nametoindex(name)
    except OSError:
        raise InterfaceError(f"field-bus interface {name!r} does not exist on this machine") from None
    packed = struct.pack("256s", name.encode()[:15])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack_from("H", fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, packed), 16)[0]
        try:
            addr = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, packed)
            mask = fcntl.ioctl(s.fileno(), _SIOCGIFNETMASK, packed)
        except OSError as e:
            if e.errno == errno.EADDRNOTAVAIL:
                raise InterfaceError(f"field-bus interface {name!r} has no IPv4 address") from None
            raise InterfaceError(f"field-bus interface {name!r}: {e.strerror}") from e
    if not flags & _IFF_UP:
        raise InterfaceError(f"field-bus interface {name!r} is down")
    ip = socket.inet_ntoa(addr[20:24])
    netmask = socket.inet_ntoa(mask[20:24])
    network = ipaddress.IPv4Network(f"{ip}/{netmask}", strict=False)
    return InterfaceAddress(name, ip, network.prefixlen, str(network.broadcast_address))
