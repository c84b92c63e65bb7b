"""The users' API over real HTTPS on a real store: transport, authentication (every path), 2FA, the
seed's authorisation example, keys, data paging, problems, the audit trail, no secret left behind.

One cloud and API for the module (`tests.support.apikit`); each test makes its own users, so that
lockouts and 2FA steps of one never touch another.
"""

from __future__ import annotations

import base64
import logging
import re
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests
import zxingcpp

from cloud import tufrepo as repository
from cloud.api import _secrets, operator
from cloud.api._auth import FREE_FAILURES, OTP_HEADER
from cloud.cli import main as boxcloud
from tests.support.apikit import PASSWORD, Api, add_box, add_samples, serving

NOW_MS = int(time.time() * 1000)
_n = count()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with serving(tmp_path_factory.mktemp("users-api")) as api:
        st = api.cloud.store
        operator.create_account(st, "acme", "owner@acme", PASSWORD)
        operator.create_account(st, "globex", "owner@globex", PASSWORD)
        add_box(api.cloud, "BOX-X", "acme", ("north",))
        add_box(api.cloud, "BOX-Y", "acme", ("south",))
        add_box(api.cloud, "BOX-Z", "globex")
        add_samples(api.cloud, "BOX-X", ["temp", "flow"], NOW_MS - 600_000, 500)
        yield api


def new_user(api: Api, role: str | None = None, scope_kind: str = "account", scope: str = "",
             custom: list[str] | None = None, account: str = "acme") -> str:
    """A new user of the account with one binding; returns its login."""
    st = api.cloud.store
    a = operator.account(st, account)
    name = f"u{next(_n)}@{account}"
    uid = st.add_user(a.id, name, "user", _secrets.hash_password(PASSWORD))
    if custom is not None:
        role = f"r{next(_n)}"
        st.put_role(a.id, role, custom)
    if role is not None:
        st.bind(a.id, uid, role, scope_kind, scope)
    return name


