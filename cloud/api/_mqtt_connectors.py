"""The users' API's part for MQTT connectors: the fields of one, checked into its configuration
(no secrets) and its sealed secrets; what GET shows of its link and queue.

Checked at once: the broker's host and port (`cloud.mqttconn.link.target`: the webhooks' SSRF
rules, ports 8883 and 8884, or where the operator's settings `mqtt_allow_networks`, `mqtt_ports`
allow), the CA and the client certificate and key (PEM: a TLS context is built from them, so a
key that does not match its certificate is refused now, not at the first connection), the topic
templates and that the command topic can match no topic the connector publishes (no loops).
The password and the client's key are sealed and never shown again.
"""

from __future__ import annotations

from typing import Annotated, Literal

from cryptography import x509
from pydantic import BaseModel, Field

from cloud.api.errors import ApiError
from cloud.hooks import targets
from cloud.mqttconn import link, messages
from cloud.mqttconn.errors import TargetRefusedError
from cloud.store import ConnectorRow, MqttState

MAX_PEM = 16 * 1024
QUEUE_BYTES = (64 * 1024, 1024**3)
PEM = Annotated[str, Field(max_length=MAX_PEM)]


class MqttFields(BaseModel):
    host: str = Field("", max_length=253, description="mqtt: the broker's host name or address (public)")
    port: int = Field(8883, description="mqtt: 8883 or 8884 (MQTT over TLS)")
    protocol: Literal["3.1.1", "5"] = Field("5", description="mqtt: the MQTT version")
    ca_pem: PEM = Field("", description="mqtt: the CA(s) the broker's certificate chains to (PEM; none: "
                                           "the public CAs)")
    client_cert_pem: PEM = Field("", description="mqtt, auth certificate: the client certificate (PEM)")
    client_key_pem: PEM = Field("", description="mqtt, auth certificate: its private key (PEM): shown never again")
    client_id: str = Field("", max_length=64, pattern=r"^[A-Za-z0-9._:-]*$",
                           description="mqtt: the MQTT client id (none: boxcloud-connector-<id>)")
    prefix: str = Field("boxcloud", max_length=200, description="mqtt: {prefix} in the topics")
    data_topic: str = Field(messages.DEFAULT_DATA, max_length=messages.MAX_TOPIC,
                            description="mqtt: where data goes ({prefix} {box} {point}, whole levels)")
    command_topic: str = Field(messages.DEFAULT_COMMAND, max_length=messages.MAX_TOPIC,
                               description="mqtt: where property writes come from ({prefix} {box})")
    reply_topic: str = Field(messages.DEFAULT_REPLY, max_length=messages.MAX_TOPIC,
                             description="mqtt: where the commands' answers go ({prefix} {box})")
    queue_bytes: int = Field(64 * 1024 * 1024, ge=QUEUE_BYTES[0], le=QUEUE_BYTES[1],
                             description="mqtt: the queue's cap while the broker takes nothing (oldest dropped)")


def mqtt_config(body: MqttFields, auth: str, username: str, password: str, points: list[str], *,
                reach: targets.Reach = link.PUBLIC_ONLY) -> tuple[dict[str, object], dict[str, object]]:
    """An MQTT connector's configuration and its secrets, checked (the broker within `reach`).

    Raises:
        ApiError: 422 saying what cannot be used.
    """
    try:
        tgt = link.target(body.host, body.port, reach)
        prefix = body.prefix
        data = messages.levels(body.data_topic, prefix, needs=("{box}",))
        cmd = messages.levels(body.command_topic, prefix, allowed=("{box}",), needs=("{box}",))
        reply = messages.levels(body.reply_topic, prefix, allowed=("{box}",), needs=("{box}",))
    except (TargetRefusedError, messages.TemplateError) as e:
        raise ApiError(422, str(e)) from None
    for name, other in (("data_topic", data), ("reply_topic", reply)):
        if messages.overlap(cmd, other):
            raise ApiError(422, f"command_topic and {name} can name the same topic: what the connector publishes "
                                "would come back to it as a command")
    if auth not in ("basic", "certificate"):
        raise ApiError(422, "an MQTT connector authenticates with auth basic (username, password) or certificate "
                            "(client_cert_pem, client_key_pem)")
    if auth == "basic" and (not username or not password):
        raise ApiError(400, "basic authentication needs a username and a password")
    if auth == "certificate" and (not body.client_cert_pem or not body.client_key_pem):
        raise ApiError(400, "certificate authentication needs client_cert_pem and client_key_pem")
    if body.ca_pem:
        try:
            if not x509.load_pem_x509_certificates(body.ca_pem.encode()):
                raise ValueError("no certificate")
        except ValueError as e:
            raise ApiError(422, f"ca_pem is not PEM certificates: {e}") from None
    try:
        link.context(body.ca_pem, body.client_cert_pem if auth == "certificate" else "",
                     body.client_key_pem if auth == "certificate" else "", link.SYSTEM_CA)
    except TargetRefusedError as e:
        raise ApiError(422, str(e)) from None
    config: dict[str, object] = {
        "host": tgt.host, "port": tgt.port, "protocol": body.protocol, "auth": auth, "points": points,
        "ca_pem": body.ca_pem, "client_id": body.client_id, "prefix": prefix, "data_topic": body.data_topic,
        "command_topic": body.command_topic, "reply_topic": body.reply_topic, "queue_bytes": body.queue_bytes}
    sealed: dict[str, object] = {}
    if auth == "basic":
        config["username"], sealed["password"] = username, password
    else:
        config["client_cert_pem"], sealed["client_key_pem"] = body.client_cert_pem, body.client_key_pem
    return config, sealed


def mqtt_status(c: ConnectorRow, s: MqttState | None) -> dict[str, object]:
    """What GET shows of an MQTT connector beyond its row: link, queue, commands (`Store.mqtt_connector`
    reads both as of one moment)."""
    if s is None:
        return {"link": "connecting", "queue": {"messages": 0, "bytes": 0, "evicted": 0}}
    return {"link": s.link, "link_since": s.since,
            "queue": {"messages": s.queued, "bytes": s.bytes, "cap": c.config.get("queue_bytes"),
                      "evicted": s.evicted},
            "commands": {"received": s.commands, "refused": s.refused}}
