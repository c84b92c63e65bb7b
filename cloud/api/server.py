"""The users' API served over HTTPS only, on its own port, by `cloud.https`'s server (connection
caps, request deadlines), with a certificate from the platform PKI or one the operator supplies.

TLS 1.2 or newer (`trust.tls.server_context`), no client certificate asked, no plaintext listener.
Around the app, an ASGI layer: request bodies must declare their length and stay within
`MAX_BODY` (no chunked uploads: a slow or endless body is refused before the app reads it), and
every response says ``Strict-Transport-Security`` (HSTS) and ``Cache-Control: no-store`` (a
response may carry a secret shown once). The constructor does no I/O.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from boxkit.files import write_atomic
from cloud.api._auth import Authenticator
from cloud.api._secrets import Seeds
from cloud.api.app import PROBLEM, Ctx, Fleet, make_app
from cloud.api.errors import title
from cloud.hooks import targets
from cloud.https import Asgi, HttpsServer
from cloud.mqttconn.link import PUBLIC_ONLY as MQTT_PUBLIC_ONLY
from cloud.store import Store
from trust import tls

log = logging.getLogger("boxcloud.api")

MAX_BODY = 300 * 1024  # a configuration (256 KiB of TOML) and its JSON escaping
HSTS = "max-age=31536000"
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def guarded(app: Asgi) -> Asgi:
    """The app behind the body limits, with HSTS and no-store on every response."""

    async def guard(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        refusal = None
        if b"transfer-encoding" in headers:
            refusal = (411, "a request body must come with a Content-Length (no chunked uploads)")
        elif length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            refusal = (413, f"a request body is at most {MAX_BODY} bytes")

        async def secured(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"strict-transport-security", HSTS.encode()),
                                      (b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]
            await send(message)

        if refusal is not None:
            status, detail = refusal
            body = json.dumps({"type": "about:blank", "title": title(status), "status": status,
                               "detail": detail}).encode()
            await secured({"type": "http.response.start", "status": status, "headers": [
                (b"content-type", PROBLEM.encode()), (b"content-length", str(len(body)).encode()),
                (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, secured)

    return guard


def seeds_key(path: Path) -> bytes:
    """The key that encrypts TOTP seeds, made (0600) on first use."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        key = Seeds.new_key()
        write_atomic(path, key, mode=0o600)
        return key


class ApiServer:
    """The users' API on (bind, port), in a thread. The constructor does no I/O."""

    def __init__(self, store: Store, fleet: Fleet, cert: Path, key: Path, *, seeds_file: Path, bind: str,
                 port: int, hook_reach: targets.Reach = targets.PUBLIC_ONLY,
                 mqtt_reach: targets.Reach = MQTT_PUBLIC_ONLY) -> None:
        self._store, self._fleet, self._cert, self._key = store, fleet, cert, key
        self._hook_reach, self._mqtt_reach = hook_reach, mqtt_reach
        self._seeds_file, self._bind, self._port = seeds_file, bind, port
        self._server: HttpsServer | None = None
        self.auth: Authenticator | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.port

    def start(self) -> None:
        """Bind and serve in a thread."""
        seeds = Seeds(seeds_key(self._seeds_file))
        self.auth = Authenticator(self._store, seeds)
        app = make_app(Ctx(self._store, self._fleet, self.auth, seeds, self._hook_reach, self._mqtt_reach))
        ctx = tls.server_context(self._cert, self._key)
        self._server = HttpsServer(guarded(app), ctx, self._bind, self._port)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
