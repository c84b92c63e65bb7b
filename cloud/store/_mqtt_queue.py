"""The MQTT connectors' durable queues: each connector's messages for the customer's broker, with
a byte cap, and its link state. Tables `mqtt_items` and `mqtt_state`.

`mqtt_queue` turns feed rows into a connector's messages and moves its place in the feed in one
transaction (as `queue_items` does for webhooks), then keeps the queue under its byte cap by
deleting its oldest messages (counted in `evicted`). A message is deleted only once the broker
acknowledged it (`mqtt_acked`, on PUBACK): a crash or a lost connection sends the unacknowledged
ones again, oldest first (duplicates, never a loss but by the cap). The byte count is kept in
`mqtt_state` (a running sum; no scan of the queue). What the messages mean is `cloud.mqttconn`'s;
this module keeps rows. No network I/O.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from cloud.store._base import BIGINT, ROW_ID, SECONDS, StoreBase, metadata
from cloud.store._connectors import ConnectorRow, connectors
from cloud.store._dialect import Upsert

mqtt_items = sa.Table(
    "mqtt_items", metadata,
    sa.Column("id", ROW_ID, primary_key=True),
    sa.Column("connector_id", BIGINT, nullable=False),
    sa.Column("topic", sa.Text, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("bytes", sa.Integer, nullable=False),  # topic and payload
    sa.Index("mqtt_items_by_connector", "connector_id", "id"),
    sqlite_autoincrement=True,  # an id is never given again (SQLite would restart at 1 in an empty table, and
)                               # a link sending "after the last id it sent" would skip the new messages)
mqtt_state = sa.Table(
    "mqtt_state", metadata,
    sa.Column("connector_id", BIGINT, primary_key=True),
    sa.Column("link", sa.Text, nullable=False, server_default="connecting"),  # connecting, connected, down
    sa.Column("since", SECONDS, nullable=False),  # when the link took that state
    sa.Column("queued", BIGINT, nullable=False, server_default=sa.text("0")),  # messages in the queue
    sa.Column("bytes", BIGINT, nullable=False, server_default=sa.text("0")),  # their bytes
    sa.Column("evicted", BIGINT, nullable=False, server_default=sa.text("0")),  # dropped at the cap, ever
    sa.Column("commands", BIGINT, nullable=False, server_default=sa.text("0")),  # commands received, ever
    sa.Column("refused", BIGINT, nullable=False, server_default=sa.text("0")),  # of which refused
)
_NEW_STATE = Upsert(mqtt_state)  # there already: nothing


@dataclass(frozen=True)
class MqttState:
    link: str
    since: float
    queued: int
    bytes: int
    evicted: int
    commands: int
    refused: int


@dataclass(frozen=True)
class QueuedMessage:
    id: int
    topic: str
    payload: bytes


class MqttQueues(StoreBase):
    """The MQTT connectors' queues (a part of `Store`)."""

    def mqtt_queue(self, connector_id: int, was: int, new_pos: int, messages: Sequence[tuple[str, bytes]],
                   cap: int) -> tuple[bool, int]:
        """Append (topic, payload) messages and move the connector's feed place to `new_pos`, in one
        transaction; then its oldest messages go while the queue holds more than `cap` bytes.

        Returns:
            (False, 0) when its place is not `was` any more (nothing written); else (True, evicted now).
        """
        c, m, s = connectors.c, mqtt_items.c, mqtt_state.c
        with self._tx() as db:
            if db.execute(connectors.update().where(c.id == connector_id, c.feed_pos == was, c.state == "enabled")
                          .values(feed_pos=new_pos)).rowcount != 1:
                return False, 0
            self._state_row(db, connector_id)
            if not messages:
                return True, 0
            size = sum(len(t) + len(p) for t, p in messages)
            db.execute(mqtt_items.insert(), [{"connector_id": connector_id, "topic": t, "payload": p,
                                              "bytes": len(t) + len(p)} for t, p in messages])
            db.execute(mqtt_state.update().where(s.connector_id == connector_id).values(
                queued=s.queued + len(messages), bytes=s.bytes + size))
            total = int(db.execute(sa.select(s.bytes).where(s.connector_id == connector_id)).scalar_one())
            evicted = 0
            while total > cap:  # the oldest go first, a chunk at a time
                rows = db.execute(sa.select(m.id, m.bytes).where(m.connector_id == connector_id)
                                  .order_by(m.id).limit(500)).all()
                if not rows:
                    break
                take, freed = [], 0
                for r in rows:
                    if total - freed <= cap:
                        break
                    take.append(int(r.id))
                    freed += int(r.bytes)
                db.execute(mqtt_items.delete().where(m.id.in_(take)))
                db.execute(mqtt_state.update().where(s.connector_id == connector_id).values(
                    queued=s.queued - len(take), bytes=s.bytes - freed, evicted=s.evicted + len(take)))
                total -= freed
                evicted += len(take)
        return True, evicted

    @staticmethod
    def _state_row(db: sa.Connection, connector_id: int) -> None:
        db.execute(_NEW_STATE(db), {"connector_id": connector_id, "link": "connecting", "since": time.time(),
                                    "queued": 0, "bytes": 0, "evicted": 0, "commands": 0, "refused": 0})

    def mqtt_next(self, connector_id: int, after: int, limit: int) -> list[QueuedMessage]:
        """The connector's oldest messages after message `after` (0: from the oldest), at most `limit`."""
        m = mqtt_items.c
        with self._read() as db:
            return [QueuedMessage(int(r.id), r.topic, bytes(r.payload)) for r in db.execute(
                sa.select(m.id, m.topic, m.payload).where(m.connector_id == connector_id, m.id > after)
                .order_by(m.id).limit(limit))]

    def mqtt_acked(self, connector_id: int, ids: Sequence[int]) -> int:
        """The broker acknowledged these messages (PUBACK): they go, and count as delivered. Returns how
        many were still there (one evicted meanwhile is not counted twice)."""
        if not ids:
            return 0
        m, s = mqtt_items.c, mqtt_state.c
        with self._tx() as db:
            n, size = db.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(m.bytes), 0)).where(
                m.connector_id == connector_id, m.id.in_(list(ids)))).one()
            if not n:
                return 0
            db.execute(mqtt_items.delete().where(m.connector_id == connector_id, m.id.in_(list(ids))))
            db.execute(mqtt_state.update().where(s.connector_id == connector_id).values(
                queued=s.queued - int(n), bytes=s.bytes - int(size)))
            db.execute(connectors.update().where(connectors.c.id == connector_id).values(
                delivered=connectors.c.delivered + int(n), failing_since=None, last_error=""))
        return int(n)

    def mqtt_link(self, connector_id: int, link: str, error: str | None = None, *, now: float | None = None) -> None:
        """The connection's state ("connecting", "connected", "down"), and the last error (None: kept)."""
        now = time.time() if now is None else now
        s = mqtt_state.c
        with self._tx() as db:
            self._state_row(db, connector_id)
            db.execute(mqtt_state.update().where(s.connector_id == connector_id, s.link != link)
                       .values(link=link, since=now))
            if error is not None:
                db.execute(connectors.update().where(connectors.c.id == connector_id).values(
                    last_error=error[:500],
                    failing_since=sa.func.coalesce(connectors.c.failing_since, now) if error else None))

    def mqtt_counted(self, connector_id: int, *, refused: bool) -> None:
        """A command received (and whether it was refused)."""
        s = mqtt_state.c
        with self._tx() as db:
            self._state_row(db, connector_id)
            db.execute(mqtt_state.update().where(s.connector_id == connector_id).values(
                commands=s.commands + 1, refused=s.refused + int(refused)))

    def mqtt_state(self, connector_id: int) -> MqttState | None:
        with self._read() as db:
            r = db.execute(sa.select(mqtt_state).where(mqtt_state.c.connector_id == connector_id)).first()
        if r is None:
            return None
        return MqttState(r.link, float(r.since), int(r.queued), int(r.bytes), int(r.evicted), int(r.commands),
                         int(r.refused))

    def mqtt_connector(self, connector_id: int) -> tuple[ConnectorRow, MqttState | None] | None:
        """A connector's row and its link's state as of one moment: one statement, so that what a reader
        sees (a link "down" and the error that took it down) was written together, on either engine (two
        reads could fall on each side of the link's write, even in one PostgreSQL transaction)."""
        s = mqtt_state.c
        query = (sa.select(connectors, s.link, s.since, s.queued, s.bytes.label("state_bytes"),
                           s.evicted.label("state_evicted"), s.commands, s.refused)
                 .outerjoin(mqtt_state, s.connector_id == connectors.c.id).where(connectors.c.id == connector_id))
        with self._read() as db:
            r = db.execute(query).first()
        if r is None:
            return None
        if r.link is None:
            return ConnectorRow.of(r), None
        return ConnectorRow.of(r), MqttState(r.link, float(r.since), int(r.queued), int(r.state_bytes),
                                             int(r.state_evicted), int(r.commands), int(r.refused))

    def mqtt_forget(self, connector_id: int) -> None:
        """A deleted connector's queue and state."""
        with self._tx() as db:
            db.execute(mqtt_items.delete().where(mqtt_items.c.connector_id == connector_id))
            db.execute(mqtt_state.delete().where(mqtt_state.c.connector_id == connector_id))
