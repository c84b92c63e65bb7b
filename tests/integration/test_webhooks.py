"""Webhooks end to end on real parts: the users' API (HTTPS), batches stored by the receiver's own
path, the platform's worker in a network namespace delivering over HTTPS to a customer's receiver
(``tests.support.hookrecv``, its own certificate from a test CA the worker is told to trust, on a
public-looking address in another namespace) that verifies both signature schemes.

Time is compressed with a clock of the test's own (`Clock`: the worker's retry schedule, breaker,
giving up and disabling read it); the receiver's token lifetimes run on real time. The resolver is
the test's (`tests.support.hookkit.Dns`), to play a DNS rebinding.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import pytest
import requests

from cloud.api import operator
from cloud.hooks import policy
from cloud.receiver import Receiver
from tests.support import netns
from tests.support.apikit import PASSWORD, Api, add_box, serving
from tests.support.hookkit import HOST, PUBLIC, Rig, rig, store_batches
from tests.support.wait import wait_for

pytestmark = pytest.mark.skipif(netns.available() is not None, reason=str(netns.available()))
_seq = count(1000)


class Clock:
    """Real time plus an offset the test moves (an outage of a day in a second)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class Env:
    api: Api
    rig: Rig
    owner: requests.Session
    sa_id: int
    recv: Receiver
    clock: Clock
    home: Path
    since: dict[int, int] = field(default_factory=dict)

    def connector(self, **body: Any) -> dict[str, Any]:
        doc = {"name": f"c{next(_seq)}", "service_account_id": self.sa_id, "url": f"https://{HOST}/hook", **body}
        r = self.owner.post(self.api.url + "/v1/connectors", json=doc)
        assert r.status_code == 201, r.text
        out: dict[str, Any] = r.json()
        self.rig.receiver.command(f"secrets {out['signing_secret']}")
        self.since[out["id"]] = len(self.rig.receiver.entries())  # ids of deleted connectors come again
        return out

    def state(self, cid: int) -> dict[str, Any]:
        r = self.owner.get(f"{self.api.url}/v1/connectors/{cid}")
        assert r.ok, r.text
        return dict(r.json())

    def confirm(self, cid: int, expect: str = "enabled") -> dict[str, Any]:
        assert self.owner.post(f"{self.api.url}/v1/connectors/{cid}/confirm").status_code == 202
        return wait_for(lambda: (s := self.state(cid))["state"] == expect and s, what=f"connector {cid} {expect}")

    def got(self, cid: int) -> list[dict[str, Any]]:
        return [e for e in self.rig.receiver.entries()[self.since[cid]:] if e.get("connector") == cid]

    def items(self, cid: int) -> list[list[Any]]:
        return [i for e in self.got(cid) if e["status"] == 200 for i in e["items"]]

    def delivered(self, cid: int, ids: list[str]) -> None:
        wait_for(lambda: {i[0] for i in self.items(cid)} >= set(ids), what=f"{len(ids)} items delivered", timeout=30)

    def batches(self, box: str, n: int) -> list[str]:
        first = next(_seq)
        for _ in range(n):
            next(_seq)
        store_batches(self.recv, box, range(first, first + n))
        return [f"{box}/7/{s}" for s in range(first, first + n)]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    home = tmp_path_factory.mktemp("hooks")
    with serving(home) as api, rig(home) as r:
        st = api.cloud.store
        acme, _ = operator.create_account(st, "acme", "owner@acme", PASSWORD)
        for b in ("BOX-A", "BOX-B"):
            add_box(api.cloud, b, "acme")
        sa = st.add_user(acme.id, "hooks@acme", "service", None)
        st.bind(acme.id, sa, "viewer", "box", "BOX-A")  # the connector reads BOX-A only
        clock = Clock()
        recv = Receiver(api.cloud.pki, st, "localhost", 1)  # its `handle` only: no broker here
        e = Env(api, r, api.session("owner@acme"), sa, recv, clock, home)
        r.start_worker(st, home, clock)
        yield e


