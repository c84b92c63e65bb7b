"""An `Uplink` in memory (`boxd.uplink.Uplink`), for daemon tests that are not about MQTT.

What the daemon publishes is recorded; the test says when the link connects (`connect`), drops
(`drop`) and when the broker acknowledges (`ack`). `Daemon(..., uplink=FakeUplink)` makes one per
identity, as it makes an `MqttUplink` (a renewed certificate: a new session).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from boxd.backoff import Reconnect
from boxd.uplink import LinkState
from proto.topics import Up
from trust.identity import Identity


@dataclass
class Sent:
    """One message published."""

    leaf: Up
    payload: bytes
    qos: int
    retain: bool
    mid: int


class FakeUplink:
    """An `Uplink` whose broker is the test; made as `boxd.uplink.MqttUplink` is (`UplinkFactory`)."""

    def __init__(self, ident: Identity | None = None, *, on_connected: Callable[[], None] = lambda: None,
                 on_disconnected: Callable[[], None] = lambda: None,
                 on_ack: Callable[[int, bool], None] = lambda mid, ok: None,
                 on_message: Callable[[str, bytes], None] | None = None, keepalive_s: int = 60,
                 reconnect: Reconnect | None = None, relax_time_check: Callable[[], bool] = lambda: False,
                 version: str = "", connects: bool = True, acks_s: Callable[[], int] = lambda: 60) -> None:
        self.ident = ident
        self.state = LinkState()
        self.sent: list[Sent] = []
        self.crls: list[Path] = []
        self.stopped: str | None = None  # the reason given to `stop`
        self.history: list[str] = []  # "ack <mid>" and "stop <reason>", in order
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._on_ack = on_ack
        self.on_message = on_message
        self._connects = connects
        self._mid = 0

    async def start(self) -> None:
        if self._connects:
            self.connect()

    async def stop(self, reason: str = "stopped") -> None:
        self.stopped = reason
        self.history.append(f"stop {reason}")
        self.state.connected = False

    def publish(self, leaf: Up, payload: bytes, *, qos: int = 1, retain: bool = False) -> int | None:
        if not self.state.connected:
            return None
        self._mid += 1
        self.sent.append(Sent(leaf, payload, qos, retain, self._mid))
        return self._mid

    def add_crl(self, crl_file: Path) -> None:
        self.crls.append(crl_file)

    # -- what the test does ------------------------------------------------------------

    def connect(self) -> None:
        """The broker accepts the session."""
        self.state = LinkState(True, time.time(), "", self.state.connects + 1)
        self._on_connected()

    def drop(self, error: str = "connection lost") -> None:
        """The session ends."""
        self.state.connected = False
        self.state.last_error = error
        self._on_disconnected()

    def ack(self, mid: int, ok: bool = True) -> None:
        """The broker acknowledges (or refuses) message `mid`."""
        self.history.append(f"ack {mid}")
        self._on_ack(mid, ok)

    def on(self, leaf: Up) -> list[Sent]:
        """What was published on `leaf`."""
        return [s for s in self.sent if s.leaf == leaf]
