"""The OAuth token of a connector (`cloud.hooks.client.TokenSource`): one fetch in flight however many
deliveries want a token at once, a refused token dropped only if it is still the one cached.

The token endpoint here is a stand-in (`_Endpoint`, an object with `post`) so that the test holds the
fetch open while the others ask: the real one over HTTPS is tests/integration/test_webhooks.py's."""

from __future__ import annotations

import asyncio
import json

from cloud.hooks.client import Answer, TokenSource


class _Endpoint:
    """A token endpoint that answers when the test lets it."""

    def __init__(self) -> None:
        self.asked = 0
        self.go, self.fetching = asyncio.Event(), asyncio.Event()

    async def post(self, body: bytes, headers: dict[str, str], url: str | None = None) -> Answer:
        self.asked += 1
        self.fetching.set()
        await self.go.wait()
        return Answer(200, json.dumps({"access_token": f"t{self.asked}", "token_type": "Bearer",
                                       "expires_in": 3600}).encode())


def test_one_fetch_in_flight_whoever_asks_and_a_401_drops_only_the_token_it_was_given() -> None:
    async def main() -> None:
        endpoint = _Endpoint()
        tokens = TokenSource(endpoint, "id", "secret")  # type: ignore[arg-type]
        waiting = [asyncio.create_task(tokens.token()) for _ in range(5)]
        await endpoint.fetching.wait()
        for _ in range(20):  # the others had every chance to start a fetch of their own
            await asyncio.sleep(0)
        endpoint.go.set()
        assert await asyncio.gather(*waiting) == ["t1"] * 5
        assert endpoint.asked == 1
        tokens.drop("t0")  # a token it no longer holds: nothing fetched again
        assert await tokens.token() == "t1" and endpoint.asked == 1
        tokens.drop("t1")  # the endpoint refused it: fetched again, once
        assert await tokens.token() == "t2" and await tokens.token() == "t2" and endpoint.asked == 2

    asyncio.run(main())