@pytest.fixture(autouse=True)
def _receiver_reset(env: Env) -> Iterator[None]:
    yield
    for line in ("mode ok", "basic", "bearer off"):
        env.rig.receiver.command(line)


def test_a_confirmed_endpoint_gets_the_batches_of_its_boxes_and_points_signed_once_in_order(env: Env) -> None:
    c = env.connector(auth="basic", username="platform", password="s3cret-basic-pw", points=["ahu1.temp", "ahu1.fan"])
    env.rig.receiver.command("basic platform s3cret-basic-pw")
    before = env.batches("BOX-A", 3)  # stored before the endpoint proved it is its owner's: not sent
    env.confirm(c["id"])
    sent = env.batches("BOX-A", 30)
    env.batches("BOX-B", 10)  # out of the service account's reach
    wait_for(lambda: len(env.items(c["id"])) >= 30, what="30 items delivered", timeout=30)
    entries = [e for e in env.got(c["id"]) if e["type"] == "data"]
    assert all(e["sig_ok"] and e["auth"] for e in entries), entries
    items = env.items(c["id"])
    assert [i[0] for i in items] == sent  # every batch, in order, once; none before the confirmation
    assert not set(before) & {i[0] for i in items}
    assert all(i[1] for i in items), "an item's hmac did not verify"
    assert {s[0] for i in items for s in i[2]["samples"]} == {"ahu1.temp", "ahu1.fan"}  # the point filter
    assert len(entries) < 30  # grouped: items per delivery
    trail = env.owner.get(env.api.url + "/v1/audit", params={"limit": 1000}).json()["items"]
    assert {"connector.create", "connector.confirm"} <= {a["action"] for a in trail}
    env.owner.delete(f"{env.api.url}/v1/connectors/{c['id']}")


@pytest.mark.parametrize("mode", ["noecho", "bigecho"])
def test_an_endpoint_that_does_not_answer_its_token_in_the_first_4_kib_stays_unconfirmed(env: Env, mode: str) -> None:
    c = env.connector()
    env.rig.receiver.command(f"mode {mode}")
    state = env.confirm(c["id"], expect="unconfirmed")
    assert "does not hold the confirmation token" in state["last_error"]
    env.batches("BOX-A", 2)
    assert env.items(c["id"]) == []
    env.owner.delete(f"{env.api.url}/v1/connectors/{c['id']}")


def _failed(env: Env, cid: int, n: int) -> None:
    """Wait until the endpoint has answered `n` attempts 503 and the platform has recorded the n-th (its
    breaker counts n): only then may a test move the platform's clock, which the worker reads after the
    answer to date the failure (moved before, a retry's wait or a day of failures is counted from the
    time after the move: stop 28 saw the fourth failure given up as a day's)."""
    wait_for(lambda: len([e for e in env.got(cid) if e["status"] == 503]) >= n
             and env.state(cid)["breaker"]["failures"] >= n, what=f"failure {n} recorded", timeout=30)


def test_an_outage_and_a_restart_mid_delivery_lose_nothing_and_repeat_only_what_the_id_drops(env: Env) -> None:
    c = env.connector()
    env.confirm(c["id"])
    env.rig.receiver.command("mode fail")
    sent = env.batches("BOX-A", 40)
    for n in (1, 2, 3):  # three failed attempts, each retry's wait skipped with the clock
        _failed(env, c["id"], n)
        env.clock.offset += 7200
    env.rig.receiver.command("mode hang")
    env.clock.offset += 7200  # past every backoff so far
    wait_for(lambda: any(e["status"] == "hung" for e in env.got(c["id"])), what="a delivery under way", timeout=30)
    env.rig.stop_workers()  # the platform stops while the endpoint holds a delivery: no answer was seen
    env.rig.receiver.command("mode ok")
    env.clock.offset += 7200
    env.rig.start_worker(env.api.cloud.store, env.home, env.clock)
    wait_for(lambda: {i[0] for i in env.items(c["id"])} >= set(sent), what="everything delivered", timeout=30)
    first_id: dict[str, str] = {}
    repeated = 0
    for e in env.got(c["id"]):
        for item in e["items"]:
            if e["status"] == 200 and item[0] in first_id:
                repeated += 1
                assert first_id[item[0]] == e["id"], "an item came again under another webhook-id"
            first_id.setdefault(item[0], e["id"])
    delivered = [i[0] for i in env.items(c["id"])]
    unique = list(dict.fromkeys(delivered))
    assert unique == sent  # none lost, in order
    print(f"outage: sent {len(sent)}, delivered {len(unique)}, repeated {repeated} (same webhook-id)")
    env.owner.delete(f"{env.api.url}/v1/connectors/{c['id']}")