def test_https_only_tls12_hsts_and_a_problem_without_credentials(api: Api) -> None:
    port = int(api.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), 5) as s:  # plaintext HTTP: no answer in HTTP
        s.sendall(b"GET /v1/me HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        try:
            answer = s.recv(100)
        except (ConnectionResetError, TimeoutError):
            answer = b""
    assert not answer.startswith(b"HTTP/")
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(str(api.cloud.pki.root_cert))
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1  # what the server must refuse
    with pytest.raises(ssl.SSLError), socket.create_connection(("127.0.0.1", port), 5) as s, \
            old.wrap_socket(s, server_hostname="localhost"):
        pass
    r = api.session().get(api.url + "/v1/boxes")
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == 401 and "Basic" in r.json()["detail"]
    assert "Basic" in r.headers["WWW-Authenticate"]
    assert r.headers["Strict-Transport-Security"].startswith("max-age=")


def test_the_seeds_example_commands_and_data_of_one_box_and_404_elsewhere(api: Api) -> None:
    user = new_user(api, custom=["box.data.read", "box.command.send"], scope_kind="box", scope="BOX-X")
    s = api.session(user)
    r = s.get(api.url + "/v1/boxes/BOX-X/latest")
    assert r.status_code == 200 and {p["point"] for p in r.json()["points"]} == {"temp", "flow"}
    r = s.post(api.url + "/v1/boxes/BOX-X/commands", json={"name": "read", "args": {"points": ["ahu1.temp"]}})
    assert r.status_code == 202, r.text
    cmd = api.cloud.store.command(r.json()["id"])
    assert cmd is not None and cmd.box_id == "BOX-X" and cmd.name == "read"  # queued for the running cloud
    assert s.get(api.url + f"/v1/boxes/BOX-X/commands/{cmd.id}").json()["status"] == "queued"
    for path in ("/v1/boxes/BOX-X/config", "/v1/boxes/BOX-Y/latest", "/v1/boxes/BOX-Z/latest", "/v1/boxes/NOPE/latest"):
        r = s.get(api.url + path)
        assert r.status_code == 404 and r.json()["detail"].startswith("no Box"), path
    assert s.post(api.url + "/v1/boxes/BOX-Y/commands", json={"name": "read"}).status_code == 404
    assert s.get(api.url + "/v1/boxes").json()["items"] == []  # it holds no box.read anywhere
    assert s.get(api.url + "/v1/users").status_code == 403


def test_a_tag_binding_reaches_the_tagged_boxes_and_lists_filter(api: Api) -> None:
    s = api.session(new_user(api, "viewer", "tag", "south"))
    assert [b["id"] for b in s.get(api.url + "/v1/boxes").json()["items"]] == ["BOX-Y"]
    assert s.get(api.url + "/v1/boxes/BOX-Y").status_code == 200
    assert s.get(api.url + "/v1/boxes/BOX-X").status_code == 404
    owner = api.session("owner@acme")
    assert [b["id"] for b in owner.get(api.url + "/v1/boxes").json()["items"]] == ["BOX-X", "BOX-Y"]  # not globex's
    first = owner.get(api.url + "/v1/boxes", params={"limit": 1}).json()
    assert [b["id"] for b in first["items"]] == ["BOX-X"] and first["next"]
    rest = owner.get(api.url + "/v1/boxes", params={"limit": 1, "cursor": first["next"]}).json()
    assert [b["id"] for b in rest["items"]] == ["BOX-Y"] and rest["next"] is None  # no empty page at the end


def test_wrong_password_and_unknown_user_answer_alike_then_lock_out_with_growing_delays(api: Api) -> None:
    user = new_user(api, "viewer")
    wrong = api.session(user, "not the password")
    ghost = api.session("nobody@acme", "not the password")
    assert api.server.auth is not None
    held = time.monotonic()
    api.server.auth.ticks = lambda: held  # the first lock (1 s) must not run out between requests on a slow machine
    a, b = wrong.get(api.url + "/v1/me"), ghost.get(api.url + "/v1/me")
    assert a.status_code == b.status_code == 401 and a.json() == b.json()
    for _ in range(FREE_FAILURES - 1):
        wrong.get(api.url + "/v1/me")
        ghost.get(api.url + "/v1/me")
    a, b = wrong.get(api.url + "/v1/me"), ghost.get(api.url + "/v1/me")
    assert a.status_code == b.status_code == 429 and a.json() == b.json()
    assert int(a.headers["Retry-After"]) >= 1
    assert api.session(user).get(api.url + "/v1/me").status_code == 429  # locked: even the right password waits
    records = api.cloud.store.audit_records(None, 0, 10_000)
    assert sum(r.action == "login" and r.outcome == "failed" and r.target == f"user:{user}" for r in records) \
        == FREE_FAILURES


def test_api_keys_shown_once_scoped_within_the_owner_revoked_and_expired(api: Api) -> None:
    user = new_user(api, "operator", "box", "BOX-X")
    s = api.session(user)
    r = s.post(api.url + "/v1/keys", json={"name": "grafana", "scopes": ["box.data.read"], "expires_in_days": 7})
    assert r.status_code == 201
    key, key_id = r.json()["key"], r.json()["id"]
    assert _secrets.parse_key(key) is not None and key.startswith("boxk_")
    listed = s.get(api.url + "/v1/keys").json()["items"]
    assert [k["id"] for k in listed] == [key_id] and key not in str(listed)  # never shown again
    k = api.session(key=key)
    assert k.get(api.url + "/v1/boxes/BOX-X/latest").status_code == 200
    assert k.post(api.url + "/v1/boxes/BOX-X/commands", json={"name": "read"}).status_code == 404  # not its scope
    assert k.post(api.url + "/v1/keys", json={"name": "x", "scopes": ["box.data.read"]}).status_code == 403
    wider = s.post(api.url + "/v1/keys", json={"name": "w", "scopes": ["user.manage"]})
    assert wider.status_code == 403 and "within its owner" in wider.json()["detail"]
    assert s.post(api.url + "/v1/keys", json={"name": "f", "scopes": ["box.read"], "expires_in_days": 0}) \
        .status_code == 400  # an expiry is mandatory, and in the future
    typo = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert api.session(key=typo).get(api.url + "/v1/me").json()["detail"].startswith("not an API key")
    assert s.delete(api.url + f"/v1/keys/{key_id}").status_code == 204
    r = k.get(api.url + "/v1/boxes/BOX-X/latest")
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    old_id, old, digest = _secrets.new_key()
    u = api.cloud.store.user(name=user)
    assert u is not None
    api.cloud.store.add_key(old_id, u.id, "old", digest, scopes=["box.read"], expires=time.time() - 1)
    r = api.session(key=old).get(api.url + "/v1/me")
    assert r.status_code == 401 and "expired" in r.json()["detail"]


def test_a_key_loses_what_its_owner_loses(api: Api) -> None:
    user = new_user(api, "operator", "box", "BOX-X")
    key = api.session(user).post(api.url + "/v1/keys", json={"name": "k", "scopes": ["box.data.read"]}).json()["key"]
    assert api.session(key=key).get(api.url + "/v1/boxes/BOX-X/latest").status_code == 200
    u = api.cloud.store.user(name=user)
    assert u is not None
    for b in api.cloud.store.bindings(u.account_id, u.id):
        api.cloud.store.unbind(u.account_id, b.id)
    assert api.session(key=key).get(api.url + "/v1/boxes/BOX-X/latest").status_code == 404


def scan(qr_svg: str) -> list[str]:
    """What a phone reads from the enrolment's QR code (an SVG data: URI of one square path per dark
    module): the modules drawn 4 pixels each on white, decoded by zxing-cpp."""
    svg = base64.b64decode(qr_svg.removeprefix("data:image/svg+xml;base64,")).decode()
    side = float(re.search(r'viewBox="0 0 ([\d.]+) ', svg)[1])  # type: ignore[index]
    squares = [(float(x), float(y), float(x2)) for x, y, x2 in re.findall(r"M([\d.]+),([\d.]+)H([\d.]+)V", svg)]
    unit, px = squares[0][2] - squares[0][0], 4
    n = round(side / unit) * px
    bitmap = bytearray(b"\xff") * (n * n)
    for x, y, _ in squares:
        for dy in range(px):
            start = (round(y / unit) * px + dy) * n + round(x / unit) * px
            bitmap[start:start + px] = bytes(px)
    return [r.text for r in zxingcpp.read_barcodes(memoryview(bytes(bitmap)).cast("B", shape=[n, n]))]


def test_totp_enrolment_codes_once_recovery_codes_once_and_an_account_requiring_2fa(api: Api) -> None:
    user = new_user(api, "viewer")
    s = api.session(user)
    enrolment = s.post(api.url + "/v1/me/2fa").json()
    assert scan(enrolment["qr_svg"]) == [enrolment["otpauth_uri"]]  # what the app scans is the URI, seed and all
    seed = parse_qs(urlparse(enrolment["otpauth_uri"]).query)["secret"][0]
    r = s.post(api.url + "/v1/me/2fa/confirm", json={"code": _secrets.totp_now(seed)})
    assert r.status_code == 200
    recovery = r.json()["recovery_codes"]
    assert len(recovery) == 10
    r = s.get(api.url + "/v1/me")
    assert r.status_code == 401 and OTP_HEADER in r.json()["detail"]
    # the confirmation spent the current step: the next code is the next step's
    code = _secrets.totp_now(seed, time.time() + 30)
    assert s.get(api.url + "/v1/me", headers={OTP_HEADER: code}).status_code == 200
    r = s.get(api.url + "/v1/me", headers={OTP_HEADER: code})
    assert r.status_code == 401 and "used already" in r.json()["detail"]
    assert s.get(api.url + "/v1/me", headers={OTP_HEADER: "000000" if code != "000000" else "111111"}) \
        .status_code == 401
    assert s.get(api.url + "/v1/me", headers={OTP_HEADER: recovery[0]}).status_code == 200
    assert s.get(api.url + "/v1/me", headers={OTP_HEADER: recovery[0]}).status_code == 401  # spent
    # the operator resets a lost device; an account that requires 2FA holds its users to enrolment
    assert operator.reset_2fa(api.cloud.store, user)
    assert s.get(api.url + "/v1/me").status_code == 200
    globex_user = new_user(api, "viewer", account="globex")
    a = operator.account(api.cloud.store, "globex")
    api.cloud.store.set_require_2fa(a.id, True)
    g = api.session(globex_user)
    r = g.get(api.url + "/v1/boxes")
    assert r.status_code == 403 and "two-factor" in r.json()["detail"]
    assert g.get(api.url + "/v1/me").json()["must_enrol_2fa"] is True


def test_a_custom_role_beside_a_built_in_one_grants_its_permissions(api: Api) -> None:
    st = api.cloud.store
    name = new_user(api, "viewer")  # the account's data ...
    a, user = operator.account(st, "acme"), st.user(name=name)
    assert a is not None and user is not None
    st.put_role(a.id, "commander", ["box.command.send"])
    st.bind(a.id, user.id, "commander", "box", "BOX-X")  # ... and commands to one Box
    s = api.session(name)
    assert s.get(api.url + "/v1/boxes/BOX-X/commands").status_code == 200
    assert s.get(api.url + "/v1/boxes/BOX-Y/commands").status_code == 404
    assert s.get(api.url + "/v1/boxes/BOX-Y/latest").status_code == 200


def test_history_pages_cover_every_sample_once_in_json_and_csv_and_aggregates(api: Api) -> None:
    s = api.session(new_user(api, "viewer"))
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((NOW_MS - 3_600_000) / 1000))
    seen, cursor, pages = [], None, 0
    while True:
        params = _q(point=["temp", "flow"], since=since, limit=300, **({"cursor": cursor} if cursor else {}))
        r = s.get(api.url + "/v1/boxes/BOX-X/history", params=params)
        assert r.status_code == 200
        seen += [(i["point"], i["ts_ms"]) for i in r.json()["items"]]
        pages += 1
        cursor = r.json()["next"]
        if cursor is None:
            break
    assert pages == 4 and len(seen) == len(set(seen)) == 1000
    r = s.get(api.url + "/v1/boxes/BOX-X/history", params=_q(point="temp", since=since, format="csv", limit=10))
    assert r.headers["content-type"].startswith("text/csv") and r.text.splitlines()[0] == "point,ts_ms,value,quality"
    assert len(r.text.splitlines()) == 11 and "X-Next-Cursor" in r.headers
    r = s.get(api.url + "/v1/boxes/BOX-X/history", params=_q(point="temp", since=since, bucket_s=100))
    buckets = r.json()["items"]
    assert sum(b["count"] for b in buckets) == 500 and buckets[0]["min"] <= buckets[0]["mean"] <= buckets[0]["max"]
    r = s.get(api.url + "/v1/boxes/BOX-X/history", params={"since": "2020-01-01T00:00:00Z"})
    assert r.status_code == 400 and "366 days" in r.json()["detail"]


