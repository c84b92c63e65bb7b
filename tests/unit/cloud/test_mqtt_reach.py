"""The operator's exception for MQTT connectors (`Settings.mqtt_allow_networks`, `mqtt_ports`): a
private network of theirs opens only itself, on its ports only, for MQTT brokers only; the cloud
metadata addresses stay refused, at the API's check (`link.target`) and at each connection's
resolution (`targets.resolve`, a name resolving there; and the worker's link, which connects to
the address it checked)."""

from __future__ import annotations

import ipaddress
from typing import Any, cast

import pytest

from cloud.api._secrets import Seeds
from cloud.hooks import targets
from cloud.mqttconn import MqttWorker, link
from cloud.mqttconn._link_thread import Link
from cloud.mqttconn.errors import TargetRefusedError
from cloud.platform import Settings
from cloud.store import ConnectorRow, Store

OPEN = Settings(mqtt_allow_networks=("127.0.0.1/32", "10.20.0.0/16"), mqtt_ports=(8883, 18883))


def _resolves_to(address: str) -> targets.Resolver:
    return lambda _host, _port: [address]


@pytest.mark.parametrize(("host", "port"), [("127.0.0.1", 18883), ("10.20.3.4", 8883)])
def test_an_operator_network_is_reached_on_its_ports(host: str, port: int) -> None:
    tgt = link.target(host, port, OPEN.mqtt_reach)
    assert targets.resolve(tgt, _resolves_to(host), OPEN.mqtt_reach) == host
    by_name = link.target("broker.customer.internal", port, OPEN.mqtt_reach)
    assert targets.resolve(by_name, _resolves_to(host), OPEN.mqtt_reach) == host


@pytest.mark.parametrize(("host", "port", "why"), [
    ("127.0.0.2", 8883, "loopback"),  # beside the network allowed: not in it
    ("10.21.0.1", 8883, "private"),
    ("192.168.1.10", 8883, "private"),
    ("127.0.0.1", 1883, "port 1883 is not allowed"),  # the network, on another port
    ("169.254.169.254", 8883, "cloud metadata"),
    ("100.100.100.200", 8883, "cloud metadata"),
])
def test_only_the_operator_networks_open_and_metadata_stays_refused(host: str, port: int, why: str) -> None:
    with pytest.raises(TargetRefusedError, match=why):
        link.target(host, port, OPEN.mqtt_reach)
    if port in OPEN.mqtt_reach.ports:  # a name resolving there, at the connection
        with pytest.raises(TargetRefusedError, match=why):
            targets.resolve(link.target("broker.customer.example", port, OPEN.mqtt_reach), _resolves_to(host),
                            OPEN.mqtt_reach)


def test_by_default_and_through_the_webhook_setting_brokers_are_public_only() -> None:
    for s in (Settings(), Settings(webhook_allow_networks=("127.0.0.1/32",), webhook_ports=(8883,))):
        assert s.mqtt_reach == link.PUBLIC_ONLY
        with pytest.raises(TargetRefusedError, match="loopback"):
            link.target("127.0.0.1", 8883, s.mqtt_reach)
    assert link.target("8.8.8.1", 8883).host == "8.8.8.1"  # a public one, as ever


def test_a_network_holding_a_metadata_address_cannot_be_allowed() -> None:
    with pytest.raises(ValueError, match=r"MQTT broker network 169\.254\.0\.0/16 holds addresses never sent to"):
        Settings(mqtt_allow_networks=("169.254.0.0/16",)).mqtt_reach  # noqa: B018
    with pytest.raises(ValueError, match="MQTT broker ports"):
        Settings(mqtt_ports=(0,)).mqtt_reach  # noqa: B018


def _connects_to(host: str, resolves_to: str, reach: targets.Reach | None = None) -> str:
    """The address a connector's link would connect to (no connection made: the client is only built)."""
    options: dict[str, Any] = {} if reach is None else {"reach": reach}
    worker = MqttWorker(cast("Store", None), cast("Seeds", None), lambda *_a: "", resolver=_resolves_to(resolves_to),
                        **options)
    row = ConnectorRow(1, 1, "c", "mqtt", 1, {"host": host, "port": 8883, "ca_pem": ""}, "", "enabled", 0, None, "",
                       0, 0.0)
    client, name = Link(worker, 1)._client(row, {})
    assert name == host  # TLS checks the certificate against the name
    return client.address


def test_each_connection_of_a_link_checks_the_address_against_the_operator_reach() -> None:
    assert _connects_to("broker.customer.internal", "127.0.0.1", OPEN.mqtt_reach) == "127.0.0.1"
    for refused, why in (("127.0.0.2", "loopback"), ("169.254.169.254", "cloud metadata")):
        with pytest.raises(TargetRefusedError, match=why):
            _connects_to("broker.customer.internal", refused, OPEN.mqtt_reach)
    with pytest.raises(TargetRefusedError, match="loopback"):  # a worker without the operator's reach
        _connects_to("broker.customer.internal", "127.0.0.1")


def test_a_metadata_address_stays_refused_even_inside_a_network_allowed() -> None:
    # operator_reach refuses such a network; a Reach made without it still never reaches metadata
    wide = targets.Reach((ipaddress.ip_network("100.64.0.0/10"),), link.ALLOWED_PORTS)
    assert link.target("100.64.0.1", 8883, wide).host == "100.64.0.1"
    with pytest.raises(TargetRefusedError, match="cloud metadata"):
        link.target("100.100.100.200", 8883, wide)
    with pytest.raises(TargetRefusedError, match="cloud metadata"):
        targets.resolve(link.target("broker.customer.internal", 8883, wide), _resolves_to("100.100.100.200"), wide)
