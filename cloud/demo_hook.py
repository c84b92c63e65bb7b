"""The webhook part of `make demo`: a customer's receiver on this machine, and its connector made
through the users' API.

The platform never sends webhooks to loopback; the demo's cloud is made with the operator's
exception for 127.0.0.1/32, on the receiver's port only (`Settings.webhook_allow_networks`,
`webhook_ports`: docs/integrations.md, "Your own networks"), and told to trust the demo CA that
signed the receiver's certificate (`webhook_ca_file`). `connector` then does what an integrator
does, over HTTPS with the owner's credentials: a service account that may read the demo's Box,
a connector acting as it (its signing secret, shown once, written 0600 where the receiver reads
it), the confirmation, which the receiver answers. The receiver (`cloud.demo_receiver`, its own
process) checks both signatures of each delivery and prints a line for it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from boxkit.files import write_atomic
from cloud.pki import Pki

if TYPE_CHECKING:
    from cloud.demo import Demo
    from cloud.platform import Cloud, Settings

SERVICE_ACCOUNT = "webhooks@example.com"
Call = Callable[..., dict[str, Any]]


class WebhookReceiver:
    """The customer's receiver: its CA, certificate, process and what it saw. The constructor does no I/O."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.ca = Pki(root / "webhook-ca")
        self.url = f"https://127.0.0.1:{port}/hook"
        self.secret_file = root / "webhook-secret"
        self.stats_file = root / "webhook.json"

    def settings(self, s: Settings) -> Settings:
        """The demo CA and the receiver's certificate (for the address 127.0.0.1); the cloud's settings
        `s` with the operator's exception for this receiver (127.0.0.1/32, its port only) and that CA."""
        self.ca.init()
        self.ca.issue_server("webhook", ["127.0.0.1"])
        return dataclasses.replace(s, webhook_allow_networks=("127.0.0.1/32",), webhook_ports=(self.port,),
                                   webhook_ca_file=str(self.ca.root_cert))

    def spawn(self, demo: Demo) -> None:
        print(f"demo: starting a customer's webhook receiver (HTTPS on {self.url}, its certificate from a demo CA; "
              f"what it receives: {self.root.name}/webhook.log)")
        demo.spawn("webhook", "cloud.demo_receiver", "--port", str(self.port),
                   "--cert", str(self.ca.dir / "webhook.crt"), "--key", str(self.ca.dir / "webhook.key"),
                   "--secret-file", str(self.secret_file), "--stats", str(self.stats_file))

    def stats(self) -> dict[str, Any]:
        return read_stats(self.stats_file)

    def line(self) -> str:
        s = self.stats()
        if not s.get("items"):
            return f"Webhook {self.url}: nothing received yet"
        return (f"Webhook {self.url}: {s['items']} items in {s['deliveries']} deliveries, Standard Webhooks "
                f"signatures verified, item HMACs {s['hmac_ok']} ok / {s['hmac_bad']} bad; "
                f"{s.get('refused', 0)} refused")


def read_stats(path: Path) -> dict[str, Any]:
    """A JSON summary a demo process rewrites (atomically); {} while there is none."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def connector(cloud: Cloud, password: str, hook: WebhookReceiver, demo: Demo) -> int:
    """The demo's webhook connector, made and confirmed through the users' API; its id.

    Raises:
        RuntimeError: the API refused a step (said with its answer) or the receiver did not confirm.
    """
    with owner_api(cloud, password, demo) as call:
        sa = call("POST", "/users", {"name": SERVICE_ACCOUNT, "kind": "service"})
        call("POST", "/bindings", {"user_id": sa["id"], "role": "viewer", "scope_kind": "account", "scope": ""})
        c = call("POST", "/connectors", {"name": "demo-receiver", "service_account_id": sa["id"], "url": hook.url})
        write_atomic(hook.secret_file, str(c["signing_secret"]).encode() + b"\n", 0o600)
        print(f"demo: POST /v1/connectors -> webhook connector {c['id']} to {hook.url}, acting as service "
              f"account {SERVICE_ACCOUNT} (viewer); its signing secret in {hook.secret_file.name} (0600)")
        call("POST", f"/connectors/{c['id']}/confirm")
        deadline = time.monotonic() + 30
        while (state := call("GET", f"/connectors/{c['id']}"))["state"] != "enabled":
            demo.check_alive()
            if time.monotonic() > deadline or state["state"] == "unconfirmed":
                raise RuntimeError(f"the webhook receiver did not confirm: {state['last_error'] or state['state']}")
            time.sleep(0.2)
        print(f"demo: POST /v1/connectors/{c['id']}/confirm -> the receiver answered its token: enabled")
        return int(c["id"])


@contextlib.contextmanager
def owner_api(cloud: Cloud, password: str, demo: Demo) -> Iterator[Call]:
    """The users' API as the demo account's owner, once it listens: `call(method, path, body)` -> the
    answer's JSON object.

    Raises:
        RuntimeError: the API did not come up, or refused a call (said with its answer).
    """
    s = cloud.settings
    ctx = ssl.create_default_context(cafile=str(cloud.pki.root_cert))
    with httpx.Client(base_url=f"https://localhost:{s.api_port}/v1", verify=ctx, auth=("demo@example.com", password),
                      timeout=30, trust_env=False) as api:
        def call(method: str, path: str, body: dict[str, object] | None = None) -> dict[str, Any]:
            r = api.request(method, path, json=body)
            if r.status_code >= 300:
                raise RuntimeError(f"{method} /v1{path}: {r.status_code} {r.text[:300]}")
            return dict(r.json())

        _wait_api(s.api_port, demo)
        yield call


def _wait_api(port: int, demo: Demo) -> None:
    from cloud.demo import _can_connect

    deadline = time.monotonic() + 30
    while not _can_connect(port):
        demo.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError("the users' API did not come up")
        time.sleep(0.1)
