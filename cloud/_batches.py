"""The receiver's batches: decoded, matched with their point table (or parked until it comes), stored
several a transaction, and what the monitor and the counters learn from each once it is stored.

A batch whose point table the platform does not know is parked (kept in the store) and the Box is
asked for its table on `boxes/<id>/down/table` (at most once in `ASK_TABLE_S` per Box and table):
a Box sends its retained table only when the broker lacks it (`boxd.pointtable`), so a platform
that lost it (a restored database) must ask. A group of batches goes to the store in one
transaction (`Store.store_batches`); when the database refuses the group, each batch is stored
alone, so that a bad one costs only itself. No network I/O of its own (it publishes through the
receiver).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cloud.monitor import COMM_FAULTS, Monitor
from cloud.store import Incoming, Outcome, PointTable, Store
from proto import wire
from proto.downlink import TableRequest
from proto.errors import WireError
from proto.topics import Down

log = logging.getLogger("boxcloud.receiver")

MAX_PARKED = 1000  # batches per Box waiting for their point table
ASK_TABLE_S = 60.0  # a Box asked for a missing point table at most once in this time (per table)


@dataclass
class Counters:
    """What the receiver has done, for logs, tests and benchmarks."""

    batches: int = 0
    samples: int = 0
    duplicates: int = 0
    parked: int = 0
    tables_asked: int = 0  # requests for a missing point table sent to Boxes
    rejected: int = 0
    store_errors: int = 0  # messages not acknowledged because the store (or an unforeseen failure) refused
    group_failures: int = 0  # groups the database refused, stored again a batch at a time
    last_rejection: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class Batches:
    """The batches' part of the receiver. The constructor does no I/O."""

    def __init__(self, store: Store, monitor: Monitor, counters: Counters,
                 publish_down: Callable[[str, Down, bytes], bool]) -> None:
        self.store, self.monitor, self.counters = store, monitor, counters
        self._publish_down = publish_down
        self._asked: dict[tuple[str, int], float] = {}  # (Box, table id) -> when it was last asked for

    def data(self, box_id: str, payload: bytes) -> None:
        """A batch alone (a parked one, one put aside by the pacer, a test's): decoded and stored.

        Raises:
            WireError: the batch is malformed or does not fit its table.
            StoreError: the store could not take it.
        """
        item = self.incoming(box_id, payload)
        if item is not None:
            self.stored(item, self.store_group([item])[0])

    def incoming(self, box_id: str, payload: bytes) -> Incoming | None:
        """A batch decoded with its table, ready to store; None when it was parked (no table yet).

        Raises:
            WireError: malformed, or parked too many.
            StoreError: it could not be parked.
        """
        batch = wire.decode_batch(payload)
        table = self.store.table(box_id, batch.table_id)
        if table is None:
            self._ask_table(box_id, batch.table_id)
            if not self.store.park(box_id, batch.table_id, payload, MAX_PARKED):
                raise WireError(f"batch for unknown point table {batch.table_id:08x}, and {MAX_PARKED} already wait")
            with self.counters.lock:
                self.counters.parked += 1
            return None
        if batch.base_ts_ms == 0:
            log.warning("batch %d from %s has no trustworthy time: stored at its arrival time", batch.seq, box_id)
            batch = dataclasses.replace(batch, base_ts_ms=int(time.time() * 1000))
        return Incoming(box_id, batch, table, hashlib.sha256(payload).digest()[:16], payload)

    def store_group(self, items: list[Incoming]) -> list[Outcome | Exception]:
        """Store batches in one transaction; each one's outcome, or the error that refused it alone.
        A group the database refuses is stored again a batch at a time."""
        try:
            return list(self.store.store_batches(items))
        except Exception as e:  # noqa: BLE001 (each batch alone says its own)
            if len(items) == 1:
                return [e]
            log.warning("a group of %d batches was refused (%s): storing them one at a time", len(items), e)
            with self.counters.lock:
                self.counters.group_failures += 1
        out: list[Outcome | Exception] = []
        for item in items:
            try:
                out += self.store.store_batches([item])
            except Exception as e:  # noqa: BLE001 (the caller handles it as that message's failure)
                out.append(e)
        return out

    def stored(self, item: Incoming, outcome: Outcome | Exception) -> None:
        """What a stored batch tells the monitor and the counters (after its commit).

        Raises:
            the batch's error (its `outcome`), or StoreError.
        """
        if isinstance(outcome, Exception):
            raise outcome
        box_id, batch = item.box_id, item.batch
        if outcome is Outcome.STORED:
            self.monitor.on_devices(box_id, device_counts(batch, item.table))
        with self.counters.lock:
            if outcome is Outcome.STORED:
                self.counters.batches += 1
                self.counters.samples += sum(len(g.values) for g in batch.groups)
            else:
                self.counters.duplicates += 1
        if outcome is not Outcome.STORED:
            self.store.ack_again(box_id)  # sent again: the Box may have missed its stored notice
        if outcome is Outcome.CONFLICT:
            self.monitor.on_conflict(box_id, batch.epoch, batch.seq)

    def _ask_table(self, box_id: str, table_id: int) -> None:
        """Ask a Box for a point table the platform lacks (once in `ASK_TABLE_S`; the parked batches
        are stored when it comes)."""
        now = time.monotonic()
        with self.counters.lock:
            if now - self._asked.get((box_id, table_id), -ASK_TABLE_S) < ASK_TABLE_S:
                return
            self._asked = {k: t for k, t in self._asked.items() if now - t < ASK_TABLE_S}  # bounded
            self._asked[box_id, table_id] = now
            self.counters.tables_asked += 1
        if self._publish_down(box_id, Down.TABLE, TableRequest(table_id).encode()):
            log.info("Box %s sent a batch of point table %08x, unknown here: asked for it", box_id, table_id)


def device_counts(batch: wire.Batch, table: PointTable) -> dict[str, tuple[int, int]]:
    """(samples with a communication fault, samples) of each device in a stored batch.

    A group is a run of consecutive points, mostly of one device: counted a device run at a
    time, not a sample at a time.
    """
    out: dict[str, tuple[int, int]] = {}
    devices, run_end = table.devices, table.run_end
    for g in batch.groups:
        i, end = g.first, g.first + len(g.values)
        while i < end:
            j = min(run_end[i], end)
            bad = sum(1 for k, code in g.faults.items() if i <= g.first + k < j and code in COMM_FAULTS)
            was_bad, was_n = out.get(devices[i], (0, 0))
            out[devices[i]] = (was_bad + bad, was_n + j - i)
            i = j
    return out