def _q(**params: Any) -> dict[str, Any]:
    return params


def test_bad_requests_are_problems_that_say_what_was_wrong(api: Api) -> None:
    s = api.session("owner@acme")
    r = s.get(api.url + "/v1/boxes", params={"limit": 5000})
    assert r.status_code == 400 and "limit" in r.json()["detail"]
    r = s.get(api.url + "/v1/boxes", params={"cursor": "garbage!"})
    assert r.status_code == 400 and "cursor" in r.json()["detail"]
    r = s.post(api.url + "/v1/boxes/BOX-X/commands", data=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    # a body too big is refused on its headers, before it is read (sent raw: the answer comes while it is not)
    ctx = ssl.create_default_context(cafile=str(api.cloud.pki.root_cert))
    port = int(api.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), 5) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as t:
        t.sendall(b"POST /v1/boxes/BOX-X/config HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 400000\r\n\r\n")
        assert t.recv(100).startswith(b"HTTP/1.1 413 ")
    r = s.post(api.url + "/v1/boxes/BOX-X/config", json={"toml": "this is = = not toml"})
    assert r.status_code == 422 and "not sent" in r.json()["detail"]
    assert s.get(api.url + "/v1/nowhere").json()["status"] == 404
    assert s.delete(api.url + "/v1/boxes").status_code == 405
    assert requests.get(api.url + "/v1/openapi.json", verify=str(api.cloud.pki.root_cert)).json()["info"]["title"]


