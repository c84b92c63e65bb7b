"""A cloud service's one background thread: started, and stopped with a bounded join.

What the receiver's pacer and stored notices, the webhooks' and the MQTT connectors' workers share:
a stop event their loops wait on, a daemon thread, a join of at most `JOIN_S`. Does not: run
the loop (each service has its own), restart a thread that died.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Background:
    """The thread of a service (a mixin). The constructor does no I/O."""

    JOIN_S = 30.0  # how long `stop` waits for the loop to end

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        """Run `target(*args)` in the service's thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the loop, and wait for it at most `JOIN_S`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.JOIN_S)
            self._thread = None