def test_oauth_tokens_are_cached_refreshed_before_expiry_and_fetched_again_once_on_401(env: Env) -> None:
    env.rig.receiver.command("bearer on")
    env.rig.receiver.command("token_life 40")
    c = env.connector(auth="oauth", token_url="https://tokens.customer.example/token", client_id="platform",
                      client_secret="oauth-client-secret")
    def fetches() -> int:
        return int(json.loads(env.rig.receiver.command("stats"))["fetches"])

    f0 = fetches()
    env.confirm(c["id"])
    for _ in range(2):
        sent = env.batches("BOX-A", 1)
        env.delivered(c["id"], sent)
    assert fetches() == f0 + 1  # cached
    env.clock.offset += 15  # less than 30 s of the token's 40 left: fetched again before it expires
    sent = env.batches("BOX-A", 1)
    env.delivered(c["id"], sent)
    assert fetches() == f0 + 2
    env.rig.receiver.command("revoke")  # the endpoint refuses the token: one more fetch, one retry
    sent = env.batches("BOX-A", 1)
    env.delivered(c["id"], sent)
    assert fetches() == f0 + 3
    assert [e["status"] for e in env.got(c["id"])].count(401) == 1
    assert env.state(c["id"])["last_error"] == ""
    env.owner.delete(f"{env.api.url}/v1/connectors/{c['id']}")


def test_the_address_is_pinned_across_a_dns_rebinding_and_names_of_private_addresses_are_refused(env: Env) -> None:
    env.rig.dns.table["rebind.customer.example"] = [[PUBLIC], ["127.0.0.1"]]
    env.rig.dns.table["inside.customer.example"] = [["10.0.0.5"]]
    c = env.connector(url="https://rebind.customer.example/hook")
    bad = env.connector(url="https://inside.customer.example/hook")
    env.confirm(c["id"])
    sent = env.batches("BOX-A", 5)
    wait_for(lambda: {i[0] for i in env.items(c["id"])} >= set(sent), what="delivered", timeout=30)
    assert env.rig.dns.asked.count("rebind.customer.example") == 1  # checked once, connected to that address
    state = env.confirm(bad["id"], expect="unconfirmed")
    assert "resolves to 10.0.0.5, which is private" in state["last_error"]
    assert env.got(bad["id"]) == []
    for cid in (c["id"], bad["id"]):
        env.owner.delete(f"{env.api.url}/v1/connectors/{cid}")


def test_an_endpoint_that_hangs_delays_no_other(env: Env) -> None:
    slow = env.connector(url=f"https://{HOST}/slow")
    fast = env.connector()
    env.confirm(slow["id"])
    env.confirm(fast["id"])
    for _ in range(3):
        sent = env.batches("BOX-A", 5)
        env.delivered(fast["id"], sent)
    # all of it while the slow endpoint still holds its first delivery (not timed out: no error yet)
    assert [e["status"] for e in env.got(slow["id"]) if e["type"] == "data"] == ["hung"]
    assert env.state(slow["id"])["last_error"] == ""
    for c in (slow, fast):
        env.owner.delete(f"{env.api.url}/v1/connectors/{c['id']}")


