"""The cloud's HTTPS endpoint for Boxes: enrollment, renewal, the TUF repository (FastAPI).

    GET  /v1/health            {"ok": true}
    POST /v1/enroll            {"token", "csr", "serial"?}      no client certificate needed
    POST /v1/renew             {"csr"}                          the Box's certificate
    POST /v1/renew/confirm     {}                               the Box's (renewed) certificate
    GET  /tuf/{metadata,targets}/<file>                         the Box's certificate

Errors are `{"error": "..."}` with 400/401/403/404/411/413/429/503. Served by `cloud.https`
(connection cap, deadlines, the client certificate in the scope). What is not authenticated
is kept cheap: a request body is at most 16 KiB, read under the request deadline, parsed as
JSON with nesting refused (no traceback, no crash: a 400); a token is only read from the
database, never written, until it is known to be good (`cloud.store._credentials`); failed
enrollments are limited per client address (`FAILED_RATE` a second, `FAILED_BURST` in a row,
then 429) and logged as one line per address per minute, not one per request. The database
and the broker are used from a small thread pool (`WORKERS`), never from the event loop.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from cloud import ota_server
from cloud.enroll import Enroller
from cloud.errors import EnrollmentError, PkiError, StoreError
from cloud.https import HttpsServer
from cloud.pacing import Budgets, Lru
from trust import tls

log = logging.getLogger("boxcloud.enroll")

MAX_BODY = 16 * 1024
WORKERS = 4
FAILED_RATE, FAILED_BURST = 1 / 6, 10  # failed enrollments per client address: 10 in a row, then 1 per 6 s
LOG_EVERY_S = 60.0
T = TypeVar("T")


class _Refusals:
    """Failed enrollment attempts per client address: limited, and logged in summary."""

    def __init__(self) -> None:
        self.budget = Budgets(FAILED_RATE, FAILED_BURST, max_keys=10_000)
        self._seen: Lru[str, tuple[float, int, str]] = Lru(10_000)  # address -> (logged at, since, last why)

    def blocked(self, source: str) -> bool:
        return self.budget.tokens(source, time.monotonic()) < 1

    def note(self, source: str, why: str) -> None:
        now = time.monotonic()
        self.budget.admit(source, 1, now)
        logged, n, _ = self._seen.get(source) or (now - LOG_EVERY_S, 0, "")
        if now - logged >= LOG_EVERY_S:
            log.warning("%d refused enrollment request(s) from %s in the last minute (last: %s)", n + 1, source, why)
            self._seen.put(source, (now, 0, why))
        else:
            self._seen.put(source, (logged, n + 1, why))


def make_app(enroller: Enroller, tuf_repo: Path | None) -> FastAPI:
    """The endpoint's routes over one `Enroller`."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    workers = anyio.CapacityLimiter(WORKERS)
    refusals = _Refusals()

    async def in_worker(fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(fn, *args, limiter=workers)

    def peer(request: Request) -> dict[str, object]:
        cert: dict[str, object] = request.scope.get("extensions", {}).get("tls", {}).get("client_cert_dict", {})
        return cert

    @app.get("/v1/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/v1/enroll")
    async def enroll(request: Request) -> Response:
        source = request.client.host if request.client else "?"
        if refusals.blocked(source):
            return _error(429, "too many refused enrollment requests from this address: wait a minute")
        try:
            body = await _json_body(request)
            token, csr, serial = body["token"], body["csr"], body.get("serial")
            if not (isinstance(token, str) and isinstance(csr, str) and isinstance(serial, str | None)):
                raise EnrollmentError("token, csr and serial must be text", 400)
            return JSONResponse(await in_worker(enroller.enroll, token, csr, serial))
        except KeyError as e:
            refusals.note(source, f"missing {e}")
            return _error(400, f"malformed enrollment request: missing {e}")
        except EnrollmentError as e:
            if e.status in (400, 401, 403, 411, 413):
                refusals.note(source, str(e))
            elif e.status == 503:
                log.error("enrollment failed: %s", e)
            return _error(e.status, str(e))
        except (StoreError, PkiError) as e:
            log.error("enrollment failed: %s", e)
            return _error(503, "the platform cannot enroll Boxes right now")

    @app.post("/v1/renew")
    async def renew(request: Request) -> Response:
        async def act() -> dict[str, object]:
            csr = (await _json_body(request)).get("csr")
            if not isinstance(csr, str):
                raise EnrollmentError("a renewal needs a csr (text)", 400)
            return await in_worker(enroller.renew, peer(request), csr)
        return await _answer(act)

    @app.post("/v1/renew/confirm")
    async def confirm(request: Request) -> Response:
        async def act() -> dict[str, object]:
            await _json_body(request)
            return await in_worker(enroller.confirm, peer(request))
        return await _answer(act)

    @app.get("/tuf/{kind}/{name}")
    async def tuf(request: Request, kind: str, name: str) -> Response:
        try:
            if tuf_repo is None:
                raise EnrollmentError("not found", 404)
            box_id, _ = await in_worker(enroller.box_of, peer(request))
            path = ota_server.resolve(tuf_repo, f"{ota_server.PREFIX}{kind}/{name}")
            if path is None:
                raise EnrollmentError("not found", 404)
        except EnrollmentError as e:
            return _error(e.status, str(e))
        except StoreError as e:
            log.error("cannot serve the update repository: %s", e)
            return _error(503, "the platform cannot serve updates right now")
        log.debug("serving %s to %s", path.name, box_id)
        return FileResponse(path, media_type="application/octet-stream")

    return app


async def _answer(act: Callable[[], Any]) -> Response:
    """Run an authenticated request's action; its refusals as JSON errors."""
    try:
        return JSONResponse(await act())
    except EnrollmentError as e:
        return _error(e.status, str(e))
    except (StoreError, PkiError) as e:
        log.error("request failed: %s", e)
        return _error(503, "the platform cannot do this right now")


async def _json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object, at most MAX_BODY bytes (read under the server's request deadline).

    Raises:
        EnrollmentError: no length (411), too big (413), not a JSON object or nested too deep (400).
    """
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        raise EnrollmentError("a Content-Length is required", 411)
    if not 0 < int(length) <= MAX_BODY:
        raise EnrollmentError(f"the request must be 1..{MAX_BODY} bytes", 413)
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise EnrollmentError(f"the request must be 1..{MAX_BODY} bytes", 413)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as e:  # RecursionError: "[[[[..." nested thousands deep
        raise EnrollmentError(f"malformed request: not JSON ({type(e).__name__})", 400) from None
    if not isinstance(body, dict):
        raise EnrollmentError("malformed request: the body must be a JSON object", 400)
    return body


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class EnrollServer:
    """The HTTPS endpoint, in its own thread. The constructor does no I/O."""

    def __init__(self, enroller: Enroller, cert: Path, key: Path, bind: str, port: int, *,
                 client_ca: Path | None = None, tuf_repo: Path | None = None) -> None:
        self._enroller, self._cert, self._key, self._client_ca = enroller, cert, key, client_ca
        self._tuf_repo, self._bind, self._port = tuf_repo, bind, port
        self._server: HttpsServer | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None
        return self._server.port

    @property
    def connections(self) -> int:
        """Connections open now."""
        return self._server.connections if self._server is not None else 0

    def start(self) -> None:
        """Bind and serve in a thread."""
        ctx = tls.server_context(self._cert, self._key, self._client_ca, client_optional=True)
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT
        self._server = HttpsServer(make_app(self._enroller, self._tuf_repo), ctx, self._bind, self._port)
        self._server.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.stop()
