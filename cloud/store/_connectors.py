"""Connectors (webhooks) and their durable outbox: the feed of stored batches, each connector's
items, deliveries and dead letters.

Tables `connectors`, `feed`, `hook_items`, `hook_deliveries`. The receiver's transaction that stores
a batch also appends it to `feed` (`Telemetry.store_batch`, only while some connector exists):
what connectors send is what the platform stored, never what the broker said. Each connector
keeps its place in the feed (`feed_pos`); `queue_items` turns feed rows into the connector's
items and moves its place in one transaction, so a restart neither skips nor repeats a batch.
The outbox's size is kept in the connector's row by the transactions that change it
(`outbox_items`, `outbox_bytes`); past a cap its oldest items are evicted, counted (`evict`).
Items are grouped into a delivery when it is first tried (`next_delivery`), and the group is
kept across retries (its id is the stable ``webhook-id``); a delivery taken by the endpoint is
deleted with its items in one transaction (`delivered`). A crash between the endpoint's answer
and that transaction sends the delivery again with the same id: the only duplicate, and the one
the id lets a receiver drop. What the columns mean is `cloud.hooks`'; this module keeps rows.
No network I/O.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from cloud.store._base import BIGINT, ROW_ID, SECONDS, AnyRow, StoreBase, metadata

connectors = sa.Table(
    "connectors", metadata,
    sa.Column("id", ROW_ID, primary_key=True),
    sa.Column("account_id", BIGINT, nullable=False, index=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),  # "webhook"
    sa.Column("service_account_id", BIGINT, nullable=False),  # it sees what this service account may
    sa.Column("config", sa.Text, nullable=False),  # JSON, no secrets
    sa.Column("secrets", sa.Text, nullable=False),  # JSON, sealed (cloud.api._secrets.Seeds)
    sa.Column("state", sa.Text, nullable=False),  # unconfirmed, confirming, enabled, disabled
    sa.Column("feed_pos", BIGINT, nullable=False),  # the last feed row turned into items
    sa.Column("failing_since", SECONDS),  # the first failure since the last success
    sa.Column("last_error", sa.Text, nullable=False, server_default=""),
    sa.Column("delivered", BIGINT, nullable=False, server_default=sa.text("0")),  # items taken by the endpoint
    sa.Column("created", SECONDS, nullable=False),
    # migration 0008: the outbox's size (kept in the transactions that change it) and what its cap evicted
    sa.Column("outbox_items", BIGINT, nullable=False, server_default=sa.text("0")),
    sa.Column("outbox_bytes", BIGINT, nullable=False, server_default=sa.text("0")),
    sa.Column("evicted", BIGINT, nullable=False, server_default=sa.text("0")),  # items evicted, ever
    sa.Column("evicting_since", SECONDS),  # the first eviction since the outbox was last under half its cap
    # the circuit breaker (cloud.hooks.policy.Breaker), so that a restart does not close it
    sa.Column("breaker_failures", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("breaker_until", SECONDS, nullable=False, server_default=sa.text("0")),
    sa.Column("breaker_rest", SECONDS, nullable=False, server_default=sa.text("0")),
)
feed = sa.Table(
    "feed", metadata,
    sa.Column("id", ROW_ID, primary_key=True),
    sa.Column("box_id", sa.Text, nullable=False),
    sa.Column("table_id", BIGINT, nullable=False),
    sa.Column("base_ts_ms", BIGINT, nullable=False),  # as stored (a batch without a trusted time: its arrival)
    sa.Column("payload", sa.LargeBinary, nullable=False),  # the batch as the Box sent it
)
hook_items = sa.Table(
    "hook_items", metadata,
    sa.Column("id", ROW_ID, primary_key=True),
    sa.Column("connector_id", BIGINT, nullable=False),
    sa.Column("delivery_id", BIGINT),  # None until grouped into a delivery
    sa.Column("box_id", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),  # the item as sent (JSON, signed)
    sa.Column("created", SECONDS, nullable=False),
    sa.Index("hook_items_by_connector", "connector_id", "delivery_id", "id"),
    sa.Index("hook_items_by_age", "connector_id", "id"),  # migration 0008: the oldest first (evict)
)
hook_deliveries = sa.Table(
    "hook_deliveries", metadata,
    sa.Column("id", ROW_ID, primary_key=True),
    sa.Column("connector_id", BIGINT, nullable=False),
    sa.Column("state", sa.Text, nullable=False),  # "pending" or "dead"
    sa.Column("created", SECONDS, nullable=False),  # when first grouped (its age gives up after about a day)
    sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("next_at", SECONDS, nullable=False),
    sa.Column("last_error", sa.Text, nullable=False, server_default=""),
    sa.Column("n_items", sa.Integer, nullable=False),
    sa.Index("hook_deliveries_by_connector", "connector_id", "state", "id"),
)


@dataclass(frozen=True)
class ConnectorRow:
    id: int
    account_id: int
    name: str
    kind: str
    service_account_id: int
    config: dict[str, object]
    secrets: str
    state: str
    feed_pos: int
    failing_since: float | None
    last_error: str
    delivered: int
    created: float
    outbox_items: int = 0
    outbox_bytes: int = 0
    evicted: int = 0
    evicting_since: float | None = None
    breaker: tuple[int, float, float] = (0, 0.0, 0.0)  # failures in a row, open until, its last rest (s)

    @classmethod
    def of(cls, r: AnyRow) -> ConnectorRow:
        m = r._mapping
        return cls(int(m["id"]), int(m["account_id"]), m["name"], m["kind"], int(m["service_account_id"]),
                   json.loads(m["config"]), m["secrets"], m["state"], int(m["feed_pos"]), m["failing_since"],
                   m["last_error"], int(m["delivered"]), float(m["created"]), int(m["outbox_items"]),
                   int(m["outbox_bytes"]), int(m["evicted"]), m["evicting_since"],
                   (int(m["breaker_failures"]), float(m["breaker_until"]), float(m["breaker_rest"])))


@dataclass(frozen=True)
class FeedRow:
    id: int
    box_id: str
    table_id: int
    base_ts_ms: int
    payload: bytes


@dataclass(frozen=True)
class DeliveryRow:
    id: int
    connector_id: int
    state: str
    created: float
    attempts: int
    next_at: float
    last_error: str
    items: int
    bodies: tuple[str, ...] = ()  # the items, oldest first (read with the delivery to send it)


FEEDING_RECHECK_S = 60.0  # a store that saw a connector asks again after this long (the last one deleted)


class Connectors(StoreBase):
    """Connectors and their outbox (a part of `Store`)."""

    _feeding: bool | None = None  # whether some connector exists (store_batch feeds only then)
    _feeding_seen = 0.0  # when a connector was last seen (monotonic)

    def feeding(self, db: sa.Connection | None = None) -> bool:
        """Whether some connector exists, asked of the database for each group of batches until one is
        seen (then again a minute later): the connectors are made by another store (the API's role on
        PostgreSQL, another process), and a batch stored after a connector was enabled must be fed.
        One indexed read, in the transaction `db` when given (the storing one: no round trips of its own)."""
        now = time.monotonic()
        if not self._feeding or now - self._feeding_seen > FEEDING_RECHECK_S:
            query = sa.select(connectors.c.id).limit(1)
            if db is not None:
                self._feeding = db.execute(query).first() is not None
            else:
                with self._read() as conn:
                    self._feeding = conn.execute(query).first() is not None
            self._feeding_seen = now
        return self._feeding

    def add_connector(self, account_id: int, name: str, kind: str, *, service_account_id: int,
                      config: dict[str, object], sealed: str) -> int:
        """A new connector, unconfirmed; it takes what is stored from now on."""
        with self._tx() as db:
            head = db.execute(sa.select(sa.func.max(feed.c.id))).scalar() or 0
            cid = int(db.execute(connectors.insert().values(
                account_id=account_id, name=name, kind=kind, service_account_id=service_account_id,
                config=json.dumps(config), secrets=sealed, state="unconfirmed", feed_pos=head,
                created=time.time())).inserted_primary_key[0])  # type: ignore[index]
        self._feeding = True
        return cid

    def connector(self, connector_id: int) -> ConnectorRow | None:
        with self._read() as db:
            r = db.execute(sa.select(connectors).where(connectors.c.id == connector_id)).first()
        return ConnectorRow.of(r) if r else None

    def connectors(self, account_id: int | None = None, after: int = 0, limit: int = 1000) -> list[ConnectorRow]:
        """An account's connectors (every connector with None) by id, after `after`, at most `limit`."""
        query = sa.select(connectors).where(connectors.c.id > after)
        if account_id is not None:
            query = query.where(connectors.c.account_id == account_id)
        with self._read() as db:
            return [ConnectorRow.of(r) for r in db.execute(query.order_by(connectors.c.id).limit(limit))]

    def update_connector(self, connector_id: int, *, expect_state: str | None = None, **values: object) -> bool:
        """Change a connector's columns (`config` as a dict); with `expect_state`, only from that state."""
        if "config" in values:
            values["config"] = json.dumps(values["config"])
        cond = connectors.c.id == connector_id
        if expect_state is not None:
            cond = sa.and_(cond, connectors.c.state == expect_state)
        with self._tx() as db:
            return db.execute(connectors.update().where(cond).values(**values)).rowcount == 1

    def enable_connector(self, connector_id: int, *, expect_state: str) -> bool:
        """The endpoint proved it is its owner's: enabled, taking what is stored from now on (its place
        moved to the feed's newest row in the same transaction; a disabled one had kept queuing), no
        longer failing (its breaker closed)."""
        c = connectors.c
        with self._tx() as db:
            head = db.execute(sa.select(sa.func.max(feed.c.id))).scalar() or 0
            return db.execute(connectors.update().where(c.id == connector_id, c.state == expect_state).values(
                state="enabled", last_error="", failing_since=None, breaker_failures=0, breaker_until=0.0,
                breaker_rest=0.0,  # it answered: well again (a disabled one is not disabled again at once)
                feed_pos=sa.case((c.feed_pos < head, head), else_=c.feed_pos))).rowcount == 1

    def delete_connector(self, connector_id: int) -> None:
        """A connector, its items and deliveries (dead letters too)."""
        with self._tx() as db:
            for table, col in ((hook_items, hook_items.c.connector_id),
                               (hook_deliveries, hook_deliveries.c.connector_id), (connectors, connectors.c.id)):
                db.execute(table.delete().where(col == connector_id))
        self._feeding = None

    # -- the feed ------------------------------------------------------------------------------

    def feed_after(self, pos: int, limit: int) -> list[FeedRow]:
        f = feed.c
        with self._read() as db:
            return [FeedRow(int(r.id), r.box_id, int(r.table_id), int(r.base_ts_ms), bytes(r.payload)) for r in
                    db.execute(sa.select(feed).where(f.id > pos).order_by(f.id).limit(limit))]

    def queue_items(self, connector_id: int, was: tuple[int, str], new_pos: int,
                    items: Sequence[tuple[str, str]]) -> bool:
        """Append (box, body) items to a connector's outbox and move its feed place, in one transaction;
        False (nothing written) when its place and state are not `was` any more (confirmed meanwhile:
        the rows are read again with the new state)."""
        now = time.time()
        c = connectors.c
        size = sum(len(body) for _, body in items)
        with self._tx() as db:
            if db.execute(connectors.update().where(c.id == connector_id, c.feed_pos == was[0], c.state == was[1])
                          .values(feed_pos=new_pos, outbox_items=c.outbox_items + len(items),
                                  outbox_bytes=c.outbox_bytes + size)).rowcount != 1:
                return False
            if items:
                db.execute(hook_items.insert(), [{"connector_id": connector_id, "box_id": b, "body": body,
                                                  "created": now} for b, body in items])
        return True

    def trim_feed(self) -> int:
        """Delete feed rows every connector has passed (all of them when there is none), but the newest:
        on SQLite a generated key is the rowid, which would start again below a connector's place
        if the newest row went (a new row numbered as one already passed would never be sent)."""
        with self._tx() as db:
            low = db.execute(sa.select(sa.func.min(connectors.c.feed_pos))).scalar()
            top = db.execute(sa.select(sa.func.max(feed.c.id))).scalar()
            if top is None:
                return 0
            return int(db.execute(feed.delete().where(feed.c.id < min(int(top), int(low if low is not None else top))))
                       .rowcount)

    # -- deliveries ----------------------------------------------------------------------------

    def next_delivery(self, connector_id: int, now: float, max_items: int, max_bytes: int,
                      max_wait_s: float) -> DeliveryRow | None:
        """The connector's next delivery, or None (nothing due): its oldest pending delivery when due
        (none behind it goes first: order is kept), else a new one grouped from the oldest items when
        there are `max_items`, `max_bytes`, or the oldest waited `max_wait_s`."""
        d, i = hook_deliveries.c, hook_items.c
        with self._tx() as db:
            head = db.execute(sa.select(hook_deliveries).where(d.connector_id == connector_id, d.state == "pending")
                              .order_by(d.id).limit(1)).first()
            if head is None:
                rows = db.execute(sa.select(i.id, i.body, i.created).where(
                    i.connector_id == connector_id, i.delivery_id.is_(None)).order_by(i.id).limit(max_items)).all()
                if not rows:
                    return None
                take: list[int] = []
                size = 0
                for r in rows:
                    if take and size + len(r.body) > max_bytes:
                        break
                    take.append(int(r.id))
                    size += len(r.body)
                full = len(take) < len(rows) or len(take) == max_items or size >= max_bytes
                if not full and now - float(rows[0].created) < max_wait_s:
                    return None
                did = int(db.execute(hook_deliveries.insert().values(
                    connector_id=connector_id, state="pending", created=now, next_at=now,
                    n_items=len(take))).inserted_primary_key[0])  # type: ignore[index]
                db.execute(hook_items.update().where(i.id.in_(take)).values(delivery_id=did))
                head = db.execute(sa.select(hook_deliveries).where(d.id == did)).first()
            assert head is not None
            if float(head.next_at) > now:
                return None
            bodies = tuple(db.execute(sa.select(i.body).where(i.delivery_id == head.id).order_by(i.id)).scalars())
        return _delivery(head, bodies)

    def delivered(self, delivery_id: int) -> None:
        """The endpoint took the delivery: it and its items go, the connector is well again (its breaker
        closed). Nothing when the delivery is gone (evicted meanwhile: counted then)."""
        i, c = hook_items.c, connectors.c
        with self._tx() as db:
            row = db.execute(sa.select(hook_deliveries).where(hook_deliveries.c.id == delivery_id)).first()
            if row is None:
                return
            n, size = db.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(sa.func.length(i.body)), 0))
                                 .where(i.connector_id == row.connector_id, i.delivery_id == delivery_id)).one()
            db.execute(hook_items.delete().where(i.connector_id == row.connector_id, i.delivery_id == delivery_id))
            db.execute(hook_deliveries.delete().where(hook_deliveries.c.id == delivery_id))
            db.execute(connectors.update().where(c.id == row.connector_id).values(
                failing_since=None, last_error="", delivered=c.delivered + int(row.n_items),
                outbox_items=c.outbox_items - int(n), outbox_bytes=c.outbox_bytes - int(size),
                breaker_failures=0, breaker_until=0.0, breaker_rest=0.0))

    def evict(self, connector_id: int, max_items: int, max_bytes: int, now: float) -> tuple[int, bool]:
        """Past its cap, a connector's oldest items go (dead letters first, being oldest; a delivery
        whole: its group and `webhook-id` stay what they were) until it is within it, counted.

        Returns:
            (items evicted, whether this began an eviction: its `evicting_since` was unset).
        """
        i, c, d = hook_items.c, connectors.c, hook_deliveries.c
        with self._tx() as db:
            row = db.execute(sa.select(c.outbox_items, c.outbox_bytes, c.evicting_since)
                             .where(c.id == connector_id)).first()
            if row is None or (row.outbox_items <= max_items and row.outbox_bytes <= max_bytes):
                return 0, False
            need_n, need_b = int(row.outbox_items) - max_items, int(row.outbox_bytes) - max_bytes
            n = b = 0
            cut, last_delivery, after = 0, None, 0
            deliveries: set[int] = set()
            while n < need_n or b < need_b:
                chunk = db.execute(sa.select(i.id, i.delivery_id, sa.func.length(i.body)).where(
                    i.connector_id == connector_id, i.id > after).order_by(i.id).limit(1000)).all()
                if not chunk:
                    break
                for item_id, delivery_id, size in chunk:
                    if n >= need_n and b >= need_b:
                        break
                    n, b, cut, last_delivery = n + 1, b + int(size), int(item_id), delivery_id
                    if delivery_id is not None:
                        deliveries.add(int(delivery_id))
                after = int(chunk[-1][0])
            if last_delivery is not None:  # a delivery goes whole
                cut = max(cut, int(db.execute(sa.select(sa.func.max(i.id)).where(
                    i.connector_id == connector_id, i.delivery_id == last_delivery)).scalar() or cut))
            which = sa.and_(i.connector_id == connector_id, i.id <= cut)
            n, b = (int(x) for x in db.execute(sa.select(
                sa.func.count(), sa.func.coalesce(sa.func.sum(sa.func.length(i.body)), 0)).where(which)).one())
            if deliveries:
                db.execute(hook_deliveries.delete().where(d.connector_id == connector_id, d.id.in_(deliveries)))
            db.execute(hook_items.delete().where(which))
            db.execute(connectors.update().where(c.id == connector_id).values(
                outbox_items=c.outbox_items - n, outbox_bytes=c.outbox_bytes - b, evicted=c.evicted + n,
                evicting_since=sa.func.coalesce(c.evicting_since, now)))
        return n, row.evicting_since is None

    def evicting_over(self, connector_id: int) -> bool:
        """The outbox is back under half its cap: the eviction is over; False when it was not on."""
        c = connectors.c
        with self._tx() as db:
            return db.execute(connectors.update().where(c.id == connector_id, c.evicting_since.is_not(None))
                              .values(evicting_since=None)).rowcount == 1

    def delivery_failed(self, delivery_id: int, error: str, next_at: float, *, dead: bool, now: float,
                        breaker: tuple[int, float, float] | None = None) -> None:
        """An attempt failed: tried again at `next_at`, or a dead letter; the connector is failing (its
        circuit breaker, when given, kept as it now is)."""
        with self._tx() as db:
            row = db.execute(sa.select(hook_deliveries).where(hook_deliveries.c.id == delivery_id)).first()
            if row is None:
                return
            db.execute(hook_deliveries.update().where(hook_deliveries.c.id == delivery_id).values(
                attempts=hook_deliveries.c.attempts + 1, next_at=next_at, last_error=error[:500],
                state="dead" if dead else "pending"))
            kept = {} if breaker is None else {"breaker_failures": breaker[0], "breaker_until": breaker[1],
                                               "breaker_rest": breaker[2]}
            db.execute(connectors.update().where(connectors.c.id == row.connector_id).values(
                failing_since=sa.func.coalesce(connectors.c.failing_since, now), last_error=error[:500], **kept))

    def deliveries(self, connector_id: int, state: str, after: int = 0, limit: int = 100) -> list[DeliveryRow]:
        d = hook_deliveries.c
        with self._read() as db:
            return [_delivery(r) for r in db.execute(sa.select(hook_deliveries).where(
                d.connector_id == connector_id, d.state == state, d.id > after).order_by(d.id).limit(limit))]

    def replay(self, connector_id: int, delivery_ids: Sequence[int] | None, now: float) -> int:
        """Dead letters tried again (all of the connector's with None), from their first attempt."""
        d = hook_deliveries.c
        cond = sa.and_(d.connector_id == connector_id, d.state == "dead")
        if delivery_ids is not None:
            cond = sa.and_(cond, d.id.in_(list(delivery_ids)))
        with self._tx() as db:
            return int(db.execute(hook_deliveries.update().where(cond).values(
                state="pending", attempts=0, next_at=now, created=now, last_error="")).rowcount)

    def outbox_depth(self, connector_id: int) -> dict[str, object]:
        """Items waiting (not grouped, or in a pending delivery), dead letters, the bytes they hold,
        and the items the cap evicted (ever, and since when it is evicting)."""
        c, d = connectors.c, hook_deliveries.c
        dead = (sa.select(sa.func.coalesce(sa.func.sum(d.n_items), 0))
                .where(d.connector_id == connector_id, d.state == "dead").scalar_subquery())
        with self._read() as db:  # one statement: the counters and the dead letters as of one moment
            row = db.execute(sa.select(c.outbox_items, c.outbox_bytes, c.evicted, c.evicting_since,
                                       dead.label("dead")).where(c.id == connector_id)).first()
        if row is None:
            return {"waiting": 0, "dead": 0, "bytes": 0, "evicted": 0, "evicting_since": None}
        return {"waiting": int(row.outbox_items) - int(row.dead), "dead": int(row.dead),
                "bytes": int(row.outbox_bytes), "evicted": int(row.evicted), "evicting_since": row.evicting_since}


def _delivery(r: AnyRow, bodies: tuple[str, ...] = ()) -> DeliveryRow:
    return DeliveryRow(int(r.id), int(r.connector_id), r.state, float(r.created), int(r.attempts),
                       float(r.next_at), r.last_error, int(r.n_items), bodies)
