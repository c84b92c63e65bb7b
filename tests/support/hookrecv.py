"""A customer's webhook receiver and OAuth token endpoint, over real HTTPS: ``python -m tests.support.hookrecv``.

Run by the tests inside a network namespace of their own (``ip netns exec``), on a public-looking
address there, with a certificate of the test's own CA. Routes:

- ``POST /hook``: a delivery. It verifies the Standard Webhooks signature (against every secret it
  was told) and each item's hmac, checks the authentication it was told to require (Basic or a
  bearer token it issued and has not expired or revoked), and appends a JSON line per request to
  the log file: ``{"path", "id", "ts", "auth", "sig_ok", "items": [[id, hmac_ok], ...], "status"}``.
  It answers a confirmation request (``type: endpoint.confirm``) with its token (or not, in mode
  ``noecho``; with a 64 KiB answer holding the token at its end in mode ``bigecho``).
- ``POST /token``: client credentials (Basic ``client:secret``); tokens live ``token_life`` seconds.
- ``POST /slow``: as ``/hook``, but a delivery of data is never answered (an endpoint that hangs).
- ``/other``: what a redirect points to (logged if ever reached).

Commands on stdin, one a line, answered ``ok ...`` on stdout: ``secrets <s1> [s2]``, ``mode
<ok|fail|hang|redirect|noecho|bigecho|huge>`` (fail: 503; hang: no answer for 60 s; huge: a 2 MiB
answer), ``basic <user> <password>``, ``bearer on|off``, ``token_life <s>``, ``revoke`` (tokens issued so
far refused), ``stats``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import secrets
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

STATE: dict[str, Any] = {"secrets": [], "mode": "ok", "basic": None, "bearer": False, "token_life": 60,
                         "tokens": {}, "fetches": 0, "requests": 0}
LOCK = threading.Lock()
LOG: Path


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def _sig_ok(headers: Any, body: bytes) -> bool:
    msg_id, ts, sig = headers.get("webhook-id", ""), headers.get("webhook-timestamp", ""), headers.get(
        "webhook-signature", "")
    signed = f"{msg_id}.{ts}.".encode() + body
    given = [s.split(",", 1)[1] for s in sig.split() if s.startswith("v1,")]
    return any(hmac.compare_digest(base64.b64encode(hmac.new(_key(k), signed, hashlib.sha256).digest()).decode(), g)
               for k in STATE["secrets"] for g in given)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a customer's server would
    def log_message(self, *_: object) -> None:
        pass

    def _answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path == "/token":
            return self._token()
        with LOCK:
            STATE["requests"] += 1
            mode = STATE["mode"]
        entry: dict[str, Any] = {"at": time.time(), "path": self.path, "id": self.headers.get("webhook-id"),
                                 "ts": self.headers.get("webhook-timestamp"), "sig_ok": _sig_ok(self.headers, body)}
        entry["auth"] = self._auth_ok()
        entry["connector"] = None
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {}
        entry["connector"] = doc.get("connector")
        entry["type"] = doc.get("type")
        entry["items"] = [[i["id"], any(hmac.compare_digest(hmac.new(_key(k), i["data"].encode(), hashlib.sha256)
                                                            .hexdigest(), i["hmac"]) for k in STATE["secrets"]),
                           json.loads(i["data"])] for i in doc.get("items", [])]
        status, answer, headers = 200, b"", {}
        if not entry["auth"]:
            status = 401
        elif self.path not in ("/hook", "/slow"):
            status = 404
        elif mode == "fail":
            status = 503
        elif mode == "redirect":
            status, headers = 307, {"location": "/other"}
        elif mode == "hang" or (self.path == "/slow" and doc.get("type") == "data"):
            entry["status"] = "hung"
            self._log(entry)
            time.sleep(60)
            return None
        elif doc.get("type") == "endpoint.confirm":
            token = str(doc.get("token", "")).encode()
            answer = {"noecho": b"", "bigecho": b" " * 65536 + token}.get(mode, token)
        elif mode == "huge":
            answer = b"x" * (2 << 20)
        entry["status"] = status
        self._log(entry)
        self._answer(status, answer, headers)
        return None

    def _auth_ok(self) -> bool:
        given = self.headers.get("authorization", "")
        if STATE["basic"] is not None:
            return given == "Basic " + base64.b64encode(":".join(STATE["basic"]).encode()).decode()
        if STATE["bearer"]:
            expires = STATE["tokens"].get(given.removeprefix("Bearer "))
            return expires is not None and time.time() < expires
        return True

    def _token(self) -> None:
        with LOCK:
            STATE["fetches"] += 1
            token = secrets.token_urlsafe(16)
            STATE["tokens"][token] = time.time() + STATE["token_life"]
        self._log({"path": "/token", "fetch": STATE["fetches"]})
        self._answer(200, json.dumps({"access_token": token, "token_type": "Bearer",
                                      "expires_in": STATE["token_life"]}).encode())

    @staticmethod
    def _log(entry: dict[str, Any]) -> None:
        with LOCK, LOG.open("a") as f:
            f.write(json.dumps(entry) + "\n")


def _command(line: str) -> str:
    words = line.split()
    with LOCK:
        if words[0] == "secrets":
            STATE["secrets"] = words[1:]
        elif words[0] == "mode":
            STATE["mode"] = words[1]
        elif words[0] == "basic":
            STATE["basic"] = words[1:3] if len(words) > 1 else None
        elif words[0] == "bearer":
            STATE["bearer"] = words[1] == "on"
        elif words[0] == "token_life":
            STATE["token_life"] = int(words[1])
        elif words[0] == "revoke":
            STATE["tokens"] = {}
        elif words[0] == "stats":
            return json.dumps({"fetches": STATE["fetches"], "requests": STATE["requests"]})
        else:
            return f"error unknown command {words[0]}"
    return ""


def main() -> None:
    global LOG  # noqa: PLW0603 - one process, one log
    p = argparse.ArgumentParser()
    p.add_argument("--address", required=True)
    p.add_argument("--port", type=int, default=443)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--log", required=True)
    a = p.parse_args()
    LOG = Path(a.log)
    server = ThreadingHTTPServer((a.address, a.port), Handler)
    server.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip():
            out = _command(line.strip())
            print(out if out.startswith("error") else f"ok {out}".rstrip(), flush=True)


if __name__ == "__main__":
    main()
