"""The receiver's intake: messages taken from the broker, handled in groups by one thread, and
acknowledged only once handled (group commit).

paho's network thread only puts each message in a queue (`put`): it never waits on the database,
so it keeps reading and answering the broker (keepalives) while a group commits. The intake's
thread takes what waits: at most `MAX_GROUP` messages and `MAX_GROUP_BYTES` of payload; when it
finds a single message it waits `LINGER_S` for company, and never longer (a quiet fleet's batch
is stored at once, a busy one's in big groups: what accumulates while a group commits is the
next group). The receiver handles a group in one go (the batches among it stored in one
transaction, `cloud.receiver`) and says which messages may be acknowledged; the intake then
acknowledges them (PUBACK) in the order they came, up to the first it may not: that message and
every later one of its connection are not acknowledged, and the receiver ends the connection
(the broker sends them again). An acknowledgement goes only on the connection its message came
on (a packet id names a message only there): a message of an ended connection is never
acknowledged on the next.

How many messages can wait is the broker's to bound: the receiver asks for at most `RECEIVE_MAX`
unacknowledged messages at a time (MQTT 5 Receive Maximum; Mosquitto's default is 20, too few
to make a group). The thread is started and stopped by the receiver; no I/O of its own.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from cloud._background import Background

log = logging.getLogger("boxcloud.receiver")

MAX_GROUP = 500  # messages handled together (their batches in one transaction)
MAX_GROUP_BYTES = 4 * 1024 * 1024  # payload bytes handled together (a group of a few backlog batches)
LINGER_S = 0.002  # a lone message waits at most this for others
RECEIVE_MAX = 1000  # unacknowledged messages the broker may send the receiver (two groups' worth)
IDLE_S = 0.5  # how often an idle thread looks at its stop flag


@dataclass(slots=True)
class Taken:
    """A message as it came, and the connection it came on (a number counted up at each one)."""

    msg: mqtt.MQTTMessage
    conn: int


Handle = Callable[[list[mqtt.MQTTMessage]], list[bool]]  # messages -> whether each may be acknowledged


class Intake(Background):
    """The queue between paho's thread and the one that handles. The constructor does no I/O."""

    JOIN_S = 30.0  # a group being committed is finished

    def __init__(self, handle: Handle, ack: Callable[[int, int], object], hold: Callable[[], None]) -> None:
        """`handle` a group; `ack(mid, qos)` a message on the current connection; `hold()`: end the
        current connection (a message of it could not be handled)."""
        super().__init__()
        self._handle, self._ack, self._hold = handle, ack, hold
        self._queue: deque[Taken] = deque()
        self._cond = threading.Condition()
        self._conn = 0  # the current connection's number
        self._held = -1  # a connection that acknowledges nothing more (a message of it was not handled)
        self.groups = 0  # groups handled since start, and the messages in them (for benchmarks)
        self.messages = 0

    def start(self) -> None:
        """Start the thread."""
        self._spawn(self._loop, "receiver-intake")

    def stop(self) -> None:
        """End the thread once its group is done; what still waits is not acknowledged (sent again)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        super().stop()

    def new_connection(self) -> None:
        """The connection changed (paho's thread, at a connection or a disconnection): nothing taken
        before is acknowledged from now on."""
        with self._cond:
            self._conn += 1

    def put(self, msg: mqtt.MQTTMessage) -> None:
        """A message from the broker (paho's thread): queued, never waits."""
        with self._cond:
            self._queue.append(Taken(msg, self._conn))
            if len(self._queue) == 1:
                self._cond.notify()

    def waiting(self) -> int:
        """Messages waiting to be handled."""
        with self._cond:
            return len(self._queue)

    def _take(self) -> list[Taken]:
        """The next group: at once what waits, or the first to come (and what joins it in `LINGER_S`)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._queue or self._stop.is_set(), IDLE_S) or self._stop.is_set():
                return []
            alone = len(self._queue) == 1
        if alone:
            self._stop.wait(LINGER_S)
        group: list[Taken] = []
        size = 0
        with self._cond:
            while self._queue and len(group) < MAX_GROUP and (not group or size < MAX_GROUP_BYTES):
                t = self._queue.popleft()
                if t.conn == self._held:
                    continue  # its connection stopped acknowledging: the broker sends it again
                group.append(t)
                size += len(t.msg.payload)
        return group

    def _loop(self) -> None:
        while not self._stop.is_set():
            group = self._take()
            if group:
                self.run(group)

    def run(self, group: list[Taken]) -> None:
        """Handle a group, then acknowledge it in order up to the first message not handled."""
        try:
            done = self._handle([t.msg for t in group])
        except Exception:  # the thread's top: a bug costs a redelivery, never the receiver
            log.exception("unexpected failure handling %d messages: not acknowledged", len(group))
            done = [False] * len(group)
        self.groups += 1
        self.messages += len(group)
        hold = False
        with self._cond:
            for t, ok in zip(group, done, strict=True):
                if t.conn == self._held or t.conn != self._conn:
                    continue  # its connection ended or stopped acknowledging: the broker sends it again
                if ok:
                    self._ack(t.msg.mid, t.msg.qos)
                else:
                    self._held, hold = t.conn, True
        if hold:
            self._hold()