@pytest.mark.parametrize(("url", "why"), [
    ("http://hooks.customer.example/hook", "only https"),
    ("https://hooks.customer.example:8080/hook", "port 8080 is not allowed"),
    ("https://127.0.0.1/hook", "loopback"),
    ("https://169.254.169.254/latest/meta-data", "link-local"),
    ("https://2130706433/hook", "oddly"),
    ("https://[::ffff:127.0.0.1]/hook", "IPv4-mapped"),
    ("https://user:pw@hooks.customer.example/hook", "no credentials in the URL"),
])
def test_the_api_refuses_an_endpoint_the_platform_never_sends_to(env: Env, url: str, why: str) -> None:
    r = env.owner.post(env.api.url + "/v1/connectors", json={"name": "x", "service_account_id": env.sa_id, "url": url})
    assert r.status_code == 422 and why in r.json()["detail"], r.text


def test_a_redirect_is_not_followed_and_a_day_of_failures_is_a_dead_letter_replayed_through_the_api(env: Env) -> None:
    c = env.connector()
    env.confirm(c["id"])
    env.rig.receiver.command("mode redirect")
    sent = env.batches("BOX-A", 2)
    wait_for(lambda: env.got(c["id"]) and env.state(c["id"])["last_error"], what="a failure", timeout=30)
    assert "redirect: not followed" in env.state(c["id"])["last_error"]
    assert not [e for e in env.rig.receiver.entries() if e["path"] == "/other"]
    env.rig.receiver.command("mode fail")
    env.clock.offset += 90_000  # a day and more: the next failure gives up
    dead = wait_for(lambda: env.owner.get(f"{env.api.url}/v1/connectors/{c['id']}/dead").json()["items"],
                    what="a dead letter", timeout=30)
    assert dead[0]["attempts"] >= 2
    env.rig.receiver.command("mode ok")
    r = env.owner.post(f"{env.api.url}/v1/connectors/{c['id']}/replay", json={})
    assert r.json()["replayed"] == len(dead)
    wait_for(lambda: {i[0] for i in env.items(c["id"])} >= set(sent), what="replayed", timeout=30)
    ids = {e["id"] for e in env.got(c["id"]) if e["type"] == "data"}
    assert len(ids) == len(dead), "a replay keeps the webhook-id"
    env.owner.delete(f"{env.api.url}/v1/connectors/{c['id']}")


def _alerts(env: Env, cid: int) -> dict[str, dict[str, Any]]:
    """The connector's open alerts in the API's alert list, by kind."""
    items = env.owner.get(env.api.url + "/v1/alerts", params={"limit": 1000}).json()["items"]
    return {a["kind"]: a for a in items if a["box"] == f"connector:{cid}"}


def test_a_disabled_endpoint_is_alerted_in_the_api_keeps_its_newest_items_within_its_cap_and_drains(env: Env) -> None:
    c = env.connector()
    env.confirm(c["id"])
    env.rig.receiver.command("mode fail")
    env.batches("BOX-A", 1)
    wait_for(lambda: env.state(c["id"])["failing_since"], what="failing", timeout=30)
    env.clock.offset += 4 * 86400
    wait_for(lambda: env.state(c["id"])["state"] == "disabled", what="disabled", timeout=30)
    alert = wait_for(lambda: _alerts(env, c["id"]).get("connector"), what="the alert in GET /v1/alerts")
    assert c["name"] in alert["message"] and "disabled" in alert["message"]
    trail = env.owner.get(env.api.url + "/v1/audit", params={"limit": 1000}).json()["items"]
    assert any(a["action"] == "connector.disable" and a["target"] == f"connector:{c['id']}" for a in trail)
    r = env.owner.post(f"{env.api.url}/v1/alerts/{alert['id']}/ack", json={"note": "customer told"})
    assert r.ok and r.json()["acked_by"] == "user:owner@acme", r.text
    worker = env.rig.workers[-1]
    was = worker.limits
    worker.limits = dataclasses.replace(was, outbox_items=5)  # a cap of 5 items, for this test
    try:
        sent = env.batches("BOX-A", 12)  # still queued while disabled, up to the cap: the oldest go
        state = wait_for(lambda: (s := env.state(c["id"]))["outbox"]["evicted"] == 8 and s, what="8 evicted",
                         timeout=30)
        assert state["outbox"]["waiting"] + state["outbox"]["dead"] == 5
        outbox_alert = wait_for(lambda: _alerts(env, c["id"]).get("connector.outbox"), what="the cap's alert")
        assert "evicted" in outbox_alert["message"]
        env.rig.receiver.command("mode ok")
        env.confirm(c["id"])  # confirmed again: it drains what it kept, the newest, in order
        wait_for(lambda: len(env.items(c["id"])) >= 5, what="drained", timeout=30)
        assert [i[0] for i in env.items(c["id"])] == sent[-5:]
        wait_for(lambda: _alerts(env, c["id"]) == {}, what="both alerts closed", timeout=30)
    finally:
        worker.limits = was
    env.owner.delete(f"{env.api.url}/v1/connectors/{c['id']}")


