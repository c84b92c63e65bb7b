"""The receiver's sender of stored notices (`proto.downlink.StoredNotice`, on ``boxes/<id>/down/stored``).

A thread of the receiver's, started and stopped with it: every `TICK_S` it asks the store which
Boxes' notices are due (`cloud.store._acks`: something new stored, and the Box's interval since its
last notice passed), claims each (one receiver of many wins it) and publishes it, QoS 1 (the Box's
persistent session keeps it while the Box is away). A notice the broker never delivers costs a
resend: the Box sends its batches again once its wait runs out, the copy marks a notice due again,
and it is said once more. Nothing here decides what is stored; the store says it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from cloud._background import Background
from cloud.errors import StoreError
from cloud.store import Store
from proto.topics import Down

log = logging.getLogger("boxcloud.receiver")

TICK_S = 0.5  # how often due notices are looked for (a notice waits at most this beyond its interval)


class Acker(Background):
    """Sends the stored notices that are due. The constructor does no I/O."""

    def __init__(self, store: Store, publish: Callable[[str, Down, bytes], bool]) -> None:
        self.store = store
        self._publish = publish
        super().__init__()
        self.sent = 0  # notices published since start

    JOIN_S = 5.0  # a notice being sent is finished

    def start(self) -> None:
        """Start the thread."""
        self._spawn(self._loop, "stored-notices")

    def send_due(self) -> int:
        """Send every notice due now; how many were sent."""
        n = 0
        for box_id in self.store.acks_due():
            notice = self.store.claim_notice(box_id)
            if notice is not None and self._publish(box_id, Down.STORED, notice.encode()):
                n += 1
        self.sent += n
        return n

    def _loop(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                self.send_due()
            except StoreError as e:
                log.warning("cannot send the stored notices now (%s); trying again", e)
            except Exception:  # the thread's top: it must outlive a bad row
                log.exception("unexpected failure sending the stored notices")
