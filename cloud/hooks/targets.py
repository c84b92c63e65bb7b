"""Where a webhook may be sent: the SSRF defence. Pure but for `resolve`, whose resolver is passed in.

A customer names an endpoint by URL; the platform must never be aimed at its own internals
(the metadata service, the database, the broker, anything on loopback or a private network).
So:

- ``https`` only, to a port of `ALLOWED_PORTS`; no user name or password in the URL;
- the host is a DNS name or a canonical address: an address spelled oddly (decimal
  ``2130706433``, hex ``0x7f.1``, octal ``0177.0.0.1``, short ``127.1``) is refused before any
  resolver (glibc's inet_aton) can read it as loopback;
- every address the name resolves to must be global unicast (`refusal`): loopback, private
  (RFC 1918, CGNAT), link-local (the cloud metadata service 169.254.169.254 among them),
  unique-local (fc00::/7), IPv4-mapped and -compatible IPv6, NAT64, 6to4, Teredo, multicast,
  unspecified, documentation and reserved ranges are refused; one refused address refuses the name;
- the name is resolved once and the connection is made to that address (`cloud.hooks.client`
  pins it): a DNS answer that changes between the check and the connection (rebinding) is never
  used. Redirects are not followed and an answer is read up to a small cap (`cloud.hooks.client`).

**The operator's exception** (`Reach`, off by default): an operator may name private networks of
their own that webhooks may reach (the platform's settings, `boxcloud init --webhook-allow-network`;
never the users' API), and the ports allowed. Even then the cloud metadata addresses, link-local,
"this network" (0/8), multicast and every IPv6 spelling of an IPv4 address stay refused
(`_never`), and a network overlapping them cannot be allowed (`operator_reach`).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from cloud.hooks.errors import TargetRefusedError

ALLOWED_PORTS = frozenset({443, 8443})
MAX_URL = 2048
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")  # every pattern here is matched whole (fullmatch)
_NUMERIC_ISH = re.compile(r"[0-9a-fx.]+")  # what inet_aton might read as an address
_CANONICAL_V4 = re.compile(r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_6TO4 = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # 0.0.0.0 reaches the machine itself on Linux
# the cloud providers' metadata and host services: never, whatever the operator allows
METADATA = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "169.254.169.123", "168.63.129.16", "100.100.100.200", "fd00:ec2::254"))
_NEVER_NETS = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "255.255.255.255/32", "::/128", "fe80::/10", "ff00::/8",
    "::ffff:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "2001::/32"))
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]


@dataclass(frozen=True)
class Reach:
    """Where webhooks (or MQTT connectors) may go: public addresses on `ports`, and the operator's own
    `networks` (none by default)."""

    networks: tuple[Network, ...] = ()
    ports: frozenset[int] = ALLOWED_PORTS


PUBLIC_ONLY = Reach()


def operator_reach(networks: Sequence[str], ports: Sequence[int] = tuple(ALLOWED_PORTS), *,
                   what: str = "webhook") -> Reach:
    """The operator's settings as a `Reach` (`what`: whose, in the messages: webhook, MQTT broker).

    Raises:
        ValueError: a network is not a CIDR (``127.0.0.1/32``, ``10.20.0.0/16``), or overlaps what is
            never reached (metadata, link-local, 0/8, multicast, IPv4 in IPv6); a port is not 1-65535.
    """
    nets = []
    for text in networks:
        try:
            net = ipaddress.ip_network(text, strict=True)
        except ValueError as e:
            raise ValueError(f"{what} network {text!r} is not a network in CIDR form (e.g. 127.0.0.1/32): "
                             f"{e}") from None
        bad = [str(n) for n in _NEVER_NETS if n.version == net.version and n.overlaps(net)]
        bad += [str(a) for a in METADATA if a in net]
        if bad:
            raise ValueError(f"{what} network {text} holds addresses never sent to ({', '.join(bad)}): "
                             "name a narrower network")
        nets.append(net)
    if not ports or not all(isinstance(p, int) and 1 <= p <= 65535 for p in ports):
        raise ValueError(f"{what} ports {list(ports)} are not port numbers (1-65535)")
    return Reach(tuple(nets), frozenset(ports))


@dataclass(frozen=True)
class Target:
    """An endpoint's URL, checked: host (lower case, no brackets), port, and the URL itself."""

    url: str
    host: str
    port: int
    literal: Address | None  # the host was an address


