"""The webhooks' worker: the feed into each connector's outbox, and each endpoint's deliveries.

One thread, one asyncio loop (`HookWorker.run`), owned by the platform (`cloud.platform`). Each
pass (every `TICK_S`) turns new feed rows into items (`_fanout`: only the Boxes the connector's
service account may read, `box.data.read`, and the points its filter takes) and makes sure each
connector has its task. A connector's task is its endpoint's only sender: one delivery in flight
at a time, oldest first (order per Box is kept), so a slow or dead endpoint delays nobody else
(the others' tasks go on; the store is reached through threads, an HTTP wait costs no thread).
A connector in state ``confirming`` is sent the confirmation request first; one that has taken
nothing for days is disabled with an alert (`cloud.hooks.policy`). Secrets are opened only here,
in memory, never logged.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import random
import secrets as pysecrets
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cloud._background import Background
from cloud.api._authz import grants
from cloud.api._secrets import Seeds
from cloud.errors import StoreError
from cloud.hooks import items, policy, targets
from cloud.hooks.client import Answer, PinnedClient, TokenSource
from cloud.hooks.errors import DeliveryError, HookError, TargetRefusedError
from cloud.store import ConnectorRow, DeliveryRow, FeedRow, Store
from proto import wire
from proto.errors import WireError
from trust import tls

log = logging.getLogger("boxcloud.hooks")
logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per delivery (ours say what failed)

SYSTEM_CA = Path("/etc/ssl/certs/ca-certificates.crt")
TICK_S = 0.25
FEED_CHUNK = 200


@dataclass(frozen=True)
class Limits:
    """How items are grouped into a delivery, and how many deliveries are in flight in all."""

    max_items: int = 500
    max_bytes: int = 256 * 1024  # a delivery holds at least one item, whatever its size
    max_wait_s: float = 1.0  # an item waits at most this for others to join it
    in_flight: int = 64  # deliveries in flight over every endpoint (one per endpoint at most)
    outbox_items: int = 1_000_000  # each connector's outbox cap: past it, its oldest items are evicted
    outbox_bytes: int = 256 << 20


@dataclass
class _Endpoint:
    """What a connector's task keeps between deliveries (rebuilt when its configuration changes)."""

    version: tuple[str, str]
    client: PinnedClient
    tokens: TokenSource | None
    opened: dict[str, object]
    breaker: policy.Breaker = field(default_factory=policy.Breaker)
    turns: int = 0  # the task's passes over this endpoint (what a test waits on to see one made)


