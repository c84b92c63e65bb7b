"""The SSRF defence (`cloud.hooks.targets`): every refusal is a case here; what is allowed is a
global unicast address on an allowed port, and a name all of whose addresses are."""

from __future__ import annotations

import ipaddress

import pytest

from cloud.hooks import targets
from cloud.hooks.errors import TargetRefusedError

REFUSED = {
    # scheme, port, credentials
    "http://hooks.example.com/in": "only https",
    "ftp://hooks.example.com/in": "only https",
    "https://hooks.example.com:80/in": "port 80 is not allowed",
    "https://hooks.example.com:22/in": "port 22 is not allowed",
    "https://hooks.example.com:6379/in": "port 6379 is not allowed",
    "https://hooks.example.com:99999/in": "not a URL",
    "https://user:pw@hooks.example.com/in": "no credentials",
    "https://hooks.example.com@127.0.0.1/in": "no credentials",
    "https:///in": "no host",
    # loopback
    "https://127.0.0.1/in": "loopback",
    "https://127.8.9.10/in": "loopback",
    "https://localhost/in": "loopback",
    "https://api.localhost/in": "loopback",
    "https://[::1]/in": "loopback",
    # odd spellings of 127.0.0.1 (inet_aton reads them all as loopback)
    "https://2130706433/in": "oddly",
    "https://0x7f000001/in": "oddly",
    "https://0x7f.0.0.1/in": "oddly",
    "https://0177.0.0.1/in": "oddly",
    "https://017700000001/in": "oddly",
    "https://127.1/in": "oddly",
    "https://127.0.1/in": "oddly",
    "https://0/in": "oddly",
    "https://0x0/in": "oddly",
    # private, shared, unspecified
    "https://10.0.0.5/in": "private",
    "https://172.16.3.4/in": "private",
    "https://192.168.1.1/in": "private",
    "https://100.64.0.1/in": "shared",
    "https://0.0.0.0/in": "unspecified",
    "https://[::]/in": "unspecified",
    "https://168.63.129.16/in": "metadata",  # a public address, but Azure's host service
    # link-local and the metadata service
    "https://169.254.169.254/latest/meta-data/": "link-local",
    "https://169.254.0.1/in": "link-local",
    "https://[fe80::1]/in": "link-local",
    "https://[fe80::1%25eth0]/in": "scoped",
    # unique-local, IPv4 in IPv6
    "https://[fd00::1]/in": "unique-local",
    "https://[fc00::2]/in": "unique-local",
    "https://[::ffff:127.0.0.1]/in": "IPv4-mapped",
    "https://[::ffff:7f00:1]/in": "IPv4-mapped",
    "https://[::ffff:169.254.169.254]/in": "IPv4-mapped",
    "https://[::127.0.0.1]/in": "IPv4-compatible",
    "https://[64:ff9b::a9fe:a9fe]/in": "NAT64",
    "https://[2002:7f00:1::]/in": "6to4",
    "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/in": "Teredo",
    # multicast, documentation, reserved, broadcast
    "https://224.0.0.1/in": "multicast",
    "https://[ff02::1]/in": "multicast",
    "https://192.0.2.10/in": "private",  # documentation (TEST-NET-1): Python counts it private
    "https://240.0.0.1/in": "reserved",
    "https://255.255.255.255/in": "reserved",
    # not names
    "https://under_score.example.com/in": "not a valid host name",
    "https://-lead.example.com/in": "not a valid host name",
}


@pytest.mark.parametrize(("url", "why"), REFUSED.items(), ids=list(REFUSED))
def test_refused(url: str, why: str) -> None:
    with pytest.raises(TargetRefusedError, match=why):
        targets.parse(url)


@pytest.mark.parametrize("url", ["https://hooks.example.com/in", "https://hooks.example.com:8443/a?b=c",
                                 "https://45.33.0.10/in", "https://[2a00:1450:4001:80e::200e]/in",
                                 "https://HOOKS.Example.COM./in", "https://1e100.net/in"])
def test_allowed(url: str) -> None:
    assert targets.parse(url).port in targets.ALLOWED_PORTS


def _dns(answers: list[str]) -> targets.Resolver:
    return lambda _host, _port: answers


@pytest.mark.parametrize(("answers", "why"), [
    (["127.0.0.1"], "loopback"),
    (["45.33.0.10", "10.1.2.3"], "private"),  # one refused address refuses the name
    (["169.254.169.254"], "link-local"),
    (["::ffff:10.0.0.1"], "IPv4-mapped"),
    (["fd12::1"], "unique-local"),
    ([], "does not resolve"),
    (["not-an-address"], "not an address"),
])
def test_a_name_that_resolves_to_a_refused_address_is_refused(answers: list[str], why: str) -> None:
    with pytest.raises(TargetRefusedError, match=why):
        targets.resolve(targets.parse("https://hooks.example.com/in"), _dns(answers))


def test_a_name_is_resolved_once_to_the_first_address() -> None:
    asked: list[str] = []

    def dns(host: str, _port: int) -> list[str]:
        asked.append(host)
        return ["45.33.0.10", "45.33.0.11"]

    assert targets.resolve(targets.parse("https://hooks.example.com/in"), dns) == "45.33.0.10"
    assert asked == ["hooks.example.com"]


def test_the_operators_networks_open_only_themselves_and_never_the_metadata_service() -> None:
    reach = targets.operator_reach(["127.0.0.1/32", "10.20.0.0/16"], [9444])
    assert targets.parse("https://127.0.0.1:9444/hook", reach).port == 9444
    assert targets.resolve(targets.parse("https://hooks.corp.example:9444/in", reach),
                           lambda _h, _p: ["10.20.3.4"], reach) == "10.20.3.4"
    for url, why in [("https://127.0.0.2:9444/hook", "loopback"), ("https://10.21.0.1:9444/in", "private"),
                     ("https://127.0.0.1/hook", "port 443 is not allowed"), ("https://localhost:9444/in", "loopback"),
                     ("https://[::ffff:127.0.0.1]:9444/in", "IPv4-mapped")]:
        with pytest.raises(TargetRefusedError, match=why):
            targets.parse(url, reach)
    with pytest.raises(TargetRefusedError, match="private"):
        targets.parse("https://10.20.0.1/in")  # without the operator's setting: refused as ever
    wide = targets.Reach((ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("0.0.0.0/0")))
    for ip in ("169.254.169.254", "100.100.100.200", "0.0.0.0", "224.0.0.1"):  # whatever a Reach says
        assert targets.refusal(ipaddress.ip_address(ip), wide.networks)


@pytest.mark.parametrize(("networks", "why"), [
    (["0.0.0.0/0"], "never sent to"), (["169.254.0.0/16"], "never sent to"), (["100.64.0.0/10"], "100.100.100.200"),
    (["::/0"], "never sent to"), (["10.0.0.1/8"], "not a network in CIDR form"), (["loopback"], "CIDR"),
])
def test_the_operator_cannot_open_what_is_never_reached(networks: list[str], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        targets.operator_reach(networks)