def test_no_one_grants_more_than_they_hold(api: Api) -> None:
    admin = new_user(api, "admin")
    s = api.session(admin)
    target = new_user(api)
    u = api.cloud.store.user(name=target)
    assert u is not None
    r = s.post(api.url + "/v1/bindings", json={"user_id": u.id, "role": "owner"})
    assert r.status_code == 403 and "account.manage" in r.json()["detail"]
    r = s.put(api.url + "/v1/roles/superuser", json={"permissions": ["account.manage"]})
    assert r.status_code == 403
    assert s.post(api.url + "/v1/bindings", json={"user_id": u.id, "role": "viewer", "scope_kind": "box",
                                                  "scope": "BOX-Z"}).status_code == 404  # another account's Box
    assert s.post(api.url + "/v1/bindings", json={"user_id": u.id, "role": "operator"}).status_code == 201
    assert api.session(target).get(api.url + "/v1/boxes/BOX-X/config").status_code == 200


def test_the_audit_trail_records_and_verify_finds_an_edit_and_a_deletion(api: Api, tmp_path: Path) -> None:
    s = api.session("owner@acme")
    s.post(api.url + "/v1/boxes/BOX-X/tags", json={"tags": ["audited"]})
    items = s.get(api.url + "/v1/audit", params={"limit": 1000}).json()["items"]
    assert any(i["action"] == "box.tag" and i["actor"] == "user:owner@acme" for i in items)
    assert api.session(new_user(api, "viewer")).get(api.url + "/v1/audit").status_code == 403
    assert all(i["target"] != "account:globex" for i in items)  # another account's records are not shown

    home = api.cloud.home

    def verify() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cloud.cli", "--home", str(home), "audit", "verify"],
                              capture_output=True, text=True, timeout=60)

    assert verify().returncode == 0
    db = api.cloud.store.path
    assert db is not None
    backup = tmp_path / "cloud.db"
    with sqlite3.connect(db) as src, sqlite3.connect(backup) as dst:
        src.backup(dst)
    try:
        with sqlite3.connect(db) as c:
            c.execute("UPDATE audit SET actor = 'user:someone-else' WHERE seq = 2")
        r = verify()
        assert r.returncode == 1 and "record 2: edited" in r.stderr and "Traceback" not in r.stderr
        with sqlite3.connect(db) as c:
            c.execute("DELETE FROM audit WHERE seq = 3")
        r = verify()
        assert r.returncode == 1 and "record 3..3 deleted" in r.stderr
    finally:
        with sqlite3.connect(backup) as src, sqlite3.connect(db) as dst:
            src.backup(dst)
    assert verify().returncode == 0


