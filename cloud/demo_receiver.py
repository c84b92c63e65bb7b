"""A customer's webhook receiver for `make demo`: ``python -m cloud.demo_receiver``.

What an integrator would run, in the standard library only: HTTPS (its own certificate), every
delivery's Standard Webhooks signature checked (``webhook-id``, ``webhook-timestamp`` within 5
minutes, ``webhook-signature`` over the exact raw body) and each item's hex HMAC of its ``data``
text, both with the connector's signing secret (read from `--secret-file`, 0600, at each request:
the demo writes it once the API has shown it). It answers the platform's confirmation request
with its token, drops a delivery whose ``webhook-id`` it has taken already, refuses (401) one
whose signature does not verify, and prints a line per delivery; `--stats` is a JSON summary the
demo shows. Not a production server: one process, no persistence of the ids it has seen.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import signal
import ssl
import sys
import threading
import time
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from boxkit.files import write_atomic

MAX_BODY = 4 << 20
TOLERANCE_S = 300
SEEN = 10_000  # webhook-ids remembered, to drop a delivery sent again


class Receiver:
    """The receiver's state: the secret's file, the ids seen, what arrived. The constructor does no I/O."""

    def __init__(self, secret_file: Path, stats: Path | None) -> None:
        self.secret_file, self.stats_file = secret_file, stats
        self.lock = threading.Lock()
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.stats: dict[str, Any] = {"deliveries": 0, "items": 0, "duplicates": 0, "refused": 0,
                                      "hmac_ok": 0, "hmac_bad": 0, "last": ""}

    def key(self) -> bytes | None:
        try:
            secret = self.secret_file.read_text().strip()
        except OSError:
            return None
        try:
            return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except ValueError:
            return None

    @staticmethod
    def signature_ok(key: bytes, headers: Any, body: bytes) -> bool:
        """The Standard Webhooks check (docs/integrations.md's verifier)."""
        msg_id, ts = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
        try:
            if abs(time.time() - int(ts)) > TOLERANCE_S:
                return False
        except ValueError:
            return False
        mac = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
        return any(hmac.compare_digest(mac, s[3:]) for s in headers.get("webhook-signature", "").split()
                   if s.startswith("v1,"))

    def take(self, headers: Any, body: bytes) -> tuple[int, bytes]:
        """A request: (status, answer)."""
        key = self.key()
        if key is None or not self.signature_ok(key, headers, body):
            self._count("refused", "REFUSED a request: its Standard Webhooks signature does not verify")
            return 401, b""
        try:
            doc = json.loads(body)
        except ValueError:
            return 400, b""
        if not isinstance(doc, dict):
            return 400, b""
        if doc.get("type") == "endpoint.confirm":
            self._say(f"confirmation request of connector {doc.get('connector')}: signature ok, token answered")
            return 200, json.dumps({"token": str(doc.get("token", ""))}).encode()
        msg_id = str(headers.get("webhook-id", ""))
        with self.lock:
            if msg_id in self.seen:
                self.stats["duplicates"] += 1
                return 200, b""
            self.seen[msg_id] = None
            while len(self.seen) > SEEN:
                self.seen.popitem(last=False)
        items = [i for i in doc.get("items", []) if isinstance(i, dict)]
        good = sum(hmac.compare_digest(hmac.new(key, str(i.get("data", "")).encode(), hashlib.sha256).hexdigest(),
                                       str(i.get("hmac", ""))) for i in items)
        samples, boxes, seqs = 0, set(), []
        for i in items:
            try:
                data = json.loads(i["data"])
                samples += len(data["samples"])
                boxes.add(data["box"])
                seqs.append(int(data["seq"]))
            except (KeyError, TypeError, ValueError):
                continue
        line = (f"{msg_id}: {len(items)} items ({', '.join(sorted(boxes))} batches "
                f"{min(seqs, default=0)}-{max(seqs, default=0)}, {samples} samples); Standard Webhooks "
                f"signature ok; item HMACs {good}/{len(items)} ok")
        with self.lock:
            self.stats["deliveries"] += 1
            self.stats["items"] += len(items)
            self.stats["hmac_ok"] += good
            self.stats["hmac_bad"] += len(items) - good
            self.stats["last"] = line
        self._say(line)
        return 200, b""

    def _count(self, what: str, line: str) -> None:
        with self.lock:
            self.stats[what] += 1
        self._say(line)

    def _say(self, line: str) -> None:
        print(f"webhook: {line}", flush=True)
        if self.stats_file is not None:
            with self.lock:
                write_atomic(self.stats_file, json.dumps(self.stats).encode())


def handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: object) -> None:
            pass

        def do_POST(self) -> None:
            try:
                n = int(self.headers.get("content-length", ""))
            except ValueError:
                n = -1
            if self.path != "/hook" or not 0 <= n <= MAX_BODY:
                status, answer = (404 if self.path != "/hook" else 413), b""
                self.close_connection = True
            else:
                status, answer = receiver.take(self.headers, self.rfile.read(n))
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    return Handler


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="demo_receiver", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", type=Path, required=True, help="its certificate chain (PEM)")
    p.add_argument("--key", type=Path, required=True)
    p.add_argument("--secret-file", type=Path, required=True, help="the connector's signing secret (whsec_...)")
    p.add_argument("--stats", type=Path, help="a JSON summary, rewritten at each delivery")
    a = p.parse_args(argv)
    receiver = Receiver(a.secret_file, a.stats)
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(a.cert, a.key)
        server = ThreadingHTTPServer((a.address, a.port), handler(receiver))
    except (OSError, ssl.SSLError) as e:
        print(f"demo_receiver: cannot serve on {a.address}:{a.port}: {e}", file=sys.stderr)
        return 1
    server.daemon_threads = True
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(f"webhook: receiver listening on https://{a.address}:{a.port}/hook", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