def parse(url: str, reach: Reach = PUBLIC_ONLY) -> Target:
    """Check an endpoint's URL (no I/O). Raises TargetRefusedError saying what is wrong."""
    ports = reach.ports
    if len(url) > MAX_URL:
        raise TargetRefusedError(f"the URL is longer than {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise TargetRefusedError(f"not a URL: {e}") from None
    if parts.scheme != "https":
        raise TargetRefusedError("only https:// endpoints are allowed")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise TargetRefusedError("no credentials in the URL: give them as the connector's authentication")
    host = (parts.hostname or "").lower()
    if not host:
        raise TargetRefusedError("the URL has no host")
    port = 443 if port is None else port
    if port not in ports:
        raise TargetRefusedError(f"port {port} is not allowed (allowed: {', '.join(map(str, sorted(ports)))})")
    literal = _literal(host)
    if literal is not None:
        why = refusal(literal, reach.networks)
        if why:
            raise TargetRefusedError(f"{host} is {why}: not a public address")
    return Target(url, host, port, literal)


def _literal(host: str) -> Address | None:
    """The address a host spells, or None for a DNS name; refuses odd spellings and bad names."""
    if ":" in host:
        if "%" in host:
            raise TargetRefusedError(f"{host!r} is a scoped (link-local) address: not a public address")
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise TargetRefusedError(f"{host!r} is not an IPv6 address") from None
    if _CANONICAL_V4.fullmatch(host):
        return ipaddress.IPv4Address(host)
    labels = host.rstrip(".").split(".")
    if _NUMERIC_ISH.fullmatch(host) and (labels[-1].isdigit() or labels[-1].startswith("0x")):
        raise TargetRefusedError(f"{host!r} spells an address oddly (decimal, hex, octal or short): "
                                 "write it as a dotted quad, or use a name")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise TargetRefusedError(f"{host!r} is not a valid host name")
    if host.rstrip(".") == "localhost" or host.rstrip(".").endswith(".localhost"):
        raise TargetRefusedError(f"{host} is loopback: not a public address")
    return None


def refusal(ip: Address, allowed: Sequence[Network] = ()) -> str | None:
    """Why the platform never sends to this address, or None for a global unicast address (or one of
    the operator's `allowed` networks, unless it is one never reached whatever is allowed)."""
    why = _never(ip)
    if why:
        return why
    if any(ip in net for net in allowed):
        return None
    return _inside(ip)


def _never(ip: Address) -> str | None:
    """What is refused even inside a network the operator allows."""
    if ip in METADATA:
        return "a cloud metadata address (link-local, or a provider's host service)"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return "an IPv4-mapped IPv6 address"
        if ip in _NAT64 or ip in _NAT64_LOCAL:
            return "a NAT64 address"
        if ip in _6TO4 or ip in _TEREDO:
            return "a tunnelled (6to4 or Teredo) address"
        if int(ip) >> 32 == 0 and int(ip) > 1:
            return "an IPv4-compatible IPv6 address"
    if ip.is_unspecified or ip in _THIS_NETWORK:
        return "unspecified"
    if ip.is_link_local:
        return "link-local (the cloud metadata service among them)"
    if ip.is_multicast:
        return "multicast"
    return None


def _inside(ip: Address) -> str | None:
    """Why an address is not public (loopback, private, ...), or None."""
    if isinstance(ip, ipaddress.IPv6Address) and (ip.is_site_local or ip in ipaddress.ip_network("fc00::/7")):
        return "unique-local"
    if ip.is_loopback:
        return "loopback"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "shared (carrier-grade NAT)"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "reserved"
    return None


def system_resolver(host: str, port: int) -> list[str]:
    """The machine's resolver (getaddrinfo): every address of a name, TCP."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise TargetRefusedError(f"{host} does not resolve: {e}") from None
    return [str(i[4][0]) for i in infos]


def resolve(target: Target, resolver: Resolver = system_resolver, reach: Reach = PUBLIC_ONLY) -> str:
    """The one address to connect to: resolved once; every address of the name must be allowed.

    Raises:
        TargetRefusedError: the name does not resolve, or resolves to an address never sent to.
    """
    if target.literal is not None:
        return str(target.literal)
    answers = list(resolver(target.host, target.port))
    if not answers:
        raise TargetRefusedError(f"{target.host} does not resolve")
    for a in answers:
        try:
            ip = ipaddress.ip_address(a.split("%", 1)[0])
        except ValueError:
            raise TargetRefusedError(f"{target.host} resolves to {a!r}, not an address") from None
        why = refusal(ip, reach.networks)
        if why:
            raise TargetRefusedError(f"{target.host} resolves to {ip}, which is {why}: not a public address")
    return answers[0].split("%", 1)[0]
