"""The point table's publication (``up/meta``, retained): sent only when the platform lacks it.

A point table can be tens of kilobytes; a Box on a flaky cell must not send it at every
reconnection. The broker keeps it retained (and persisted) and the platform's receiver stores it,
so the Box sends it:

  - when the running configuration makes a new table;
  - at a connection, when the broker has not acknowledged this very table yet: the Box keeps,
    durably (``<state>/table.sent``), the digest of the last table the broker acknowledged;
  - when the platform asks (``down/table``, `proto.downlink.TableRequest`): it got a batch whose
    table it does not know (its database restored, the retained message lost). Asked again
    within `ASK_INTERVAL_S`, or while the table is on its way, the Box does not send it twice: a
    broken platform cannot make it burn the SIM. Asked for a table it no longer runs (batches
    queued before a configuration changed it), the Box has nothing to send: they stay parked.

The digest covers the encoded table, whatever it holds (names, units, kinds: `proto.wire`), and
the broker it went to (Box id, host, port): a Box provisioned again for another platform sends
its table there. This module knows nothing of what a table says and sends nothing but it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from boxd.link import Link
from boxkit.files import write_atomic
from proto.downlink import decode_table_request
from proto.errors import WireError
from proto.topics import Up

log = logging.getLogger("boxd")

ASK_INTERVAL_S = 30.0  # the platform's requests answered at most once in this time


def digest(table: bytes, broker: str) -> str:
    """The name of an encoded table sent to `broker` ("<box id>@<host>:<port>") in the Box's record."""
    return hashlib.sha256(broker.encode() + b"\0" + table).hexdigest()


class TablePublisher:
    """Owns ``up/meta``. The constructor does no I/O; every method runs on the event loop."""

    def __init__(self, state_dir: Path, link: Link, *, table: Callable[[], bytes], table_id: Callable[[], int],
                 broker: Callable[[], str], clock: Callable[[], float] = time.monotonic) -> None:
        self._record = state_dir / "table.sent"
        self._link, self._table, self._table_id, self._clock = link, table, table_id, clock
        self._broker = broker  # where the uplink goes: "<box id>@<host>:<port>"
        self._acked: str | None = None  # read from the record at the first connection
        self._sending: dict[int, str] = {}  # message id -> digest, published and not acknowledged yet
        self._answered = float("-inf")
        self.sent = 0  # tables published (for tests and benchmarks)

    def connected(self) -> None:
        """A new connection: send the table unless the broker has acknowledged this one already."""
        self._sending.clear()  # a publication of the last connection is not acknowledged any more
        if self._acked is None:
            try:
                self._acked = self._record.read_text().strip()
            except OSError:
                self._acked = ""
        if self._acked != digest(self._table(), self._broker()):
            self._send("the broker does not hold it yet")

    def changed(self) -> None:
        """The running configuration was replaced: send its table (now, or at the next connection)
        unless the broker holds it already (a configuration that changed no point)."""
        if self._sending or self._acked != digest(self._table(), self._broker()):
            self._send("the configuration changed")

    def requested(self, payload: bytes) -> None:
        """The platform asks for the table (``down/table``; untrusted)."""
        try:
            wanted = decode_table_request(payload).table_id
        except WireError as e:
            log.warning("ignoring a malformed table request: %s", e)
            return
        if wanted != self._table_id():
            log.warning("the platform asks for point table %08x, which this Box no longer runs (it runs %08x): "
                        "its batches wait on the platform", wanted, self._table_id())
            return
        now = self._clock()
        if self._sending or now - self._answered < ASK_INTERVAL_S:
            log.info("the platform asks for point table %08x: already sent, not again", wanted)
            return
        self._answered = now
        self._send(f"the platform asked for table {wanted:08x}")

    def acked(self, mid: int, ok: bool) -> None:
        """The broker acknowledged (or refused) message `mid`: if it was the table, remember it."""
        sent = self._sending.pop(mid, None)
        if sent is None or not ok:
            return
        try:
            write_atomic(self._record, (sent + "\n").encode(), 0o600)
        except OSError as e:  # sent again at the next connection: only bytes are lost
            log.warning("cannot record the point table sent: %s", e)
        self._acked = sent

    def _send(self, why: str) -> None:
        table = self._table()
        mid = self._link.publish(Up.META, table, qos=1, retain=True)
        if mid is None:
            return  # not connected: sent at the connection if the broker lacks it
        self._sending[mid] = digest(table, self._broker())
        self.sent += 1
        log.info("point table sent (%d bytes): %s", len(table), why)
