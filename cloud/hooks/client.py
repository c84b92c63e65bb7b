"""One connector's HTTPS client: the connection pinned to the address checked, no redirects,
an answer read up to a cap, Basic or OAuth 2.0 client-credentials authentication.

httpx (pinned) over httpcore: httpcore's connection pool takes a network backend, and ours
(`_Pinned`) connects every connection to the one address `cloud.hooks.targets.resolve` checked,
whatever the URL's host says; TLS still checks the certificate against the host *name* (SNI
and hostname verification use the URL's host). So a DNS answer that changes after the check
(rebinding) is never used: the name is resolved again only when the client is rebuilt
(`REPIN_S`), and checked again then. Redirects are not followed (httpx's default, kept), an
answer's body is read up to `MAX_ANSWER` bytes, proxies from the environment are ignored.

`TokenSource` holds one connector's OAuth token: fetched from the customer's token endpoint
(itself checked and pinned like an endpoint) with the client's id and secret (RFC 6749 §4.4,
HTTP Basic), cached, fetched again before it expires (`REFRESH_MARGIN`), one fetch at a time
(callers wait for the fetch under way), dropped on a 401 so that the caller tries once more.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

import httpcore
import httpx

from cloud.hooks import targets
from cloud.hooks.errors import DeliveryError, TargetRefusedError

MAX_ANSWER = 4096  # bytes of an endpoint's answer read (the rest is dropped with the connection)
MAX_TOKEN_ANSWER = 16384
REPIN_S = 300.0  # a client (and its pinned address) is rebuilt, and the name checked again, after this
TIMEOUT = httpx.Timeout(15.0, connect=5.0)
REFRESH_MARGIN = 0.1  # a token is fetched again when less than this share of its life is left (>= 30 s)


class _Pinned(httpcore.AsyncNetworkBackend):
    """Connects to one address, whatever host the connection is for."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109 - httpcore's
                          local_address: str | None = None,
                          socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        return await self._inner.connect_tcp(self.address, port, timeout, local_address, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@dataclass
class Answer:
    status: int
    body: bytes  # at most MAX_ANSWER bytes of it


class PinnedClient:
    """HTTPS to one endpoint (and the address its name had when checked). The constructor does no I/O."""

    def __init__(self, url: str, ctx: ssl.SSLContext, *, reach: targets.Reach = targets.PUBLIC_ONLY,
                 resolver: targets.Resolver = targets.system_resolver,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.target = targets.parse(url, reach)
        self._ctx, self._resolver, self._clock, self._reach = ctx, resolver, clock, reach
        self._client: httpx.AsyncClient | None = None
        self._pinned_at = 0.0
        self.address: str | None = None

    async def _get(self) -> httpx.AsyncClient:
        if self._client is not None and self._clock() - self._pinned_at < REPIN_S:
            return self._client
        await self.aclose()
        address = await asyncio.to_thread(targets.resolve, self.target, self._resolver, self._reach)
        transport = httpx.AsyncHTTPTransport(verify=self._ctx, trust_env=False)
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=self._ctx, max_connections=2, max_keepalive_connections=1, keepalive_expiry=30.0,
            network_backend=_Pinned(address))
        self._client = httpx.AsyncClient(transport=transport, timeout=TIMEOUT, follow_redirects=False,
                                         trust_env=False)
        self.address, self._pinned_at = address, self._clock()
        return self._client

    async def post(self, body: bytes, headers: Mapping[str, str], url: str | None = None) -> Answer:
        """POST `body`; the answer's status and at most MAX_ANSWER bytes of its body.

        Raises:
            TargetRefusedError: the endpoint's name resolves to an address never sent to.
            DeliveryError: no answer (unreachable, TLS refused, timed out).
        """
        client = await self._get()
        try:
            async with client.stream("POST", url or self.target.url, content=body, headers=dict(headers)) as r:
                got = bytearray()
                async for chunk in r.aiter_raw():
                    got += chunk[:MAX_ANSWER - len(got)]
                    if len(got) >= MAX_ANSWER:
                        break
                return Answer(r.status_code, bytes(got))
        except httpx.HTTPError as e:
            await self.aclose()  # a new connection (and a fresh check of the name) next time
            raise DeliveryError(f"{self.target.host}: {_why(e)}") from None
        except ssl.SSLError as e:
            await self.aclose()
            raise DeliveryError(f"{self.target.host}: TLS refused: {e.reason or e}") from None

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


def _why(e: httpx.HTTPError) -> str:
    text = str(e) or type(e).__name__
    if isinstance(e, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in text:
        return f"TLS refused: the certificate is not trusted ({text[:200]})"
    if isinstance(e, httpx.TimeoutException):
        return f"no answer in time ({type(e).__name__})"
    return f"{type(e).__name__}: {text[:200]}"


class TokenSource:
    """One connector's OAuth 2.0 client-credentials token (see the module docstring)."""

    def __init__(self, client: PinnedClient, client_id: str, client_secret: str, scope: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client, self._id, self._secret, self._scope = client, client_id, client_secret, scope
        self._clock = clock
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def token(self) -> str:
        """A valid token: the cached one, or one fetched now (one fetch at a time)."""
        async with self._lock:
            if self._token is None or self._clock() >= self._refresh_at:
                self._token, life = await self._fetch()
                self._refresh_at = self._clock() + life - max(30.0, life * REFRESH_MARGIN)
            return self._token

    def drop(self, token: str) -> None:
        """The endpoint refused `token` (401): fetch another next time (unless one was fetched meanwhile)."""
        if self._token == token:
            self._token = None

    async def _fetch(self) -> tuple[str, float]:
        self.fetches += 1
        form = {"grant_type": "client_credentials", **({"scope": self._scope} if self._scope else {})}
        basic = base64.b64encode(f"{quote_plus(self._id)}:{quote_plus(self._secret)}".encode()).decode()
        answer = await self._client.post(str(httpx.QueryParams(form)).encode(), {
            "content-type": "application/x-www-form-urlencoded", "accept": "application/json",
            "authorization": f"Basic {basic}"})
        if answer.status != 200 or len(answer.body) >= MAX_TOKEN_ANSWER:
            raise DeliveryError(f"the token endpoint answered {answer.status}", status=answer.status)
        try:
            doc = json.loads(answer.body)
        except ValueError:
            raise DeliveryError("the token endpoint's answer is not JSON") from None
        token, kind, life = doc.get("access_token"), str(doc.get("token_type", "")), doc.get("expires_in", 3600)
        if not isinstance(token, str) or not 0 < len(token) <= 4096 or kind.lower() != "bearer":
            raise DeliveryError("the token endpoint's answer has no bearer access_token")
        if isinstance(life, bool) or not isinstance(life, int | float) or not 1 <= life <= 86400 * 7:
            raise DeliveryError("the token endpoint's expires_in is not a number of seconds (1 s to 7 days)")
        return token, float(life)


__all__ = ["Answer", "PinnedClient", "TargetRefusedError", "TokenSource"]