class HookWorker(Background):
    """The connectors' feed and deliveries. The constructor does no I/O.

    `ca_file`: the trust anchors for customers' endpoints (the system's; a test passes its own CA);
    `extra_ca`: more of them (the operator's setting `webhook_ca_file`: a private CA).
    `resolver`: the name resolver (the system's; a test passes its own to play a DNS rebinding).
    `reach`: where endpoints may be (public addresses; the operator's settings may add networks)."""

    def __init__(self, store: Store, seeds: Seeds, *, ca_file: Path = SYSTEM_CA, extra_ca: Path | None = None,
                 resolver: targets.Resolver = targets.system_resolver, reach: targets.Reach = targets.PUBLIC_ONLY,
                 limits: Limits = Limits(), clock: Callable[[], float] = time.time,
                 rnd: Callable[[], float] = random.random) -> None:
        self.store, self.seeds, self.ca_file, self.extra_ca = store, seeds, ca_file, extra_ca
        self.resolver, self.reach, self.limits = resolver, reach, limits
        self.clock, self.rnd = clock, rnd
        super().__init__()
        self._ctx: ssl.SSLContext | None = None
        self.endpoints: dict[int, _Endpoint] = {}

    def start(self, prepare: Callable[[], None] | None = None) -> None:
        """Run in a thread of its own (`prepare` first, in it: a test enters a network namespace)."""
        def thread() -> None:
            if prepare is not None:
                prepare()
            self.run()

        self._spawn(thread, "hooks")

    def run(self) -> None:
        """The worker's loop, until `stop()` (blocks: `start()` runs it in a thread of its own)."""
        try:
            self._ctx = tls.client_context(self.ca_file)
            if self.extra_ca is not None:
                self._ctx.load_verify_locations(cafile=str(self.extra_ca))
        except (OSError, ssl.SSLError) as e:  # the operator's to fix: said once, loudly
            log.error("webhooks cannot run: the trust anchors %s cannot be read (%s); nothing is lost, the "
                      "connectors' outboxes wait (install ca-certificates, mend the settings, restart)",
                      " and ".join(str(p) for p in (self.ca_file, self.extra_ca) if p), e)
            return
        asyncio.run(self._main())

    async def _main(self) -> None:
        tasks: dict[int, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(self.limits.in_flight)
        try:
            while not self._stop.is_set():
                try:
                    rows = await asyncio.to_thread(self._fanout)
                except (HookError, StoreError) as e:  # the database unwell: said, and tried again next tick
                    log.error("webhooks: %s", e)
                    rows = []
                for row in rows:
                    task = tasks.get(row.id)
                    if task is None or task.done():
                        tasks[row.id] = asyncio.create_task(self._endpoint(row.id), name=f"hook:{row.id}")
                await asyncio.sleep(TICK_S)
        finally:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            for ep in self.endpoints.values():
                await ep.client.aclose()

    # -- the feed --------------------------------------------------------------------------------

    def _fanout(self) -> list[ConnectorRow]:
        """New feed rows into each connector's outbox; every connector, as read."""
        st = self.store
        rows = [r for r in st.connectors() if r.kind == "webhook"]
        for row in rows:
            pos, total = row.feed_pos, 0
            for _ in range(50):  # at most 10,000 batches a pass a connector
                chunk = st.feed_after(pos, FEED_CHUNK)
                if not chunk:
                    break
                queued = self._items(row, chunk) if row.state in ("enabled", "disabled") else []
                if not st.queue_items(row.id, (pos, row.state), chunk[-1].id, queued):
                    break  # deleted, moved or confirmed meanwhile: read again at the next pass
                pos, total = chunk[-1].id, total + len(queued)
            self._cap(row, total > 0)
        st.trim_feed()
        return rows

    def _cap(self, row: ConnectorRow, queued: bool) -> None:
        """Keep the connector's outbox within its cap: the oldest items evicted, counted, alerted (the
        alert closed once the outbox is back under half its cap)."""
        lim, st = self.limits, self.store
        if queued:
            n, began = st.evict(row.id, lim.outbox_items, lim.outbox_bytes, self.clock())
            if n:
                log.warning("connector %d (%s): its outbox is past its cap (%d items, %d MiB): %d oldest items "
                            "evicted", row.id, row.state, lim.outbox_items, lim.outbox_bytes >> 20, n)
            if began:
                st.open_alert(f"connector:{row.id}", "connector.outbox", row.name,
                              f"connector {row.name!r} ({row.state}): its outbox reached its cap; its oldest "
                              f"items are being evicted (counted in GET /v1/connectors/{row.id})"[:500])
        elif (row.evicting_since is not None and row.outbox_items <= lim.outbox_items // 2
              and row.outbox_bytes <= lim.outbox_bytes // 2 and st.evicting_over(row.id)):
            st.close_alert(f"connector:{row.id}", "connector.outbox")

    def _items(self, row: ConnectorRow, chunk: list[FeedRow]) -> list[tuple[str, str]]:
        st = self.store
        user = st.user(row.service_account_id)
        if user is None or user.account_id != row.account_id:
            return []
        g = grants(row.account_id, st.bindings(row.account_id, user.id), st.custom_roles(row.account_id))
        scope = g.scope("box.data.read")
        points = _strings(row.config.get("points"))
        reach: dict[str, bool] = {}
        out = []
        for f in chunk:
            box = f.box_id
            if box not in reach:
                reach[box] = st.in_scope(scope, box)
            if not reach[box]:
                continue
            table = st.table(box, f.table_id)
            if table is None:
                continue
            try:
                batch = dataclasses.replace(wire.decode_batch(f.payload), base_ts_ms=f.base_ts_ms)
                it = items.item(box, batch, table, points)
            except WireError as e:  # stored already, so this is not expected: logged, skipped
                log.error("connector %d: a stored batch of %s cannot be read again: %s", row.id, box, e)
                continue
            if it is not None:
                out.append(it)
        return out

    # -- one endpoint ----------------------------------------------------------------------------

    async def _endpoint(self, cid: int) -> None:
        """A connector's task: its deliveries one at a time, oldest first."""
        while not self._stop.is_set():
            row = await asyncio.to_thread(self.store.connector, cid)
            if row is None:
                ep = self.endpoints.pop(cid, None)
                if ep is not None:
                    await ep.client.aclose()
                return
            try:
                ep = self._endpoint_of(row)
                if row.state == "confirming":
                    await self._confirm(ep, row)
                    continue
                if row.state != "enabled" or not await self._one(ep, row):
                    await asyncio.sleep(TICK_S)
            except (HookError, ValueError) as e:  # a configuration that cannot be used: said in its state
                await asyncio.to_thread(self.store.update_connector, cid, last_error=str(e)[:500])
                await asyncio.sleep(TICK_S * 4)
            except Exception:  # the task's top: logged, and the loop goes on
                log.exception("connector %d: unexpected failure", cid)
                await asyncio.sleep(TICK_S * 4)

    def _endpoint_of(self, row: ConnectorRow) -> _Endpoint:
        version = (json.dumps(row.config, sort_keys=True), row.secrets)
        ep = self.endpoints.get(row.id)
        if ep is not None and ep.version == version:
            return ep
        opened = json.loads(self.seeds.open(row.secrets) or "{}")
        assert self._ctx is not None
        client = PinnedClient(str(row.config["url"]), self._ctx, reach=self.reach, resolver=self.resolver)
        tokens = None
        if row.config.get("auth") == "oauth":
            token_client = PinnedClient(str(row.config["token_url"]), self._ctx, reach=self.reach,
                                        resolver=self.resolver)
            tokens = TokenSource(token_client, str(row.config["client_id"]), str(opened.get("client_secret", "")),
                                 str(row.config.get("scope", "")), clock=self.clock)
        ep = _Endpoint(version, client, tokens, opened, ep.breaker if ep else policy.Breaker.restored(row.breaker))
        self.endpoints[row.id] = ep
        return ep

    async def _one(self, ep: _Endpoint, row: ConnectorRow) -> bool:
        """Send the connector's next delivery if one is due; False when there was nothing to do."""
        ep.turns += 1
        now = self.clock()
        if policy.disable_due(row.failing_since, now):
            await asyncio.to_thread(self._disable, row)
            return False
        if not ep.breaker.allows(now):
            return False
        lim = self.limits
        d = await asyncio.to_thread(self.store.next_delivery, row.id, now, lim.max_items, lim.max_bytes,
                                    lim.max_wait_s)
        if d is None:
            return False
        signing_secrets = self._keys(ep)
        raw = items.body(row.id, d.bodies, signing_secrets[0])
        try:
            status = (await self._post(ep, row, items.message_id(row.id, d.bodies), raw, signing_secrets)).status
            if not 200 <= status < 300:
                raise DeliveryError(f"the endpoint answered {status}"
                                    + (" (a redirect: not followed)" if 300 <= status < 400 else ""), status=status)
        except (DeliveryError, TargetRefusedError) as e:
            await asyncio.to_thread(self._failed, ep, d, str(e))
            return True
        ep.breaker.success()
        await asyncio.to_thread(self.store.delivered, d.id)
        return True

    async def _post(self, ep: _Endpoint, row: ConnectorRow, msg_id: str, raw: bytes, keys: list[str]) -> Answer:
        """One attempt, with the connector's authentication (a 401 with OAuth: once more with a new token)."""
        for attempt in (1, 2):
            headers = items.headers(msg_id, raw, keys, self.clock())
            token = None
            if row.config.get("auth") == "basic":
                pair = f"{row.config.get('username', '')}:{ep.opened.get('password', '')}".encode()
                headers["authorization"] = "Basic " + base64.b64encode(pair).decode()
            elif ep.tokens is not None:
                token = await ep.tokens.token()
                headers["authorization"] = f"Bearer {token}"
            async with self._slots:
                answer = await ep.client.post(raw, headers)
            if answer.status == 401 and token is not None and attempt == 1 and ep.tokens is not None:
                ep.tokens.drop(token)
                continue
            return answer
        raise AssertionError("unreachable")

    def _keys(self, ep: _Endpoint) -> list[str]:
        """The signing secrets: the current one, and the previous one for a day after a rotation."""
        keys = _strings(ep.opened.get("signing"))
        until = ep.opened.get("old_until", 0)
        if not keys:
            raise HookError("the connector has no signing secret")
        return keys if isinstance(until, int | float) and self.clock() < until else keys[:1]

    def _failed(self, ep: _Endpoint, d: DeliveryRow, why: str) -> None:
        now = self.clock()
        ep.breaker.failure(now)
        dead = policy.gives_up(d.created, now)
        wait = policy.retry_delay(d.attempts + 1, self.rnd)
        self.store.delivery_failed(d.id, why, now + wait, dead=dead, now=now, breaker=ep.breaker.saved())
        log.warning("connector %d: delivery %d failed (%s); %s", d.connector_id, d.id, why,
                    "a dead letter now" if dead else f"tried again in {wait:.0f} s")

    def _disable(self, row: ConnectorRow) -> None:
        if not self.store.update_connector(row.id, expect_state="enabled", state="disabled"):
            return
        since = time.strftime("%Y-%m-%d %H:%M", time.gmtime(row.failing_since or 0))
        why = f"its endpoint has taken nothing since {since} UTC: {row.last_error}"
        self.store.audit(row.account_id, "platform", "connector.disable", f"connector:{row.id}", reason=why[:300])
        self.store.open_alert(f"connector:{row.id}", "connector", row.name,
                              f"connector {row.name!r} disabled: {why}"[:500])
        log.error("connector %d disabled: %s", row.id, why)

    async def _confirm(self, ep: _Endpoint, row: ConnectorRow) -> None:
        """The ownership check: the endpoint must answer the confirmation request with its token."""
        token = pysecrets.token_urlsafe(24)
        raw = json.dumps({"type": "endpoint.confirm", "connector": row.id, "token": token}).encode()
        keys = self._keys(ep)
        try:
            answer = await self._post(ep, row, f"confirm_{row.id}_{token[:8]}", raw, keys)
            ok = 200 <= answer.status < 300
            why = "" if ok else f"the endpoint answered {answer.status}"
            if ok and not _echoes(answer.body, token):
                ok, why = False, "the endpoint's answer does not hold the confirmation token"
        except (DeliveryError, TargetRefusedError) as e:
            ok, why = False, str(e)
        if ok:
            changed = await asyncio.to_thread(self.store.enable_connector, row.id, expect_state="confirming")
            if changed:  # it answered: its breaker closed, a disabled one's alert over
                ep.breaker.success()
                await asyncio.to_thread(self.store.close_alert, f"connector:{row.id}", "connector")
        else:
            changed = await asyncio.to_thread(self.store.update_connector, row.id, expect_state="confirming",
                                              state="unconfirmed", last_error=why[:500])
        if changed:
            await asyncio.to_thread(self.store.audit, row.account_id, "platform", "connector.confirm",
                                    f"connector:{row.id}", "ok" if ok else "failed", **({"reason": why} if why else {}))


def _strings(v: object) -> list[str]:
    return [str(x) for x in v] if isinstance(v, list) else []


def _echoes(body: bytes, token: str) -> bool:
    try:
        doc = json.loads(body)
    except ValueError:
        return body.strip() == token.encode()
    return isinstance(doc, dict) and doc.get("token") == token
