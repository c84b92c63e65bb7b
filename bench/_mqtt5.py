"""A lean MQTT 5 client on asyncio streams, for simulating thousands of Boxes in one process
(`bench.fleet`). Not the Box's client (boxd uses paho): a bench's.

Why not paho: a paho client is a socket plus, with `loop_start`, a thread; 10,000 Boxes would be
10,000 threads (a stack each, and the GIL handed between them). paho can be driven from one asyncio
loop (`loop_read`/`loop_write`/`loop_misc` on socket callbacks), but then each Box needs those
callbacks, a timer for `loop_misc` and paho's locks around every packet, for a client of which a
simulated Box uses a tenth (not measured side by side here: the simulator's own CPU is printed by
`bench.fleet`, and it is the figure to watch). What a simulated Box needs is small: CONNECT (with a Will and
clean start), PUBLISH QoS 0/1 and their PUBACKs, SUBSCRIBE, PUBACK for what the platform sends,
PINGREQ. The packets follow the MQTT 5.0 specification (OASIS, 2019), section 3; asyncio's TLS
(`ssl.SSLContext`, mutual TLS) carries them.

What it does not do: QoS 2, topic aliases, receive maximum, AUTH, resending after a reconnect
(the caller keeps what was not acknowledged and sends it again, as a Box's queue does).
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = (
    0x10, 0x20, 0x30, 0x40, 0x82, 0x90, 0xC0, 0xD0, 0xE0)
_SESSION_EXPIRY = 0x11


class MqttError(Exception):
    """The broker refused something, or the connection ended (the message says which)."""


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, byte = n >> 7, n & 0x7F
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def connect_packet(client_id: str, keepalive: int, will: Will | None, clean_start: bool = True,
                   session_expiry: int = 0) -> bytes:
    flags = 0x02 if clean_start else 0
    payload = _str(client_id)
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += b"\x00" + _str(will.topic) + _str(will.payload)
    props = bytes([_SESSION_EXPIRY]) + struct.pack("!I", session_expiry) if session_expiry else b""
    var = _str("MQTT") + bytes([5, flags]) + struct.pack("!H", keepalive) + _varint(len(props)) + props
    return _packet(CONNECT, var + payload)


def publish_packet(topic: str, payload: bytes, qos: int, retain: bool, packet_id: int) -> bytes:
    body = _str(topic) + (struct.pack("!H", packet_id) if qos else b"") + b"\x00" + payload
    return _packet(PUBLISH | (qos << 1) | (1 if retain else 0), body)


class Client:
    """One MQTT 5 connection. `on_message(topic, payload)` gets what the broker sends."""

    def __init__(self, client_id: str, on_message: Callable[[str, bytes], None] | None = None) -> None:
        self.client_id = client_id
        self.on_message = on_message
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._acks: dict[int, asyncio.Future[int]] = {}
        self._next_id = 0
        self._task: asyncio.Task[None] | None = None
        self.closed: asyncio.Event = asyncio.Event()
        self.closed_by_peer = False  # the broker's side ended it: its end of stream, a reset, a DISCONNECT

    async def connect(self, host: str, port: int, ctx: ssl.SSLContext, *, keepalive: int = 60,
                      will: Will | None = None, within_s: float = 30.0) -> None:
        """Open TLS, send CONNECT, wait for a CONNACK that accepts (or raise MqttError / OSError)."""
        self.closed.clear()
        self.closed_by_peer = False
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ctx, server_hostname=host), within_s)
        self._reader, self._writer = reader, writer
        writer.write(connect_packet(self.client_id, keepalive, will))
        first, body = await asyncio.wait_for(self._read_packet(), within_s)
        if first & 0xF0 != CONNACK or len(body) < 2 or body[1] != 0:
            self.abort()
            raise MqttError(f"{self.client_id}: connection refused (reason {body[1] if len(body) > 1 else '?'})")
        self._task = asyncio.create_task(self._read_loop())

    async def _read_packet(self) -> tuple[int, bytes]:
        assert self._reader is not None
        first = (await self._reader.readexactly(1))[0]
        n, shift = 0, 0
        while True:
            b = (await self._reader.readexactly(1))[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
        return first, await self._reader.readexactly(n)

    async def _read_loop(self) -> None:
        try:
            while True:
                first, body = await self._read_packet()
                kind = first & 0xF0
                if kind in (PUBACK, SUBACK):
                    (pid,) = struct.unpack_from("!H", body)
                    reason = body[2] if len(body) > 2 and kind == PUBACK else (body[-1] if kind == SUBACK else 0)
                    fut = self._acks.pop(pid, None)
                    if fut is not None and not fut.done():
                        fut.set_result(reason)
                elif kind == PUBLISH:
                    self._incoming(first, body)
                elif kind == DISCONNECT:
                    self.closed_by_peer = True
                    break
        except (asyncio.IncompleteReadError, ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            self.closed_by_peer = True  # as `boxd.uplink` tells it: the policy's `by_broker`
        except (OSError, ssl.SSLError, struct.error):
            pass
        finally:
            self._lost()

    def _incoming(self, first: int, body: bytes) -> None:
        qos = (first >> 1) & 3
        (tlen,) = struct.unpack_from("!H", body)
        topic, at = body[2:2 + tlen].decode(errors="replace"), 2 + tlen
        if qos:
            pid = body[at:at + 2]
            at += 2
            self._send(_packet(PUBACK, pid))
        plen, shift = 0, 0
        while True:  # the properties' length
            b = body[at]
            at += 1
            plen |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
        if self.on_message is not None:
            self.on_message(topic, body[at + plen:])

    def _lost(self) -> None:
        for fut in self._acks.values():
            fut.cancel()  # the connection ended before its acknowledgement (nobody need look)
        self._acks.clear()
        if self._writer is not None:
            self._writer.close()
        self.closed.set()

    def _send(self, data: bytes) -> None:
        if self._writer is None or self._writer.is_closing():
            raise MqttError(f"{self.client_id}: not connected")
        self._writer.write(data)

    def _packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> asyncio.Future[int]:
        """Send a PUBLISH; the future is the PUBACK's reason code (0 at once for QoS 0), cancelled when
        the connection ends before it."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        pid = self._packet_id() if qos else 0
        if qos:
            self._acks[pid] = fut
        else:
            fut.set_result(0)
        self._send(publish_packet(topic, payload, qos, retain, pid))
        return fut

    def subscribe(self, topic_filter: str, qos: int = 1) -> asyncio.Future[int]:
        """Send a SUBSCRIBE; the future is the SUBACK's reason code (the granted QoS, or >= 0x80)."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        pid = self._packet_id()
        self._acks[pid] = fut
        self._send(_packet(SUBSCRIBE, struct.pack("!H", pid) + b"\x00" + _str(topic_filter) + bytes([qos])))
        return fut

    def ping(self) -> None:
        self._send(bytes([PINGREQ, 0]))

    async def disconnect(self) -> None:
        """A normal DISCONNECT (the Will is not published)."""
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(bytes([DISCONNECT, 0]))
            await self._writer.drain()
        self.abort()

    def abort(self) -> None:
        """Drop the connection without DISCONNECT (the broker publishes the Will)."""
        if self._task is not None:
            self._task.cancel()
        if self._writer is not None:
            self._writer.close()
        self.closed.set()
