"""The MQTT connectors' worker: the feed into each connector's durable queue, and one thread per
connector holding its connection to the customer's broker.

`MqttWorker` owns a supervising thread: every `TICK_S` it turns new feed rows into each enabled
MQTT connector's messages (`_fanout`: only the Boxes its service account may read,
`box.data.read`, and the points its filter takes; the queue kept under its byte cap, evictions
counted and alerted) and makes sure each such connector has its thread (`Link`, at most
`MAX_LINKS`). A link's thread is the only one that talks to its broker, so a slow or dead broker
holds only its own thread (the receiver only appends to the feed, in its own transaction).
Secrets are opened only in the link's thread, in memory, never logged.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Callable
from pathlib import Path

from cloud._background import Background
from cloud.api._authz import grants
from cloud.api._secrets import Seeds
from cloud.errors import StoreError
from cloud.hooks import targets
from cloud.mqttconn import messages
from cloud.mqttconn._link_thread import Backoff, Link, SendCommand
from cloud.mqttconn.errors import HookError
from cloud.mqttconn.link import PUBLIC_ONLY, SYSTEM_CA
from cloud.store import ConnectorRow, FeedRow, Store
from proto import wire
from proto.errors import WireError

log = logging.getLogger("boxcloud.mqttconn")

TICK_S = 0.25
FEED_CHUNK = 200
MAX_LINKS = 256  # connections to customers' brokers held by one platform (a thread each)
DEFAULT_BACKOFF = Backoff()
DEFAULT_CAP = 64 * 1024 * 1024


class MqttWorker(Background):
    """The MQTT connectors' feed and links. The constructor does no I/O.

    `send`: queues a command for a Box (the platform's `send_command`, the path of `cmd write`).
    `ca_file`: the trust anchors for a broker whose connector gives no CA (the system's).
    `reach`: where brokers may be (public addresses on 8883 and 8884; the operator's settings
    `mqtt_allow_networks`, `mqtt_ports` may add private networks and ports), checked at every connection.
    `resolver`: a test passes its own resolver and namespace (`prepare` runs first in every thread of
    the worker)."""

    def __init__(self, store: Store, seeds: Seeds, send: SendCommand, *, ca_file: Path = SYSTEM_CA,
                 resolver: targets.Resolver = targets.system_resolver, reach: targets.Reach = PUBLIC_ONLY,
                 backoff: Backoff = DEFAULT_BACKOFF, prepare: Callable[[], None] | None = None,
                 rnd: Callable[[], float] = random.random) -> None:
        self.store, self.seeds, self.send = store, seeds, send
        self.ca_file, self.resolver, self.reach, self.backoff = ca_file, resolver, reach, backoff
        self.prepare, self.rnd = prepare, rnd
        super().__init__()
        self.links: dict[int, Link] = {}

    def start(self) -> None:
        self._spawn(self.run, "mqtt-connectors")

    def run(self) -> None:
        """The supervising loop, until `stop()`; the links' threads end with it."""
        if self.prepare is not None:
            self.prepare()
        try:
            while not self._stop.is_set():
                try:
                    rows = self._fanout()
                except (HookError, StoreError) as e:  # the database unwell: said, and tried again next tick
                    log.error("MQTT connectors: %s", e)
                    rows = []
                self._supervise(rows)
                self._stop.wait(TICK_S)
        finally:
            for link in self.links.values():
                link.stop()
            for link in self.links.values():
                link.join()
            self.links.clear()

    def _supervise(self, rows: list[ConnectorRow]) -> None:
        live = {r.id for r in rows if r.state == "enabled"}
        for cid in [c for c, link in self.links.items() if c not in live or not link.alive()]:
            link = self.links.pop(cid)
            link.stop()
            link.join()
        for r in rows:
            if r.id in live and r.id not in self.links:
                if len(self.links) >= MAX_LINKS:
                    self.store.mqtt_link(r.id, "down", f"this platform holds at most {MAX_LINKS} MQTT connections: "
                                         "ask the operator")
                    continue
                link = Link(self, r.id)
                self.links[r.id] = link
                link.start()

    # -- the feed --------------------------------------------------------------------------------

    def _fanout(self) -> list[ConnectorRow]:
        """New feed rows into each enabled MQTT connector's queue; every MQTT connector, as read."""
        st = self.store
        rows = [r for r in st.connectors() if r.kind == "mqtt"]
        for row in rows:
            if row.state != "enabled":
                continue
            pos, cap = row.feed_pos, int(row.config.get("queue_bytes", DEFAULT_CAP))  # type: ignore[call-overload]
            for _ in range(50):  # at most 10,000 batches a pass a connector
                chunk = st.feed_after(pos, FEED_CHUNK)
                if not chunk:
                    break
                ok, evicted = st.mqtt_queue(row.id, pos, chunk[-1].id, self._messages(row, chunk), cap)
                if not ok:
                    break  # deleted or changed meanwhile: read again at the next pass
                if evicted:
                    self._evicted(row, evicted, cap)
                pos = chunk[-1].id
        if rows:  # (the webhooks' worker trims it too; with no MQTT connector, no write here)
            st.trim_feed()
        return rows

    def _messages(self, row: ConnectorRow, chunk: list[FeedRow]) -> list[tuple[str, bytes]]:
        st = self.store
        user = st.user(row.service_account_id)
        if user is None or user.account_id != row.account_id:
            return []
        scope = grants(row.account_id, st.bindings(row.account_id, user.id),
                       st.custom_roles(row.account_id)).scope("box.data.read")
        lv = messages.levels(str(row.config["data_topic"]), str(row.config.get("prefix", "")))
        points = [str(p) for p in row.config.get("points", [])]  # type: ignore[attr-defined]
        reach: dict[str, bool] = {}
        out: list[tuple[str, bytes]] = []
        for f in chunk:
            if f.box_id not in reach:
                reach[f.box_id] = st.in_scope(scope, f.box_id)
            table = st.table(f.box_id, f.table_id) if reach[f.box_id] else None
            if table is None:
                continue
            try:
                batch = dataclasses.replace(wire.decode_batch(f.payload), base_ts_ms=f.base_ts_ms)
                out += messages.data(lv, f.box_id, batch, table, points)
            except WireError as e:  # stored already, so this is not expected: logged, skipped
                log.error("connector %d: a stored batch of %s cannot be read again: %s", row.id, f.box_id, e)
        return out

    def _evicted(self, row: ConnectorRow, n: int, cap: int) -> None:
        state = self.store.mqtt_state(row.id)
        total = state.evicted if state else n
        why = (f"connector {row.name!r}: its queue reached its cap ({cap} bytes) while the broker did not take "
               f"messages; {total} messages dropped so far, oldest first")
        self.store.open_alert(f"connector:{row.id}", "connector", row.name, why[:500], refresh=True)
        log.warning("connector %d: %d messages evicted at the queue's cap (%d in all)", row.id, n, total)
