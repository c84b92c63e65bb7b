"""The permission matrix: every operation of the users' API's OpenAPI schema x the built-in roles
(and the seed's custom role: data and commands only) x bound over the account or over one Box x a
Box in scope, in the account out of scope, and of another account (a Box's route, or a resource of
one Box: its deployment, its alert; or a new deployment to it). Each cell's expected answer comes
from the permission the operation names in its summary (the schema is the source: a new route
joins the matrix by itself) and the role's permissions; every cell is asserted: no unexpected
allow, no unexpected denial, never a 5xx.

Allowed means the request went past authorisation (any answer but a denial: 2xx, or a 4xx about
the request itself such as a revoked Box); denied means 404 "no Box" (or "no deployment", "no
alert") for a Box's resources (a resource outside the caller's scope is not found) and 403 for
the account's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from functools import partial
from itertools import count
from typing import Any

import pytest
import requests

from cloud import tufrepo as repository
from cloud.api import _secrets, operator
from cloud.api._authz import BOX_PERMISSIONS, BUILTIN_ROLES, HELD_ANYWHERE, PERMISSIONS
from tests.support.apikit import PASSWORD, Api, add_box, add_samples, serving

VERSION = "1.2.0"
ROLES = {**BUILTIN_ROLES, "seed": frozenset({"box.data.read", "box.command.send"})}

SCOPES = ("account", "box")  # a box binding is over BOX-X
TARGETS = {"BOX-X": "in scope", "BOX-Y": "in the account, out of a box binding's scope", "BOX-Z": "another account's"}
TARGETED = ("{box_id}", "{dep_id}", "{alert_id}")  # a path about one Box (or a POST /v1/deployments to it)
DENIALS = ("no Box", "no deployment", "no alert")  # the 404s that say "out of reach"
_n = count()
RESOURCES: dict[str, dict[str, str]] = {"dep_id": {}, "alert_id": {}}  # per target Box


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with serving(tmp_path_factory.mktemp("matrix")) as api:
        st = api.cloud.store
        operator.create_account(st, "acme", "owner@acme", PASSWORD)
        operator.create_account(st, "globex", "owner@globex", PASSWORD)
        add_box(api.cloud, "BOX-X", "acme")
        add_box(api.cloud, "BOX-Y", "acme")
        add_box(api.cloud, "BOX-Z", "globex")
        bundle = tmp_path_factory.mktemp("release") / f"boxd-{VERSION}.tar.gz"
        bundle.write_bytes(b"a release the Boxes here never download")
        repository.publish_release(api.cloud.ota_repo, api.cloud.ota_keys, bundle, VERSION, ["generic-x86-64"])
        for b in ("BOX-X", "BOX-Y", "BOX-Z"):
            add_samples(api.cloud, b, ["temp"], 1_700_000_000_000, 3)
            RESOURCES["dep_id"][b] = api.cloud.create_deployment(VERSION, boxes=[b]).id
            st.open_alert(b, "offline", "", "the Box is offline")
            RESOURCES["alert_id"][b] = str(st.alerts(b)[0].id)
        yield api


def _body(method: str, path: str, user_id: int, box: str) -> dict[str, Any] | None:
    n = next(_n)
    bodies: dict[tuple[str, str], dict[str, Any]] = {
        ("POST", "/v1/boxes/{box_id}/tags"): {"tags": [f"t{n}"]},
        ("POST", "/v1/boxes/{box_id}/config"): {"toml": "[uplink]\nbatch_delay_ms = 200\n", "allow_empty": True},
        ("POST", "/v1/boxes/{box_id}/commands"): {"name": "restart"},
        ("POST", "/v1/me/password"): {"current": PASSWORD, "new": PASSWORD},
        ("POST", "/v1/me/2fa/confirm"): {"code": "000000"},
        ("PATCH", "/v1/account"): {"require_2fa": False},
        ("POST", "/v1/users"): {"name": f"new{n}@acme", "kind": "service"},
        ("POST", "/v1/keys"): {"name": "k", "scopes": ["box.data.read"], "expires_in_days": 1},
        ("PUT", "/v1/roles/{name}"): {"permissions": ["box.read"]},
        ("POST", "/v1/bindings"): {"user_id": user_id, "role": "viewer"},
        ("POST", "/v1/deployments"): {"release": VERSION, "boxes": [box]},
        ("POST", "/v1/deployments/{dep_id}/stop"): {"reason": "the matrix"},
        ("POST", "/v1/alerts/{alert_id}/ack"): {"note": "seen by the matrix"},
        ("POST", "/v1/connectors"): {"name": f"hook{n}", "service_account_id": user_id,
                                     "url": "https://hooks.customer.example/in"},
        ("POST", "/v1/connectors/{connector_id}/replay"): {},
    }
    return bodies.get((method, path))


def _fill(path: str, box: str) -> str:
    values = {"box_id": box, "cmd_id": "c-0000000000000000", "tag": "zz", "user_id": "999999",
              "key_id": "000000000000", "binding_id": "999999", "name": f"role{next(_n)}", "connector_id": "999999",
              "dep_id": RESOURCES["dep_id"].get(box, ""), "alert_id": RESOURCES["alert_id"].get(box, "")}
    return re.sub(r"\{(\w+)\}", lambda m: values[m[1]], path)


def _operations(api: Api) -> list[tuple[str, str, str | None]]:
    schema = api.session().get(api.url + "/v1/openapi.json").json()
    ops = []
    for path, methods in schema["paths"].items():
        for method, op in methods.items():
            named = [p for p in re.findall(r"\(([a-z.]+)\)", op.get("summary", "")) if p in PERMISSIONS]
            ops.append((method.upper(), path, named[0] if named else None))
    return ops


def _targeted(method: str, path: str) -> bool:
    return any(p in path for p in TARGETED) or (method, path) == ("POST", "/v1/deployments")


def test_every_operation_x_role_x_scope_x_target_is_allowed_exactly_when_granted(api: Api) -> None:
    st = api.cloud.store
    acme = operator.account(st, "acme")
    st.put_role(acme.id, "seed", sorted(ROLES["seed"]))
    ops = _operations(api)
    assert len(ops) >= 30
    cells, wrong = 0, list[str]()
    for role, held in ROLES.items():
        for scope in SCOPES:
            name = f"{role}-{scope}@acme"
            uid = st.add_user(acme.id, name, "user", _secrets.hash_password(PASSWORD))
            st.bind(acme.id, uid, role, scope, "BOX-X" if scope == "box" else "")
            s = api.session(name)

            def reaches(box: str, permission: str, scope: str = scope, held: frozenset[str] = held) -> bool:
                return permission in held and (box == "BOX-X" or (scope == "account" and box == "BOX-Y"))

            for method, path, permission in ops:
                boxes = list(TARGETS) if _targeted(method, path) else [""]
                for box in boxes:
                    cells += 1
                    r = s.request(method, api.url + _fill(path, box), json=_body(method, path, uid, box))
                    where = f"{role}/{scope} {method} {_fill(path, box)} ({permission}): {r.status_code} {r.text[:150]}"
                    assert r.status_code < 500, where
                    if permission is None:
                        expected = True
                    elif permission in HELD_ANYWHERE:
                        expected = permission in held
                    elif permission in BOX_PERMISSIONS and box:
                        expected = reaches(box, permission)
                    elif permission in BOX_PERMISSIONS:  # a list: filtered, never refused
                        expected = True
                        _check_list(api, path, r, where, partial(reaches, permission=permission), wrong)
                    else:
                        expected = permission in held and scope == "account"
                    denied = r.status_code == 403 or (r.status_code == 404 and r.json()["detail"].startswith(DENIALS))
                    if expected == denied:
                        wrong.append(("unexpected denial: " if expected else "unexpected allow: ") + where)
    print(f"permission matrix: {len(ops)} operations x {len(ROLES)} roles x {len(SCOPES)} scopes "
          f"(x {len(TARGETS)} Boxes for a Box's routes) = {cells} cells")
    assert wrong == [], "\n".join(wrong)


def _check_list(api: Api, path: str, r: requests.Response, where: str, reaches: Callable[[str], bool],
                wrong: list[str]) -> None:
    """A list shows exactly what is in reach: the Boxes, or the deployments all of whose Boxes are."""
    if path not in ("/v1/boxes", "/v1/deployments"):
        return
    items = {i.get("id", i.get("box")) for i in r.json()["items"]} if r.ok else set()
    if path == "/v1/boxes":
        visible = {b for b in TARGETS if reaches(b)}
    else:
        st = api.cloud.store
        visible = {d.id for d in st.deployments() if all(reaches(b.box_id) for b in st.deployment_boxes(d.id))}
    if items != visible:
        wrong.append(f"{where}: lists {sorted(items)}, expected {sorted(visible)}")


def test_the_matrix_reads_a_permission_for_every_route_that_is_not_open_to_all(api: Api) -> None:
    open_to_all = {(m, p) for m, p, perm in _operations(api) if perm is None}
    assert open_to_all == {("GET", "/v1/me"), ("POST", "/v1/me/password"), ("POST", "/v1/me/2fa"),
                           ("POST", "/v1/me/2fa/confirm"), ("GET", "/v1/keys"), ("POST", "/v1/keys"),
                           ("DELETE", "/v1/keys/{key_id}"), ("GET", "/v1/roles")}, open_to_all