def test_a_rotation_signs_with_both_secrets_for_a_day_then_the_new_one_only(env: Env) -> None:
    env.clock.offset = 0.0  # the API dates the rotation with the real clock
    c = env.connector()
    env.confirm(c["id"])
    r = env.owner.post(f"{env.api.url}/v1/connectors/{c['id']}/rotate")
    assert r.ok, r.text
    old, new = c["signing_secret"], r.json()["signing_secret"]

    def delivered_with(secrets: str) -> dict[str, Any]:
        env.rig.receiver.command(f"secrets {secrets}")
        sent = env.batches("BOX-A", 1)
        env.delivered(c["id"], sent)
        return next(e for e in env.got(c["id"]) if e["type"] == "data" and e["items"][0][0] == sent[0])

    e = delivered_with(old)  # a receiver that has not switched yet: the old secret's signature is there
    assert e["sig_ok"] and not e["items"][0][1]  # items' hmac: the new secret's
    e = delivered_with(new)
    assert e["sig_ok"] and e["items"][0][1]
    env.clock.offset += 86400 + 60  # a day later: the old secret signs no more
    assert not delivered_with(old)["sig_ok"]
    assert delivered_with(new)["sig_ok"]
    env.owner.delete(f"{env.api.url}/v1/connectors/{c['id']}")


def test_the_circuit_breaker_stays_open_across_a_restart_of_the_platform(env: Env) -> None:
    c = env.connector()
    env.confirm(c["id"])
    env.rig.receiver.command("mode fail")
    env.batches("BOX-A", 1)

    def failures() -> int:
        return len([e for e in env.got(c["id"]) if e["status"] == 503])

    for n in range(1, 6):  # five failures in a row open it; the fifth gives up (a dead letter)
        _failed(env, c["id"], n)
        env.clock.offset += 7200 if n < 4 else 90_000 if n == 4 else 0
    breaker = wait_for(lambda: (b := env.state(c["id"])["breaker"])["failures"] == 5 and b, what="tripped")
    assert breaker["state"] == "open"
    env.rig.stop_workers()
    worker = env.rig.start_worker(env.api.cloud.store, env.home, env.clock)
    env.batches("BOX-A", 1)  # a new delivery, due at once, while the breaker rests the endpoint
    wait_for(lambda: c["id"] in worker.endpoints and worker.endpoints[c["id"]].turns >= 3, what="three passes")
    assert failures() == 5, "the restarted platform tried a resting endpoint"
    env.clock.offset += policy.OPEN_S + 1  # its rest is over: one try (half-open), which fails: open again
    wait_for(lambda: failures() == 6, what="the half-open try", timeout=30)
    assert wait_for(lambda: (b := env.state(c["id"])["breaker"])["failures"] == 6 and b)["state"] == "open"
    env.rig.receiver.command("mode ok")
    env.clock.offset += 7200
    wait_for(lambda: env.state(c["id"])["breaker"]["state"] == "closed", what="closed by a success", timeout=30)
    env.owner.delete(f"{env.api.url}/v1/connectors/{c['id']}")
