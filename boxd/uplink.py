"""The Box's MQTT link to the platform: MQTT 5 over mutual TLS, outbound only.

One I/O thread runs paho-mqtt (connect, TLS handshake and socket I/O are blocking
in paho); it hands events to the asyncio loop with `call_soon_threadsafe`, so the
daemon's logic stays single-threaded. The thread reconnects by itself (`boxd.backoff.Reconnect`:
full jitter; after the broker's side closed the session, a restart every Box saw at once, the
first try is spread over `[uplink] reconnect_spread_s`; after a loss of the Box's own link, within
a second). The broker gets a Last Will (retained "offline") at connect, and a retained "online"
once connected.

A reconnection is made cheap for a metered link: it resumes the last TLS session
(`trust.tls.ResumingContext`: no certificate chain either way), and it does not subscribe again
when the broker kept the session its subscription of this run was acknowledged in (the
subscription and the messages queued meanwhile are there; a SUBSCRIBE would bring every
retained message, the configuration, again). The first connection of an uplink always
subscribes: a Box reinstalled under the same identity gets its retained configuration. A
keepalive PINGREQ goes out only when nothing went out or came in for a keepalive interval, never
while batches and their acknowledgements flow (`_Client` mends paho 2.2.0, which pings regardless).

This module knows the MQTT session (the topic names are `proto.topics`'); it knows nothing about
batches: it reports acknowledgements by message id and lets the daemon decide.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from boxd import __version__
from boxd.backoff import Reconnect
from proto import topics
from proto.topics import Up
from proto.uplink import Status, crl_digest
from trust import tls
from trust.identity import Identity

log = logging.getLogger("boxd.uplink")
# paho's own log, every packet at DEBUG: silent unless its level is lowered (a test counting
# PINGREQs, an engineer reading packets); its errors say what this module's warnings say already
paho_log = logging.getLogger("boxd.uplink.mqtt")
paho_log.setLevel(logging.CRITICAL)


def _unix_socketpair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


# paho builds its internal wake-up pipe from a TCP socket that LISTENs on 127.0.0.1
# for a moment (a Windows work-around), and accepts whoever connects first. A Box
# opens no listening socket, not even briefly: give paho a Unix socketpair instead.
mqtt._socketpair_compat = _unix_socketpair

SESSION_EXPIRY_S = 7 * 86400
ACKS_S = 60  # the stored notices' interval asked for at the default batch delay (`boxd.sender.stored_notice_s`)


class _Client(mqtt.Client):
    """paho's client with one fix: a publication the broker acknowledged counts as a packet sent
    for the keepalive. paho 2.2.0 notes its last packet out only when a write stalls
    (`_packet_write` returns before the note once its queue is empty; eclipse-paho/paho.mqtt.python
    issue 813, open), so it sends a PINGREQ every keepalive interval even while batches flow. The
    acknowledgement came after the PUBLISH, one round trip later: the broker, which allows 1.5
    intervals, still hears from the Box in time."""

    def note_sent(self) -> None:
        """A packet went out (its acknowledgement is in): no PINGREQ needed for a keepalive interval."""
        with self._msgtime_mutex:
            self._last_msg_out = mqtt.time_func()

    # Whether the broker's side closed the connection: its end of stream (TLS close_notify or a
    # bare FIN) or a reset from its host. paho reports either, a keepalive timeout and a local
    # network error alike as "connection lost"; the reconnection policy tells them apart.
    closed_by_peer = False

    def _sock_recv(self, bufsize: int) -> bytes:
        try:
            data = super()._sock_recv(bufsize)
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            self.closed_by_peer = True
            raise
        if not data:
            self.closed_by_peer = True
        return data

    def _sock_send(self, buf: bytes | bytearray) -> int:
        try:
            return super()._sock_send(buf)
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            self.closed_by_peer = True
            raise


def session_properties(expiry_s: int = SESSION_EXPIRY_S) -> Properties:
    """CONNECT properties of a persistent MQTT 5 session that outlives `expiry_s` of absence."""
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = expiry_s
    return props


def status_payload(online: bool, reason: str = "", crl: str = "", version: str = __version__, acks_s: int = 0) -> bytes:
    """The retained status message (`proto.uplink.Status`): online with this version (and the digest
    of the CRL held, so that the platform sends its CRL only when it is another; and how often it
    may send its stored notice), or offline and why."""
    return Status(online, int(time.time() * 1000), version if online else None, reason, crl,
                  acks_s if online else 0).encode()


@dataclass(slots=True)
class LinkState:
    """What the uplink thread last saw, for status reports."""

    connected: bool = False
    since: float = 0.0
    last_error: str = ""
    connects: int = 0
    resumed: bool = False  # this connection's TLS handshake resumed the last one's session
    resumptions: int = 0  # connections whose handshake was resumed


class Uplink(Protocol):
    """What the daemon needs of its link to the platform (`MqttUplink`; a fake in tests:
    `tests.support.fakeuplink`). Its callbacks (connected, disconnected, acknowledged, message)
    are given to the constructor and run on the event loop."""

    state: LinkState

    async def start(self) -> None:
        """Start connecting (and reconnecting) in the background."""
        ...

    async def stop(self, reason: str = "stopped") -> None:
        """Say goodbye with `reason` and stop."""
        ...

    def publish(self, leaf: Up, payload: bytes, *, qos: int = 1, retain: bool = False) -> int | None:
        """Queue a message; its message id, or None when not connected."""
        ...

    def add_crl(self, crl_file: Path) -> None:
        """Check the broker's certificate against a newer CRL from the next handshake on."""
        ...


