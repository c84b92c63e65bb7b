"""One MQTT connector's thread (`Link`): its connection to the customer's broker, the queue's
messages out (deleted on PUBACK), property commands in.

A session: the broker's address checked and pinned (`cloud.mqttconn.link`), TLS, CONNECT with a
clean session (the queue in the database is the only state: what was not acknowledged is sent again,
oldest first, on the next connection), SUBSCRIBE to the command topic (QoS 1; MQTT 5: no-local, and
retain-as-published so that a retained command is seen as one, and refused). Then, until the
connection ends or the connector changes: at most `WINDOW` messages in flight; each PUBACK deletes
its message (a refusal code ends the connection, nothing lost); a command received is checked
(`messages.parse_command`), authorised against the connector's service account (`box.command.send`),
queued for the Box through the platform's command path, audited, answered on the reply topic
(queued, then the Box's answer, or refused, or expired).
Between sessions: full-jitter backoff (a random wait up to ``min(cap, base * 2**failures)``).
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from cloud.api._authz import grants
from cloud.errors import CloudError
from cloud.hooks import targets
from cloud.mqttconn import link, messages
from cloud.mqttconn.errors import HookError, LinkError
from cloud.store import ConnectorRow

if TYPE_CHECKING:
    from cloud.mqttconn.worker import MqttWorker

log = logging.getLogger("boxcloud.mqttconn")

SendCommand = Callable[[str, str, dict[str, object], float], str]
WINDOW = 100  # messages in flight (sent, not acknowledged)
CONNECT_S = 10.0
KEEPALIVE_S = 30
RECHECK_S = 1.0  # the connector's row is read again this often (changed, deleted, disabled)
POLL_S = 0.1  # the queue is read again this often when it was found empty
COMMAND_RATE = (10.0, 20)  # commands a second, burst
MAX_PENDING = 100  # commands waiting for the Box's answer
STABLE_S = 30.0  # a connection that lasted this long resets the backoff
MAX_PACKET_IN = 16 * 1024  # MQTT 5: the largest packet the broker may send us


@dataclass(frozen=True)
class Backoff:
    base_s: float = 1.0
    cap_s: float = 60.0

    def delay(self, failures: int, rnd: Callable[[], float]) -> float:
        """Full jitter: a random wait up to the exponential ceiling."""
        return rnd() * min(self.cap_s, self.base_s * 2.0 ** min(failures, 30))


@dataclass
class _Pending:
    box: str
    ref: str | None
    expires: float


@dataclass
class _Session:
    """What one connection's callbacks leave for the thread's loop (same thread: no lock)."""

    connack: Any = None
    gone: str | None = None
    acked: list[tuple[int, Any]] = field(default_factory=list)
    inbox: list[mqtt.MQTTMessage] = field(default_factory=list)


class Link:
    """One connector's thread. The constructor does no I/O."""

    def __init__(self, worker: MqttWorker, cid: int) -> None:
        self.w, self.cid = worker, cid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"mqtt-connector-{cid}", daemon=True)
        self._tokens, self._filled = float(COMMAND_RATE[1]), time.monotonic()
        self.pending: dict[str, _Pending] = {}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self) -> None:
        self._thread.join(CONNECT_S + 5)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        if self.w.prepare is not None:
            self.w.prepare()
        st, failures = self.w.store, 0
        while not self._stop.is_set():
            row = st.connector(self.cid)
            if row is None or row.state != "enabled" or row.kind != "mqtt":
                return
            began = time.monotonic()
            try:
                self._session(row)
                continue  # the connector changed: connect again at once
            except (LinkError, HookError, ValueError) as e:  # HookError: TargetRefusedError among them
                why = str(e)
            except Exception as e:  # the thread's top: logged, and the loop goes on
                log.exception("connector %d: unexpected failure", self.cid)
                why = f"internal error: {type(e).__name__}"
            failures = 0 if time.monotonic() - began > STABLE_S else failures + 1
            wait = self.w.backoff.delay(failures, self.w.rnd)
            st.mqtt_link(self.cid, "down", why)
            log.warning("connector %d: %s; connecting again in %.1f s", self.cid, why, wait)
            self._stop.wait(wait)

    # -- one connection ----------------------------------------------------------------------------

    def _client(self, row: ConnectorRow, opened: dict[str, Any]) -> tuple[link.Pinned, str]:
        cfg = row.config
        tgt = link.target(str(cfg["host"]), int(cfg["port"]), self.w.reach)  # type: ignore[call-overload]
        address = targets.resolve(tgt, self.w.resolver, self.w.reach)
        ctx = link.context(str(cfg.get("ca_pem", "")), str(cfg.get("client_cert_pem", "")),
                           str(opened.get("client_key_pem", "")), self.w.ca_file)
        c = link.Pinned(address, str(cfg.get("client_id") or f"boxcloud-connector-{row.id}"),
                        link.protocol(str(cfg.get("protocol", "5"))))
        c.tls_set_context(ctx)
        c.max_inflight_messages_set(WINDOW)
        c.max_queued_messages_set(0)
        if cfg.get("auth") == "basic":
            c.username_pw_set(str(cfg.get("username", "")), str(opened.get("password", "")))
        return c, tgt.host

    def _session(self, row: ConnectorRow) -> None:
        st = self.w.store
        opened = json.loads(self.w.seeds.open(row.secrets) or "{}")
        client, host = self._client(row, opened)
        s = _Session()
        client.on_connect = lambda _c, _u, _f, rc, _p: setattr(s, "connack", rc)
        client.on_disconnect = lambda _c, _u, _f, rc, _p: setattr(s, "gone", f"the broker closed the connection ({rc})")
        client.on_publish = lambda _c, _u, mid, rc, _p: s.acked.append((mid, rc))
        client.on_message = lambda _c, _u, msg: s.inbox.append(msg)
        st.mqtt_link(self.cid, "connecting")
        port = int(row.config["port"])  # type: ignore[call-overload]
        props = None
        if client.protocol == mqtt.MQTTv5:  # the broker sends nothing bigger (a command is at most 4 KiB)
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it untyped
            props.MaximumPacketSize = MAX_PACKET_IN
        try:
            client.connect(host, port, KEEPALIVE_S, properties=props)
        except ssl.SSLError as e:
            raise LinkError(f"{host}:{port}: TLS refused: {e.reason or e}") from None
        except (OSError, ValueError) as e:
            raise LinkError(f"{host}:{port}: {getattr(e, 'strerror', None) or e}") from None
        try:
            self._connected(row, client, s, host)
        finally:
            client.disconnect()
            client.loop(0.1)
            sock = client.socket()
            if sock is not None:
                sock.close()

    def _connected(self, row: ConnectorRow, c: link.Pinned, s: _Session, host: str) -> None:
        st, cfg = self.w.store, row.config
        deadline = time.monotonic() + CONNECT_S
        while s.connack is None and s.gone is None:
            if time.monotonic() > deadline or self._stop.is_set():
                raise LinkError(f"{host}: no CONNACK within {CONNECT_S:.0f} s")
            c.loop(0.1)
        if s.connack is None or s.connack.is_failure:
            raise LinkError(f"{host}: the broker refused the connection: {s.connack or s.gone}")
        prefix = str(cfg.get("prefix", ""))
        cmd_lv = messages.levels(str(cfg["command_topic"]), prefix, allowed=("{box}",), needs=("{box}",))
        reply_lv = messages.levels(str(cfg["reply_topic"]), prefix, allowed=("{box}",), needs=("{box}",))
        if c.protocol == mqtt.MQTTv5:
            c.subscribe(messages.subscription(cmd_lv), options=SubscribeOptions(qos=1, noLocal=True,
                                                                                 retainAsPublished=True))
        else:
            c.subscribe(messages.subscription(cmd_lv), 1)
        st.mqtt_link(self.cid, "connected", "")
        log.info("connector %d: connected to %s", self.cid, host)
        version, checked, polled = (json.dumps(cfg, sort_keys=True), row.secrets), time.monotonic(), 0.0
        inflight: dict[int, int] = {}
        last_sent = 0
        while not self._stop.is_set():
            rc = c.loop(0.05)
            if s.gone or rc != mqtt.MQTT_ERR_SUCCESS:
                raise LinkError(f"{host}: {s.gone or 'connection lost (' + mqtt.error_string(rc) + ')'}")
            self._acks(c, s, inflight, host)
            now = time.monotonic()
            if len(inflight) < WINDOW // 2 and now - polled >= POLL_S:
                batch = st.mqtt_next(self.cid, last_sent, WINDOW - len(inflight))
                for m in batch:
                    info = c.publish(m.topic, m.payload, qos=1)
                    inflight[info.mid] = last_sent = m.id
                polled = 0.0 if batch else now
            while s.inbox:
                self._command(row, c, s.inbox.pop(0), cmd_lv, reply_lv)
            if now - checked >= RECHECK_S:
                checked = now
                self._answers(row, c, reply_lv)
                again = st.connector(self.cid)
                if again is None or again.state != "enabled" or (json.dumps(again.config, sort_keys=True),
                                                                   again.secrets) != version:
                    return

    def _acks(self, c: link.Pinned, s: _Session, inflight: dict[int, int], host: str) -> None:
        if not s.acked:
            return
        done, refused = [], None
        for mid, rc in s.acked:
            item = inflight.pop(mid, None)
            if item is None:
                continue
            if getattr(rc, "is_failure", False):
                refused = rc
            else:
                done.append(item)
        s.acked.clear()
        self.w.store.mqtt_acked(self.cid, done)
        if refused is not None:
            raise LinkError(f"{host}: the broker refused a message ({refused}): it is kept and sent again")

    # -- commands ------------------------------------------------------------------------------------

    def _command(self, row: ConnectorRow, c: link.Pinned, msg: mqtt.MQTTMessage, cmd_lv: list[str],
                 reply_lv: list[str]) -> None:
        box = messages.box_of(cmd_lv, msg.topic)
        if box is None:
            return  # not a command topic of ours (a broker may send more than was asked)
        st = self.w.store
        sa = st.user(row.service_account_id)
        actor = f"user:{sa.name}" if sa is not None else f"connector:{row.id}"
        ref: str | None = None
        if not self._take_token():  # a flood: dropped, counted, not answered (no reply for every one of it)
            st.mqtt_counted(self.cid, refused=True)
            log.debug("connector %d: more than %.0f commands a second: one dropped", self.cid, COMMAND_RATE[0])
            return
        try:
            write = messages.parse_command(bytes(msg.payload))
            ref = write.ref
            if msg.retain:
                raise messages.CommandError("a retained command is not taken (it would run at every connection)")
            if len(self.pending) >= MAX_PENDING:
                raise messages.CommandError(f"{MAX_PENDING} commands already wait for their Boxes")
            if sa is None or sa.account_id != row.account_id or not st.in_scope(grants(
                    row.account_id, st.bindings(row.account_id, sa.id),
                    st.custom_roles(row.account_id)).scope("box.command.send"), box):
                if st.box_account(box) == row.account_id:
                    st.audit(row.account_id, actor, "denied", f"box:{box}", "denied", permission="box.command.send",
                             via=f"connector:{row.id}", point=write.args.get("point"))
                raise messages.CommandError(f"no Box {box!r} here")
            try:
                cmd_id = self.w.send(box, "write", write.args, float(write.ttl_s))
            except CloudError as e:
                raise messages.CommandError(str(e)) from None
        except messages.CommandError as e:
            ref = ref or e.ref
            st.mqtt_counted(self.cid, refused=True)
            log.info("connector %d: a command for %s refused: %s", self.cid, box, e)
            c.publish(messages.render(reply_lv, box), messages.reply(ref, "refused", str(e)), qos=1)
            return
        st.mqtt_counted(self.cid, refused=False)
        st.audit(row.account_id, actor, "command.send", f"box:{box}", command=cmd_id, name="write",
                 via=f"connector:{row.id}", point=write.args.get("point"))
        self.pending[cmd_id] = _Pending(box, ref, time.time() + write.ttl_s)
        c.publish(messages.render(reply_lv, box), messages.reply(ref, "queued", "sent to the Box", cmd_id), qos=1)

    def _take_token(self) -> bool:
        now = time.monotonic()
        rate, burst = COMMAND_RATE
        self._tokens = min(float(burst), self._tokens + (now - self._filled) * rate)
        self._filled = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _answers(self, row: ConnectorRow, c: link.Pinned, reply_lv: list[str]) -> None:
        """The Boxes' answers to the commands sent: published, and audited."""
        st = self.w.store
        for cmd_id, p in list(self.pending.items()):
            r = st.command(cmd_id)
            if r is not None and r.status:
                status, detail = r.status, r.detail
            elif r is None or (r.published is None and time.time() > p.expires):
                status, detail = "expired", "not sent to the Box within its ttl_s"
            else:
                continue
            del self.pending[cmd_id]
            st.audit(row.account_id, f"connector:{row.id}", "command.result", f"box:{p.box}",
                     "ok" if status == "ok" else status, command=cmd_id, detail=detail[:300])
            c.publish(messages.render(reply_lv, p.box), messages.reply(p.ref, status, detail, cmd_id), qos=1)