def test_no_secret_in_logs_or_in_responses_after_creation(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    user = new_user(api, "admin")
    s = api.session(user)
    bodies = []
    new_password = "a brand new password 123"
    r = s.post(api.url + "/v1/users", json={"name": f"svc{next(_n)}", "kind": "service"})
    svc = r.json()["id"]
    assert s.post(api.url + "/v1/bindings", json={"user_id": svc, "role": "viewer"}).status_code == 201
    r = s.post(api.url + "/v1/keys", json={"name": "m", "scopes": ["box.read"], "user_id": svc})
    key = r.json()["key"]
    seed = s.post(api.url + "/v1/me/2fa").json()["secret"]
    assert s.post(api.url + "/v1/me/password", json={"current": PASSWORD, "new": new_password}).status_code == 204
    assert api.session(user).get(api.url + "/v1/me").status_code == 401  # the old one, cached before, is refused
    s = api.session(user, new_password)
    for path in ("/v1/me", "/v1/users", f"/v1/keys?user_id={svc}", "/v1/audit?limit=1000", "/v1/bindings"):
        bodies.append(s.get(api.url + path).text)
    bodies.append(api.session(key=key).get(api.url + "/v1/me").text)
    text = "\n".join(bodies) + caplog.text + (api.cloud.home / "cloud.db").read_bytes().decode("latin-1")
    for secret in (PASSWORD, new_password, key, key.split("_")[2], seed):
        assert secret not in text
    assert not _secrets.looks_like_key(text)


def _trail(api: Api, account: str, since: int) -> list[tuple[str, str, str, dict[str, object]]]:
    """(actor, action, target, detail) of an account's audit records after `since`."""
    a = operator.account(api.cloud.store, account)
    return [(r.actor, r.action, r.target, r.detail) for r in api.cloud.store.audit_records(a.id, since, 10_000)]


def test_a_deployment_reaches_only_boxes_in_scope_and_its_story_is_audited(api: Api, tmp_path: Path) -> None:
    st = api.cloud.store
    bundle = tmp_path / "boxd-1.2.0.tar.gz"
    bundle.write_bytes(b"a release these Boxes never download")
    repository.publish_release(api.cloud.ota_repo, api.cloud.ota_keys, bundle, "1.2.0", ["generic-x86-64"])
    st.tag_box("BOX-X", ["pilot"])
    st.tag_box("BOX-Z", ["pilot"])  # another account's Box with the same tag
    since = st.audit_records(None, 0, 10**6)[-1].seq
    user = new_user(api, "operator", "box", "BOX-X")
    s = api.session(user)
    assert [r["version"] for r in s.get(api.url + "/v1/releases").json()["items"]] == ["1.2.0"]
    for box in ("BOX-Y", "BOX-Z", "NOPE"):  # out of scope, another account's, none: the same answer
        r = s.post(api.url + "/v1/deployments", json={"release": "1.2.0", "boxes": ["BOX-X", box]})
        assert r.status_code == 404 and r.json()["detail"] == f"no Box {box!r} here", r.text
    r = s.post(api.url + "/v1/deployments", json={"release": "1.2.0", "boxes": ["BOX-X"], "tag": "pilot"})
    assert r.status_code == 400 and "not both" in r.json()["detail"]
    r = s.post(api.url + "/v1/deployments", json={"release": "9.9.9", "tag": "pilot"})
    assert r.status_code == 422 and "no published release" in r.json()["detail"]
    r = s.post(api.url + "/v1/deployments", json={"release": "1.2.0", "tag": "pilot", "waves": "1,100%"})
    assert r.status_code == 201, r.text
    dep = r.json()["id"]
    assert r.json()["box_count"] == 1 and r.json()["status"] == "running"  # the tag reached BOX-X only
    r = s.post(api.url + "/v1/deployments", json={"release": "1.2.0", "boxes": ["BOX-X"]})
    assert r.status_code == 409 and f"BOX-X ({dep})" in r.json()["detail"]
    api.cloud.deployer.tick(time.time())  # what the running cloud does every half second: wave 1 goes
    boxes = s.get(api.url + f"/v1/deployments/{dep}").json()["boxes"]
    assert [(b["box"], b["wave"], b["state"]) for b in boxes] == [("BOX-X", 1, "sent")]
    viewer_name = new_user(api, "viewer")
    viewer = api.session(viewer_name)  # sees it (deployment.read), cannot stop it
    assert [d["id"] for d in viewer.get(api.url + "/v1/deployments").json()["items"]][:1] == [dep]
    assert viewer.post(api.url + f"/v1/deployments/{dep}/stop").status_code == 404
    operator.create_account(st, "initech", "owner@initech", PASSWORD)  # (globex requires 2FA by now)
    other = api.session("owner@initech")  # another account's owner: nothing of it
    assert other.get(api.url + f"/v1/deployments/{dep}").status_code == 404
    assert other.get(api.url + "/v1/deployments").json()["items"] == []
    r = s.post(api.url + f"/v1/deployments/{dep}/stop", json={"reason": "pumps restarting"})
    assert r.status_code == 200 and r.json()["status"] == "stopped"
    r = s.post(api.url + f"/v1/deployments/{dep}/stop", json={"reason": "again"})  # ended: a conflict, said so
    assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json", r.text
    assert f"deployment {dep} has already ended: stopped (pumps restarting" in r.json()["detail"], r.text
    assert r.json()["deployment_status"] == "stopped" and "again" not in str(r.json())
    assert s.get(api.url + f"/v1/deployments/{dep}").json()["boxes"][0]["state"] == "cancelled"  # never sent
    story = [(actor, action) for actor, action, target, _ in _trail(api, "acme", since)
             if target == f"deployment:{dep}"]
    assert story == [(f"user:{user}", "deployment.create"), ("platform", "deployment.wave"),
                     (f"user:{viewer_name}", "denied"), (f"user:{user}", "deployment.stop")], story
    assert all(target != f"deployment:{dep}" for _, _, target, _ in _trail(api, "globex", since))  # BOX-Z has the tag


def test_an_alert_is_acknowledged_with_a_note_kept_with_it_and_the_trail_says_who(
        api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    st = api.cloud.store
    st.open_alert("BOX-X", "offline", "ack-test", "the Box is offline")
    st.open_alert("BOX-Y", "offline", "ack-test", "the Box is offline")
    ids = {a.box_id: a.id for a in st.alerts() if a.subject == "ack-test"}
    since = st.audit_records(None, 0, 10**6)[-1].seq
    user = new_user(api, "operator", "box", "BOX-X")
    s = api.session(user)
    note = {"note": "technician on site"}
    assert s.post(api.url + f"/v1/alerts/{ids['BOX-Y']}/ack", json=note).json()["detail"] == \
        f"no alert {ids['BOX-Y']} here"  # out of scope: not found
    viewer = api.session(new_user(api, "viewer"))  # sees every alert of the account, acknowledges none
    assert viewer.post(api.url + f"/v1/alerts/{ids['BOX-X']}/ack", json=note).status_code == 404
    before = time.time()
    r = s.post(api.url + f"/v1/alerts/{ids['BOX-X']}/ack", json=note)
    assert r.status_code == 200 and r.json()["acked_by"] == f"user:{user}", r.text
    listed = {a["id"]: a for a in viewer.get(api.url + "/v1/alerts").json()["items"]}  # who, when, why: on the alert
    acked = listed[ids["BOX-X"]]
    assert (acked["acked_by"], acked["ack_note"]) == (f"user:{user}", "technician on site"), acked
    assert before - 1 <= acked["acked"] <= time.time() + 1
    assert [listed[ids["BOX-Y"]][k] for k in ("acked", "acked_by", "ack_note")] == [None, None, None]
    assert s.post(api.url + f"/v1/alerts/{ids['BOX-X']}/ack", json=note).status_code == 409
    acks = [(actor, detail["note"]) for actor, action, target, detail in _trail(api, "acme", since)
            if action == "alert.ack"]
    assert acks == [(f"user:{user}", "technician on site")]
    closed = s.post(api.url + f"/v1/alerts/{ids['BOX-X']}/ack", json={"note": "fixed", "close": True}).json()
    assert closed["closed"] and closed["ack_note"] == "technician on site"  # the first acknowledgement stays
    capsys.readouterr()
    assert boxcloud(["--home", str(api.cloud.home), "alerts", "--all", "--box", "BOX-X"]) == 0  # the operator's list
    listing = capsys.readouterr().out
    assert f"by user:{user}: technician on site" in listing, listing


def test_a_box_reporting_on_change_has_every_poll_in_its_history_json_csv_and_aggregates(api: Api) -> None:
    """Report on change: the batches came newest first (a backlog draining), the polls found unchanged
    as spans; the API gives the value in force at every poll, and when the latest was last confirmed."""
    from proto import wire
    from proto.points import PointInfo

    st, g = api.cloud.store, wire.encode_group
    table = [PointInfo("ahu.t", "degC", "float32"), PointInfo("ahu.on", "", "bool")]
    tid, t0 = wire.table_id(table), NOW_MS - 300_000
    st.put_table("BOX-Y", tid, table)
    sent = [(1, [g(0, 0, [20.5, True], {})]), *((n, [g(0, 0, 2, {})]) for n in range(2, 6)),
            (6, [g(0, 0, [21.0], {}), g(0, 1, 1, {})])]
    for seq, groups in reversed(sent):
        st.store_batch("BOX-Y", wire.decode_batch(wire.encode_batch(7, seq, tid, t0 + seq * 1000, groups)), table)
    s = api.session(new_user(api, "viewer"))
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((NOW_MS - 3_600_000) / 1000))
    url = api.url + "/v1/boxes/BOX-Y/history"
    first = s.get(url, params=_q(point=["ahu.t"], since=since, limit=4)).json()
    rest = s.get(url, params=_q(point=["ahu.t"], since=since, limit=4, cursor=first["next"])).json()
    assert [(i["ts_ms"] - t0, i["value"]) for i in first["items"] + rest["items"]] == [
        (1000, 20.5), (2000, 20.5), (3000, 20.5), (4000, 20.5), (5000, 20.5), (6000, 21.0)]
    assert rest["next"] is None
    csv = s.get(url, params=_q(point=["ahu.on"], since=since, format="csv")).text.splitlines()
    assert csv[1:] == [f"ahu.on,{t0 + k * 1000},True,0" for k in range(1, 7)]
    buckets = s.get(url, params=_q(point=["ahu.t"], since=since, bucket_s=3600)).json()["items"]
    assert sum(b["count"] for b in buckets) == 6  # one a poll, the value in force counted at each
    assert min(b["min"] for b in buckets) == 20.5 and max(b["max"] for b in buckets) == 21.0
    latest = {p["point"]: p for p in s.get(api.url + "/v1/boxes/BOX-Y/latest").json()["points"]}
    assert latest["ahu.on"]["ts_ms"] == t0 + 1000 and latest["ahu.on"]["confirmed_ms"] == t0 + 6000
    assert latest["ahu.t"]["confirmed_ms"] == latest["ahu.t"]["ts_ms"] == t0 + 6000