class UplinkFactory(Protocol):
    """What makes an `Uplink` for an identity, with the daemon's callbacks (`MqttUplink` itself)."""

    def __call__(self, ident: Identity, *, on_connected: Callable[[], None], on_disconnected: Callable[[], None],
                 on_ack: Callable[[int, bool], None], on_message: Callable[[str, bytes], None] | None = None,
                 keepalive_s: int = 60, reconnect: Reconnect | None = None,
                 relax_time_check: Callable[[], bool] = lambda: False, version: str = __version__,
                 acks_s: Callable[[], int] = lambda: ACKS_S) -> Uplink: ...


class MqttUplink:
    """An MQTT session to the platform broker (an `Uplink`).

    The constructor does no I/O; `start()` starts the I/O thread, `stop()` says
    goodbye (retained "offline") and joins it.
    """

    def __init__(
        self,
        ident: Identity,
        *,
        on_connected: Callable[[], None],
        on_disconnected: Callable[[], None],
        on_ack: Callable[[int, bool], None],
        on_message: Callable[[str, bytes], None] | None = None,
        keepalive_s: int = 60,
        reconnect: Reconnect | None = None,
        relax_time_check: Callable[[], bool] = lambda: False,
        version: str = __version__,
        resume: bool = True,
        acks_s: Callable[[], int] = lambda: ACKS_S,
    ) -> None:
        self._ident = ident
        self._version = version  # what the online status says runs (an image release's on a Box image)
        self._resume = resume  # False: every handshake a full one (bench/reconnect.py's "before")
        self._acks_s = acks_s  # the stored notices' interval the Box asks for (`proto.downlink.StoredNotice`)
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._on_ack = on_ack
        self._on_message = on_message
        self._relax_time_check = relax_time_check
        self._ctx: tls.ResumingContext | None = None
        self._keepalive = keepalive_s
        self._reconnect = reconnect or Reconnect()
        self._by_broker = False  # the last session was ended by the broker's side
        self._leaving = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: _Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscribed = False  # the broker acknowledged this uplink's subscription (in the session it kept)
        self.state = LinkState()

    def topic(self, leaf: Up) -> str:
        """This Box's uplink topic `leaf`."""
        return topics.up(self._ident.box_id, leaf)

    async def start(self) -> None:
        """Build the client and start the I/O thread."""
        self._loop = asyncio.get_running_loop()
        self._client = self._make_client()
        self._thread = threading.Thread(target=self._run, name="uplink", daemon=True)
        self._thread.start()

    async def stop(self, reason: str = "stopped") -> None:
        """Publish "offline" with `reason` (if connected; "restarting" for a planned restart, which
        the platform does not alert on), disconnect and join the I/O thread."""
        client = self._client
        if client is not None and self.state.connected:
            info = client.publish(self.topic(Up.STATUS), status_payload(False, reason), 1, True)
            with contextlib.suppress(RuntimeError, ValueError):  # lost meanwhile: the Will says it
                await asyncio.to_thread(info.wait_for_publish, 2.0)
            self._leaving = True  # the DISCONNECT is the Box's own: not a loss to report
            client.disconnect()
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)

    @property
    def offers_session(self) -> bool:
        """Whether the next connection offers the last one's TLS session (resumes it if the broker agrees)."""
        return self._ctx is not None and self._ctx.has_session

    def add_crl(self, crl_file: Path) -> None:
        """A newer platform CRL: checked from the next handshake on (the open session was checked; the
        TLS session is forgotten, so that the next handshake is a full one that checks it)."""
        if self._ctx is not None:
            tls.add_crl(self._ctx, crl_file)

    def publish(self, leaf: Up, payload: bytes, *, qos: int = 1, retain: bool = False) -> int | None:
        """Queue a message for the broker; returns its message id, or None when not connected."""
        client = self._client
        if client is None or not self.state.connected:
            return None
        info = client.publish(self.topic(leaf), payload, qos, retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return None
        return info.mid

    # -- the I/O thread ---------------------------------------------------------------

    def _make_client(self) -> _Client:
        ident = self._ident
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=ident.box_id,
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=False,
        )
        ctx = tls.client_context(ident.ca_file, ident.cert_file, ident.key_file, crl_file=ident.crl_file, resume=True)
        assert isinstance(ctx, tls.ResumingContext)
        self._ctx = ctx
        client.tls_set_context(ctx)
        client.enable_logger(paho_log)
        client.will_set(self.topic(Up.STATUS), status_payload(False, "connection lost"), 1, True)
        client.max_inflight_messages_set(32)
        client.on_connect = self._cb_connect
        client.on_disconnect = self._cb_disconnect
        client.on_publish = self._cb_publish
        client.on_message = self._cb_message
        client.on_subscribe = self._cb_subscribe
        # Only the I/O thread touches the TLS socket. Without this, paho's publish() from the
        # daemon's thread writes to it directly (it does so when it runs no thread of its own)
        # while the I/O thread reads or writes too: two threads on one SSL object corrupt its
        # records, and the broker drops the Box ("decryption failed or bad record mac"). With a
        # write-registration callback, publish() only queues and wakes the I/O thread's select().
        client.on_socket_register_write = lambda *_: None
        return client

    def _run(self) -> None:
        client = self._client
        assert client is not None
        props = session_properties()
        while not self._stop.is_set():
            self._set_time_check()
            client.closed_by_peer = self._by_broker = False
            try:
                client.connect(
                    self._ident.broker_host, self._ident.broker_port, self._keepalive,
                    clean_start=False, properties=props,
                )
            except (OSError, ssl.SSLError, ValueError) as e:
                self._note_error(f"cannot reach the broker: {e}")
                self._stop.wait(self._reconnect.failed())
                continue
            started, connects = time.monotonic(), self.state.connects
            while not self._stop.is_set():
                rc = client.loop(timeout=0.5)
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
            if self._stop.is_set():
                # drain the DISCONNECT we may have queued in stop()
                client.loop(timeout=0.2)
                break
            if self.state.connects == connects:
                self._note_error(self._refused_in_words("the broker closed the connection before accepting the Box"))
                delay = self._reconnect.failed()
            else:
                delay = self._reconnect.ended(time.monotonic() - started, self._by_broker or client.closed_by_peer)
            log.info("next connection attempt in %.1f s", delay)
            self._stop.wait(delay)

    def _set_time_check(self) -> None:
        """Check certificate dates unless the Box's clock cannot be believed (see boxd.clock)."""
        ctx = self._ctx
        assert ctx is not None
        was = ctx.verify_flags
        if self._relax_time_check():
            if not ctx.verify_flags & tls.NO_CHECK_TIME:
                log.warning("the clock is implausible: certificate dates are not checked until the platform's "
                            "time is known (chain, name and revocation still are)")
            ctx.verify_flags |= tls.NO_CHECK_TIME
        else:
            ctx.verify_flags &= ~tls.NO_CHECK_TIME
        if ctx.verify_flags != was:
            ctx.forget()  # a session verified under the other rule: the next handshake checks again

    def _note_error(self, msg: str) -> None:
        msg = self._refused_in_words(msg)
        if msg != self.state.last_error:
            log.warning("%s", msg)
        self.state.last_error = msg

    def _refused_in_words(self, msg: str) -> str:
        """A refusal of the Box's certificate, said with what it means and what to do."""
        low = msg.lower()
        redo = (f"provision the Box again: a new token from 'boxcloud box add {self._ident.box_id}', "
                "then 'boxctl provision --force ...'")
        if "what to do" in low:
            return msg
        if self._ident.days_left() < 0 or "certificate expired" in low:
            return (f"{msg}: this Box's certificate EXPIRED on {self._ident.not_after():%Y-%m-%d}; "
                    f"what to do: {redo}")
        if "revoked" in low:
            return f"{msg}: this Box's certificate was REVOKED by the platform; what to do: {redo}"
        if "administrative action" in low or "before accepting" in low:
            return (f"{msg}: the platform ended or refused this Box's session: its certificate was probably "
                    f"revoked (or the Box enrolled again elsewhere); what to do: check 'boxcloud box show "
                    f"{self._ident.box_id}', and if it is revoked, {redo}")
        return msg

    def _post(self, fn: Callable[..., None], *args: object) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn, *args)

    def _cb_connect(
        self, client: mqtt.Client, _u: object, flags: mqtt.ConnectFlags, rc: ReasonCode, _p: object
    ) -> None:
        if rc.is_failure:
            self._note_error(f"the broker refused the connection: {rc}")
            return
        resumed = self._tls_resumed(client)
        # The durable queue is the truth: forget what paho would resend, the daemon resends it.
        client.drop_out_messages()
        if not (flags.session_present and self._subscribed):  # else the broker kept the subscription
            self._subscribed = False
            client.subscribe(topics.down_filter(self._ident.box_id), 1)
        client.publish(self.topic(Up.STATUS), status_payload(True, crl=self._crl_held(), version=self._version,
                                                             acks_s=self._acks_s()), 1, True)
        self.state = LinkState(True, time.time(), "", self.state.connects + 1, resumed,
                               self.state.resumptions + resumed)
        log.info("connected to %s:%s", self._ident.broker_host, self._ident.broker_port)
        self._post(self._on_connected)

    def _crl_held(self) -> str:
        """The digest of the platform CRL this Box holds ("" when it holds none)."""
        try:
            return crl_digest(self._ident.crl_file.read_bytes())
        except OSError:
            return ""

    def _tls_resumed(self, client: mqtt.Client) -> bool:
        """Whether this connection resumed a TLS session; keeps its own for the next (CONNACK came after
        the handshake, so a TLS 1.3 server's ticket has arrived)."""
        sock = client.socket()
        if not isinstance(sock, ssl.SSLSocket) or self._ctx is None:
            return False
        if self._resume:
            self._ctx.remember(sock)
        return bool(sock.session_reused)

    def _cb_disconnect(
        self, client: mqtt.Client, _u: object, flags: mqtt.DisconnectFlags, rc: ReasonCode, _p: object
    ) -> None:
        was = self.state.connected
        self.state.connected = False
        self._by_broker = flags.is_disconnect_packet_from_server or getattr(client, "closed_by_peer", False)
        if was and not self._leaving:
            how = "closed by the broker's side" if self._by_broker else "no answer, or this Box's link failed"
            self._note_error(f"connection to the broker lost: {how}: {rc}")
            self._post(self._on_disconnected)

    def _cb_subscribe(self, _c: mqtt.Client, _u: object, _mid: int, codes: list[ReasonCode], _p: object) -> None:
        self._subscribed = all(not rc.is_failure for rc in codes)
        if not self._subscribed:
            self._note_error(f"the broker refused the Box's subscription: {codes}")

    def _cb_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        try:
            where = topics.parse(msg.topic)
        except topics.TopicError:
            return
        if self._on_message is not None and where.box_id == self._ident.box_id and where.direction == topics.DOWN:
            self._post(self._on_message, where.raw_leaf, bytes(msg.payload))

    def _cb_publish(
        self, client: mqtt.Client, _u: object, mid: int, rc: ReasonCode, _p: object
    ) -> None:
        if isinstance(client, _Client):
            client.note_sent()
        ok = not rc.is_failure
        if not ok:
            self._note_error(f"the broker rejected message {mid}: {rc}")
        self._post(self._on_ack, mid, ok)
