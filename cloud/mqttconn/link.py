"""One connection to a customer's broker: the address checked and pinned, TLS >= 1.2 verified.

The broker is named by host and port; the host goes through the webhooks' SSRF defence
(`cloud.hooks.targets`: a public address only, odd spellings refused, every address of a name
checked), to a port of `ALLOWED_PORTS` only; or what the operator's `Reach` allows (settings
`mqtt_allow_networks`, `mqtt_ports`: private networks of their own; the metadata addresses stay
refused), both when the API takes the connector and at every connection. It is resolved once per connection and the TCP
connection is made to that address (`_Pinned` replaces paho's socket creation: paho 2.2.0,
pinned), while TLS checks the certificate against the host *name* (SNI and hostname checking
use it): a DNS answer that changes after the check is never used. Proxies from the environment
are never used. The trust anchors are the customer's CA (PEM, given through the API) or the
system's; the client certificate and key, when given, are loaded from memory
(`trust.tls.client_context_pem`). Not here: what is sent or received (`cloud.mqttconn.worker`).
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from cloud.hooks import targets
from cloud.mqttconn.errors import TargetRefusedError
from trust import tls

SYSTEM_CA = Path("/etc/ssl/certs/ca-certificates.crt")
ALLOWED_PORTS = frozenset({8883, 8884})  # MQTT over TLS (IANA), and the usual second TLS listener
PUBLIC_ONLY = targets.Reach(ports=ALLOWED_PORTS)
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-:")


def target(host: str, port: int, reach: targets.Reach = PUBLIC_ONLY) -> targets.Target:
    """The broker's host and port checked as a webhook's are, against `reach` (no I/O).

    Raises:
        TargetRefusedError: saying what is wrong.
    """
    h = host.lower().strip("[]")
    if not h or len(h) > 253 or not set(h) <= _HOST_CHARS:
        raise TargetRefusedError(f"{host!r} is not a host name or address")
    shown = f"[{h}]" if ":" in h else h
    try:
        return targets.parse(f"https://{shown}:{port}/", reach)
    except TargetRefusedError as e:
        raise TargetRefusedError(str(e).replace("https:// endpoints", "TLS brokers")) from None


def context(ca_pem: str | None, cert_pem: str | None, key_pem: str | None, system_ca: Path) -> ssl.SSLContext:
    """The TLS context of a connector (see `trust.tls.client_context_pem`).

    Raises:
        TargetRefusedError: the PEM text cannot be used (the customer's configuration).
    """
    try:
        return tls.client_context_pem(ca_pem or None, cert_pem or None, key_pem or None, system_ca=system_ca)
    except (ssl.SSLError, OSError, ValueError) as e:
        raise TargetRefusedError(f"the TLS material cannot be used: {getattr(e, 'reason', None) or e}") from None


class Pinned(mqtt.Client):
    """A paho client whose TCP connection goes to `address`, whatever host it connects "to" (the host
    name stays paho's, for SNI and the certificate's name check)."""

    def __init__(self, address: str, client_id: str, protocol: int) -> None:
        super().__init__(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion(protocol),
                         clean_session=None if protocol == mqtt.MQTTv5 else True)
        self.address = address

    def _create_socket_connection(self) -> socket.socket:  # paho's, replaced (no proxy, the checked address)
        return socket.create_connection((self.address, self._port), timeout=self._connect_timeout)


def protocol(version: str) -> int:
    return mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311
