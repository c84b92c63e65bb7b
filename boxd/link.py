"""The daemon's link to the platform: the current `Uplink`, replaced when the identity changes.

`Link` owns the uplink the daemon uses now (a renewed certificate needs a new MQTT session:
`switch`), says when it is up (`up`, set at each connection), and sends replies to the
platform, waiting for the broker's acknowledgement where it matters (a ``restart``'s "ok" must
be out before the daemon goes). It knows nothing of batches (`boxd.sender`) or of what a
reply says (`proto.replies`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from boxd.uplink import LinkState, Uplink
from proto.topics import Up
from trust.identity import Identity

log = logging.getLogger("boxd")


class Link:
    """The current uplink. The constructor does no I/O; `start` starts the first uplink."""

    def __init__(self, make: Callable[[Identity], Uplink]) -> None:
        self._make = make
        self.uplink: Uplink | None = None
        self.up = asyncio.Event()  # set at each connection (a renewed certificate's trial waits for it)
        self._acks: dict[int, asyncio.Event] = {}

    @property
    def state(self) -> LinkState:
        """What the uplink last saw (a fresh `LinkState` before it starts)."""
        return self.uplink.state if self.uplink is not None else LinkState()

    def connected(self) -> bool:
        """Whether the uplink has a session with the broker now."""
        return self.uplink is not None and self.uplink.state.connected

    async def start(self, ident: Identity) -> None:
        """Make and start the uplink of `ident`."""
        self.uplink = self._make(ident)
        await self.uplink.start()

    async def stop(self, reason: str) -> None:
        """Stop the uplink, telling the platform `reason`."""
        if self.uplink is not None:
            await self.uplink.stop(reason)

    async def switch(self, ident: Identity, trial_s: float) -> bool:
        """Replace the uplink by one with `ident`; whether it connected within `trial_s` (0: not waited for)."""
        old = self.uplink
        self.up.clear()
        if old is not None:
            await old.stop("restarting")  # a new certificate: back in a moment
        await self.start(ident)
        if trial_s <= 0:
            return True
        try:
            async with asyncio.timeout(trial_s):  # not wait_for: 3.11's can swallow a cancellation
                await self.up.wait()
        except TimeoutError:
            return False
        return True

    def publish(self, leaf: Up, payload: bytes, *, qos: int = 1, retain: bool = False) -> int | None:
        """Publish on this Box's `leaf`; the message id, or None when not connected."""
        return self.uplink.publish(leaf, payload, qos=qos, retain=retain) if self.uplink is not None else None

    def reply(self, payload: bytes) -> int | None:
        """Send a reply (``up/replies``); its message id, or None (said in the log) when not connected."""
        mid = self.publish(Up.REPLIES, payload)
        if mid is None:
            log.warning("a reply to the platform is lost: not connected")
        return mid

    def on_connected(self) -> None:
        """The uplink connected."""
        self.up.set()

    def on_ack(self, mid: int) -> None:
        """The broker acknowledged (or refused) message `mid`."""
        waiter = self._acks.get(mid)
        if waiter is not None:
            waiter.set()

    async def wait_acked(self, mid: int, limit_s: float) -> None:
        """Wait (at most `limit_s`) for the broker to acknowledge message `mid`."""
        event = self._acks.setdefault(mid, asyncio.Event())
        try:
            async with asyncio.timeout(limit_s):
                await event.wait()
        except TimeoutError:
            log.warning("no acknowledgement of the reply within %.0f s", limit_s)
        finally:
            self._acks.pop(mid, None)
