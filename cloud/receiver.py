"""The receiver: subscribes to every Box's uplink with its own certificate, validates and stores.

Topics handled (`boxes/<id>/up/<leaf>`, `proto.topics`; the broker's ACL guarantees that only Box
<id> can publish there): `meta` (point table), `data` (batches), `status` (retained
online/offline, and the Last Will), `health` (heartbeats), `events`, `replies`, and the broker's
`limits` notices; each decoded by `proto` into its typed message, strictly. Batches are stored
several a transaction (`cloud._intake` groups what waits, `cloud._batches` stores it). Monitoring
rules live in `cloud.monitor`; `ota` events go to the `on_ota` callback (the platform sets
it to the deployment rules, `cloud.deploy`: the receiver knows nothing of them). The
receiver answers a Box that comes online, or whose clock is off, with the platform's
time on `boxes/<id>/down/time`, and a Box that comes online without the platform's current CRL
(its status names the one it holds) with the CRL. A batch whose point table the platform does not
know is parked and the Box asked for its table (`cloud._batches`).

Acknowledgement: the receiver acknowledges a message (PUBACK, paho's `manual_ack`) only once it
is handled: a batch only once the transaction of its group committed (`cloud._intake`). A message
the store could not take, or whose handling failed in a way not foreseen (a bug), is not
acknowledged: the receiver ends the connection (not the session), and the broker sends every
unacknowledged message again when paho reconnects (1-5 s later); until then nothing more of that
connection is acknowledged, so acknowledgements stay in order. A group the database refuses is
stored again a batch at a time: one bad batch does not cost the others. A message that failed
unforeseen `MAX_FAILURES` times is then rejected (logged with its Box; a Box that keeps batches
until stored sends it again later, and its stored notice does not pass it). A malformed message
is rejected with a logged reason, acknowledged (sending it again would not mend it), and never
stops the receiver.

Alone (the default), its session is persistent: what arrives while it is down waits in the broker.
One of several (`group`), it joins the shared subscription ``$share/<group>/boxes/+/up/#`` with a
session that ends with its connection (Mosquitto drops what a dead member had in flight, issue
2662, and feeds an offline persistent member, issue 1747): the receivers tell each Box what is
stored (`cloud._acker`), and the Box sends again what never was (docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from functools import partial

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from cloud._acker import Acker
from cloud._batches import Batches, Counters, device_counts
from cloud._intake import RECEIVE_MAX, Intake
from cloud._pacer import Pacer
from cloud.errors import StoreError
from cloud.monitor import Monitor
from cloud.pki import Pki
from cloud.store import Incoming, Store
from proto import topics, wire
from proto.downlink import TimeNotice
from proto.errors import WireError
from proto.modem import ModemEvent, WanEvent
from proto.replies import CmdReply, decode_reply
from proto.topics import Down, Up
from proto.uplink import Evicted, OtaEvent, crl_digest, decode_event, decode_health, decode_limits, decode_status
from trust import tls

log = logging.getLogger("boxcloud.receiver")

SESSION_EXPIRY_S = 14 * 86400  # the receiver's persistent session outlives two weeks of absence
MAX_FAILURES = 3  # unforeseen failures of one message before it is rejected (not a redelivery loop)


class Receiver:
    """The cloud's MQTT subscriber. The constructor does no I/O."""

    def __init__(self, pki: Pki, store: Store, host: str, port: int, *, member: int = 0, group: str = "") -> None:
        """`member` N >= 2 connects as "cloud:receiver-N" (its own certificate); `group` names the shared
        subscription it joins (none: the receiver is alone, with a persistent session)."""
        self.pki, self.store = pki, store
        self.host, self.port = host, port
        self.identity = f"receiver-{member}" if member >= 2 else "receiver"
        self.group = group
        self.counters = Counters()
        self.monitor = Monitor(store)
        self.connected = threading.Event()
        self.on_ota: Callable[[str, OtaEvent], None] | None = None  # (Box, event)
        self.pacer = Pacer(store, self.monitor)  # each Box's decoding work bounded (cloud._pacer)
        self.batches = Batches(store, self.monitor, self.counters, self.publish_down)
        self.intake = Intake(self._take_all, self._ack, self._end_connection)  # group commit (cloud._intake)
        self._client: mqtt.Client | None = None
        self._ctx: ssl.SSLContext | None = None
        self._failed: dict[bytes, int] = {}  # digest -> unforeseen failures of a message (bounded)
        self.notices = True  # False: behave as a platform before stored notices (compatibility proofs)
        self.acker = Acker(store, self.publish_down)

    def start(self) -> None:
        """Connect (retrying in the background) and start receiving."""
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"cloud:{self.identity}", protocol=mqtt.MQTTv5,
                        manual_ack=True)
        self._ctx = self.pki.service_context(self.identity)
        c.tls_set_context(self._ctx)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(1, 5)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 0 if self.group else SESSION_EXPIRY_S  # a member's session ends with it
        props.ReceiveMaximum = RECEIVE_MAX  # room for a group while the last one commits
        self._client = c
        self.pacer.start(self._dispatch_aside)
        self.intake.start()
        self.acker.start()
        alone = not self.group
        try:
            c.connect(self.host, self.port, 30, clean_start=not alone, properties=props)
        except (OSError, ssl.SSLError) as e:
            log.warning("receiver cannot reach the broker yet (%s); retrying", e)
            c.connect_async(self.host, self.port, 30, clean_start=not alone, properties=props)
        c.loop_start()

    def stop(self) -> None:
        """Disconnect and stop the network thread."""
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
        self.intake.stop()
        if self.intake.groups:
            log.info("receiver %s handled %d messages in %d groups (%.1f a group)", self.identity,
                     self.intake.messages, self.intake.groups, self.intake.messages / self.intake.groups)
        self.acker.stop()
        self.pacer.stop()

    def publish_down(self, box_id: str, leaf: Down, payload: bytes, *, retain: bool = False) -> bool:
        """Publish on `boxes/<id>/down/<leaf>` (QoS 1); False when not connected (try again later)."""
        c = self._client
        if c is None or not self.connected.is_set():
            return False
        return c.publish(topics.down(box_id, leaf), payload, 1, retain=retain).rc == mqtt.MQTT_ERR_SUCCESS

    def crl_changed(self) -> None:
        """The platform's CRL changed: this client checks the broker against it from now on."""
        if self._ctx is not None:
            tls.add_crl(self._ctx, self.pki.crl)

    def send_crl(self, box_id: str) -> None:
        """Give a Box the platform's revocation list (it checks the servers' certificates against it)."""
        if self._client is not None:
            try:
                crl = self.pki.crl.read_bytes()
            except OSError as e:
                log.error("cannot read the CRL to send it to %s: %s", box_id, e)
                return
            self._client.publish(topics.down(box_id, Down.CRL), crl, 1)

    def _crl_digest(self) -> str:
        try:
            return crl_digest(self.pki.crl.read_bytes())
        except OSError:
            return ""

    def send_time(self, box_id: str) -> None:
        """Tell a Box the platform's time (it may have booted without a real-time clock)."""
        if self._client is not None:
            notice = TimeNotice(int(time.time() * 1000), acks=self.notices)  # this platform sends stored notices
            self._client.publish(topics.down(box_id, Down.TIME), notice.encode(), 1)

    def _on_connect(self, c: mqtt.Client, _u: object, _f: object, rc: object, _p: object) -> None:
        if getattr(rc, "is_failure", False):
            log.error("the broker refused the receiver: %s", rc)
            return
        self.intake.new_connection()
        # retained messages (each Box's status and point table) only for a new subscription: back on its
        # persistent session (after a broker restart, say) the receiver is not sent the whole fleet's again
        # (20,000 messages at 10,000 Boxes, each handled and written); what it missed meanwhile is queued in
        # the session. A shared subscription is never sent retained messages (MQTT 5, 4.8.2)
        c.subscribe(topics.shared_up_filter(self.group) if self.group else topics.up_filter(),
                    options=SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB))
        self.connected.set()
        log.info("receiver %s connected to %s:%s%s", self.identity, self.host, self.port,
                 f" (shared subscription group {self.group})" if self.group else "")

    def _on_subscribe(self, _c: mqtt.Client, _u: object, _mid: int, codes: list[ReasonCode], _p: Properties) -> None:
        if any(rc.is_failure for rc in codes):
            log.error("the broker refused the receiver's subscription: %s", codes)

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, rc: object, _p: object) -> None:
        self.connected.clear()
        self.intake.new_connection()
        log.warning("receiver disconnected from the broker: %s", rc)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        self.intake.put(msg)  # handled and acknowledged by the intake's thread, never this one

    def _ack(self, mid: int, qos: int) -> None:
        if self._client is not None:
            self._client.ack(mid, qos)

    def _end_connection(self) -> None:
        """A message could not be handled: end the connection, keep the session (paho reconnects, the
        broker sends again what was not acknowledged)."""
        sock = self._client.socket() if self._client is not None else None
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _take_all(self, msgs: list[mqtt.MQTTMessage]) -> list[bool]:
        """Handle messages in the order they came, the batches among them stored in one transaction;
        whether each may be acknowledged. A Box's other message waits until its batches before it are
        stored (a heartbeat says which batches the Box no longer holds: they must be found stored)."""
        done = [True] * len(msgs)
        group: list[tuple[int, Incoming]] = []
        for i, msg in enumerate(msgs):
            where = self._where(msg)
            if where is None:
                continue
            box_id, leaf = where
            if leaf == Up.DATA:
                done[i] = self._guarded(msg, box_id, partial(self._admit_batch, box_id, bytes(msg.payload), group, i))
                continue
            if any(item.box_id == box_id for _, item in group):
                self._store_group(msgs, group, done)
                group = []
            done[i] = self._guarded(msg, box_id, partial(self.handle, box_id, leaf, bytes(msg.payload)))
        self._store_group(msgs, group, done)
        return done

    def _store_group(self, msgs: list[mqtt.MQTTMessage], group: list[tuple[int, Incoming]], done: list[bool]) -> None:
        """Store the batches of `group` (their messages' indexes in `msgs`) in one transaction."""
        outcomes = self.batches.store_group([item for _, item in group]) if group else []
        for (i, item), outcome in zip(group, outcomes, strict=True):
            done[i] = self._guarded(msgs[i], item.box_id, partial(self.batches.stored, item, outcome))

    def _admit_batch(self, box_id: str, payload: bytes, group: list[tuple[int, Incoming]], i: int) -> None:
        if self.pacer.admit(box_id, Up.DATA, payload):
            item = self.batches.incoming(box_id, payload)
            if item is not None:
                group.append((i, item))

    def _where(self, msg: mqtt.MQTTMessage) -> tuple[str, str] | None:
        """(Box, leaf) of an uplink message; None (rejected) for another topic."""
        try:
            where = topics.parse(msg.topic)
        except WireError:
            where = None
        if where is None or where.direction != topics.UP:
            self._reject(msg.topic, "unexpected topic")
            return None
        return where.box_id, where.raw_leaf

    def _guarded(self, msg: mqtt.MQTTMessage, box_id: str, work: Callable[[], None]) -> bool:
        """Run a message's `work`; False when the store could not take it (it must not be acknowledged)."""
        try:
            work()
        except WireError as e:
            self._reject(msg.topic, str(e))
        except StoreError as e:
            log.error("cannot store a message from %s (%s): not acknowledged, the broker will send it again",
                      box_id, e)
            with self.counters.lock:
                self.counters.store_errors += 1
            return False
        except Exception:  # noqa: BLE001 (logged there) the receiver's top: a bad message never stops it
            return self._unforeseen(msg, box_id)
        return True

    def _unforeseen(self, msg: mqtt.MQTTMessage, box_id: str) -> bool:
        """A failure not foreseen (a bug): not acknowledged, but at the `MAX_FAILURES`th (rejected)."""
        key = hashlib.sha256(msg.topic.encode() + bytes(msg.payload)).digest()[:16]
        with self.counters.lock:
            n = self._failed.pop(key, 0) + 1
            if n < MAX_FAILURES:
                self._failed[key] = n
                while len(self._failed) > 1000:
                    del self._failed[next(iter(self._failed))]
                self.counters.store_errors += 1
        if n < MAX_FAILURES:
            log.exception("unexpected failure on a message from %s: not acknowledged, the broker will send it "
                          "again", box_id)
            return False
        log.exception("unexpected failure on a message from %s, %d times: rejected", box_id, n)
        self._reject(msg.topic, "internal error")
        return True

    def _reject(self, topic: str, why: str) -> None:
        with self.counters.lock:
            self.counters.rejected += 1
            self.counters.last_rejection = f"{topic}: {why}"
        log.warning("rejected a message on %s: %s", topic, why)

    def handle(self, box_id: str, leaf: str, payload: bytes) -> None:
        """Process one uplink message (public for tests and benchmarks).

        Raises:
            WireError: the message is malformed.
        """
        if self.pacer.admit(box_id, leaf, payload):
            self._dispatch(box_id, leaf, payload)

    def _dispatch_aside(self, box_id: str, leaf: str, payload: bytes) -> None:
        """Decode a message the pacer put aside (in its thread); a malformed one is rejected as any."""
        try:
            self._dispatch(box_id, leaf, payload)
        except WireError as e:
            self._reject(topics.up(box_id, Up(leaf)), str(e))

    def _dispatch(self, box_id: str, leaf: str, payload: bytes) -> None:
        handler = {
            Up.DATA: self._data, Up.META: self._meta, Up.STATUS: self._status, Up.HEALTH: self._health,
            Up.REPLIES: self._reply, Up.EVENTS: self._event, Up.LIMITS: self._limits,
        }.get(leaf)  # type: ignore[call-overload]
        if handler is None:
            log.info("ignoring %d bytes on %s's '%s' topic (not handled yet)", len(payload), box_id, leaf)
            return
        handler(box_id, payload)

    def _meta(self, box_id: str, payload: bytes) -> None:
        if not payload:
            return  # a retained point table being cleared (the Box was revoked)
        tid, points = wire.decode_table(payload)
        self.store.put_table(box_id, tid, points)
        for parked in self.store.unpark(box_id, tid):
            self._data(box_id, parked)

    def _health(self, box_id: str, payload: bytes) -> None:
        health = decode_health(payload)
        if self.store.box(box_id) is not None:
            self.monitor.on_health(box_id, health.to_doc())
            if health.modem is not None:
                self.monitor.on_modem(box_id, health.modem)
            if health.clock_ok is not True or abs(health.ts_ms / 1000 - time.time()) > 2:
                self.send_time(box_id)
            held = health.oldest_seq or health.last_seq + 1  # the oldest batch it still holds
            self.store.note_held(box_id, health.epoch, held)

    def _event(self, box_id: str, payload: bytes) -> None:
        event = decode_event(payload)
        log.info("event from %s: %s", box_id, type(event).__name__)
        if isinstance(event, Evicted):
            self.monitor.on_evicted(box_id, event)
        elif isinstance(event, ModemEvent | WanEvent):
            if self.store.box(box_id) is not None:
                self.monitor.on_modem_event(box_id, event)
        elif self.on_ota is not None and self.store.box(box_id) is not None:
            self.on_ota(box_id, event)

    def _data(self, box_id: str, payload: bytes) -> None:
        self.batches.data(box_id, payload)

    def _reply(self, box_id: str, payload: bytes) -> None:
        answer = decode_reply(payload)
        if isinstance(answer, CmdReply):
            known = self.store.command_answered(box_id, answer.id, answer.to_doc())
            log.info("Box %s: command %s %s", box_id, answer.id, answer.status)
            what = f"cmd {answer.id}"
        else:
            reasons = answer.reasons
            known = self.store.config_answered(box_id, answer.version, answer.status, reasons)
            if known:
                self.monitor.on_config_answer(box_id, answer.version, answer.status, reasons)
            log.info("Box %s: configuration version %s %s%s", box_id, answer.version, answer.status,
                     f" ({'; '.join(reasons)[:300]})" if reasons else "")
            what = f"config {answer.version}"
        if not known:
            log.warning("Box %s answered something it was not sent (%s)", box_id, what)

    def _limits(self, box_id: str, payload: bytes) -> None:
        notice = decode_limits(payload)
        if self.store.box(box_id) is not None:
            self.monitor.on_limits(box_id, notice.refused, f"refused by the broker: {notice.reason}")

    def _status(self, box_id: str, payload: bytes) -> None:
        if not payload:
            return  # a retained status being cleared
        status = decode_status(payload)
        box = self.store.box(box_id)
        if box is None or box.revoked is not None:
            return  # e.g. a revoked Box's retained "online", delivered again to a restarted receiver
        self.store.set_status(box_id, status.online, time.time(), status.reason, status.version)
        if status.online:
            self.store.want_acks(box_id, status.acks_s if self.notices else 0)  # 0: no notices for it
        self.monitor.on_status(box_id, status.online, status.reason)
        if status.online:
            self.send_time(box_id)
            if status.crl != self._crl_digest():  # a Box on a flaky cell does not get it at each reconnection
                self.send_crl(box_id)
        log.info("Box %s is %s%s", box_id, "online" if status.online else "offline",
                 f" ({status.reason})" if status.reason else "")


__all__ = ["Counters", "Receiver", "device_counts"]
