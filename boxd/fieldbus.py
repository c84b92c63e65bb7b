"""The field buses of the running configuration: their sources, point table and tasks.

`FieldBuses` owns what one configuration runs: one `PointSource` per bus (a Modbus TCP
device, a serial line, a BACnet network), the point table they make (its id stamps every
group queued; it is published, retained, before the data), the bus tasks (``bus:<name>``,
started and stopped through the supervisor), and the readings' health since the
configuration started (good readings, faults by quality, buses with a good reading), which
a configuration's probation and the update trial read.

A bus hands its readings to `emitter`'s callback: grouped (`boxd.grouping`), filtered by the
report-on-change rules (`boxd.onchange`: readings unchanged become spans), written by the
queue's thread, and the callback returns once they are on disk (the bus waits for it before
its next request). A reading of a point marked urgent (`urgent`, the configuration's
``urgent = true``) wakes the sending task with `urgent` rather than `wake`: it is sent at once,
not after the batch delay. Past the queue's limit the oldest readings are evicted, never a batch in
flight, and an ``evicted`` event says which.

`replace` runs another configuration without a restart: the bus tasks stop (each closes its
bus), new sources start with a new table; the durable queue goes on (a batch never mixes
table ids: `Queue.seal`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Collection, Sequence

import boxconfig as config
from boxconfig.report import report_rules
from boxd import grouping
from boxd._queuesql import Group
from boxd.clock import Clock
from boxd.commands import Buses, buses_of
from boxd.forwarder import ranges
from boxd.onchange import OnChange
from boxd.queue import Queue
from boxd.supervisor import Supervisor, TaskFactory
from drivers import Emit, PointInfo, PointSource, Sample
from drivers.modbus import ModbusRtuSource, ModbusTcpDevice, ModbusTcpSource
from proto import wire
from proto.errors import WireError
from proto.uplink import Evicted, decode_event

log = logging.getLogger("boxd")

SLOT_POINTS = 2000  # the most readings that Modbus TCP devices polled at one instant may bring


def tcp_phase_slots(devices: Sequence[ModbusTcpDevice]) -> int:
    """In how many phases of the poll interval to spread the Modbus TCP devices (one bus each).

    Devices in one phase are polled together: their timers fire at once and the event loop
    serves them in the same wake-ups, which costs least CPU per reading. Too many readings at
    one instant make a burst that every later stage (queue, batch, broker, cloud) queues
    behind, so the devices are spread over as many phases as it takes to keep each phase
    under `SLOT_POINTS` readings (measured: 10 x 100 points in one phase, 0.013 CPU s per
    1,000 points; one phase each, 0.038; 50 x 200 in one phase, latency p99 161 ms, in five,
    see docs/performance.md).
    """
    points = sum(len(d.points) for d in devices)
    return max(1, min(len(devices), math.ceil(points / SLOT_POINTS)))


def make_sources(cfg: config.BoxConfig) -> list[PointSource]:
    """One source per configured bus; BACnet's stack is imported only when a network is configured."""
    tcp = cfg.modbus_tcp
    slots = tcp_phase_slots(tcp)
    sources: list[PointSource] = [ModbusTcpSource(d, phase=(k % slots) / slots) for k, d in enumerate(tcp)]
    sources += [ModbusRtuSource(line) for line in cfg.modbus_rtu]
    if cfg.bacnet:
        from drivers.bacnet import BacnetSource

        sources += [BacnetSource(n) for n in cfg.bacnet]
    return sources


class FieldBuses:
    """The running configuration's buses. The constructor does no I/O; `use` builds the first."""

    def __init__(self, queue: Queue, clock: Clock, supervisor: Supervisor, *,
                 wake: Callable[[], None], in_flight: Callable[[], Collection[int]],
                 publish_table: Callable[[bytes], None], urgent: Callable[[], None] | None = None,
                 read_at: Callable[[int], None] = lambda _: None,
                 shape: Callable[[config.BoxConfig], config.BoxConfig] = lambda cfg: cfg,
                 before_replace: Callable[[config.BoxConfig], Awaitable[None]] | None = None) -> None:
        self.queue = queue
        self.clock = clock
        self.cfg = config.BoxConfig()
        self.sources: list[PointSource] = []
        self.points: Buses = buses_of([])  # what commands run against
        self.table_id = 0
        self.table = b""  # the encoded point table (retained on ``up/meta``)
        self.onchange = OnChange([])  # report on change, for the running table
        self.good = 0  # good readings since the running configuration started
        self.faults: dict[int, int] = {}  # quality -> count, since the running configuration started
        self.polling: set[str] = set()  # buses with a good reading since the running configuration started
        self.urgent: frozenset[int] = frozenset()  # table indices of the points marked urgent
        self.urgent_names: frozenset[str] = frozenset()  # and their names
        self._supervisor = supervisor
        self._wake = wake  # the sending task: readings or an event are queued
        self._urgent = urgent or wake  # the sending task: an urgent reading is queued (send it now)
        self._read_at = read_at  # the sending task: the oldest reading queued was read then (system clock, ms)
        self._in_flight = in_flight
        self._publish_table = publish_table
        # the modem's say (boxd.cellular): the configuration as run (slower points while saving data),
        # and its own part of a configuration, applied before the buses are replaced
        self._shape, self._before_replace = shape, before_replace

    def use(self, cfg: config.BoxConfig, sources: list[PointSource] | None = None) -> None:
        """Make `cfg` (its buses: `sources`, or built from it) the running one; its bus tasks
        start with the supervisor (or at once, when it runs)."""
        self.cfg = cfg
        self.queue.max_samples = cfg.queue.max_samples
        self.sources = make_sources(self._shape(cfg)) if sources is None else sources
        table: list[PointInfo] = [p for s in self.sources for p in s.points()]
        self.table_id = wire.table_id(table)
        self.onchange = OnChange(report_rules(cfg, [p.name for p in table]))
        self.table = wire.encode_table(table)
        self.points = buses_of(self.sources)
        self.urgent_names = cfg.urgent_points()
        self.urgent = frozenset(i for i, p in enumerate(table) if p.name in self.urgent_names)
        self.good, self.faults, self.polling = 0, {}, set()
        first = 0
        for src in self.sources:
            self._supervisor.start(f"bus:{src.name}", self._bus_task(src, first))
            first += len(src.points())

    async def replace(self, cfg: config.BoxConfig) -> None:
        """Run `cfg` from now on, without a restart (see the module's docstring)."""
        await self._supervisor.stop([n for n in self._supervisor.names() if n.startswith("bus:")])
        if self._before_replace is not None:
            await self._before_replace(cfg)
        self.use(cfg)
        self._publish_table(self.table)
        log.info("configuration in use: %d bus(es), %d point(s)", len(self.sources), len(self.points.source_of))

    def _bus_task(self, src: PointSource, first: int) -> TaskFactory:
        emit = self.emitter(src, first)

        async def run() -> None:
            await src.run(emit)

        return run

    def emitter(self, src: PointSource, first: int) -> Emit:
        """The callback `src` hands its readings to (its points start at table index `first`)."""
        index = {p.name: first + i for i, p in enumerate(src.points())}
        mine = range(first, first + len(index))
        urgent = frozenset(i for i in self.urgent if i in mine)  # empty for most buses: no cost per reading
        clock, queue = self.clock, self.queue

        async def emit(samples: Sequence[Sample]) -> None:
            got = grouping.group(samples, index)
            for q, n in got.faults.items():
                self.faults[q] = self.faults.get(q, 0) + n
            self.good += got.good
            if got.good:
                self.polling.add(src.name)
            onchange = self.onchange
            kept = onchange.filter(got.groups)
            stored = [(clock.stored_time(ts), f, v, q) for ts, f, v, q in kept]
            # written by the queue's thread, with other buses' readings: the bus goes on once they are on disk
            written = queue.put_many(self.table_id, stored, clock.timebase())
            if kept:
                self._read_at(min(g[0] for g in kept))  # its batch delay runs from the reading, not from now
            # the sending task's seal is a later write of the same thread: it takes these
            if urgent and _sends_any(kept, urgent):
                self._urgent()  # an urgent point's new value (not a span saying it is unchanged)
            else:
                self._wake()
            try:
                await written
            except BaseException:
                onchange.reset()  # what it took as sent may not be queued
                raise
            if queue.samples > queue.max_samples:
                await self._evict()

        return emit

    async def _evict(self) -> None:
        ts, epoch = self.clock.now_ms(), self.queue.epoch
        self.onchange.reset()  # before the eviction is written: no span queued from now refers to what it takes

        def event(n: int, total: int, seqs: list[int]) -> bytes:  # queued with the eviction, in its transaction
            return Evicted(ts, n, total, ranges(seqs), epoch).encode()

        n, _ = await self.queue.enforce_limit(self._in_flight, event, merge_evictions)
        if n:
            self.onchange.reset()
            log.warning("queue full (%d samples): evicted the %d oldest", self.queue.max_samples, n)
            self._wake()  # its event is queued


MERGED_RANGES = 64  # an eviction event says at most this many ranges of batch numbers (a few KB)


def merge_evictions(older: bytes, newer: bytes) -> bytes | None:
    """Two eviction events of one queue epoch as one (the samples added, the newer total, the batch
    numbers of both), or None when `older` is another event, of another epoch, or the ranges would
    be too many. Pure."""
    try:
        a, b = decode_event(older), decode_event(newer)
    except WireError:
        return None
    if not (isinstance(a, Evicted) and isinstance(b, Evicted)) or a.epoch != b.epoch:
        return None
    seqs: list[tuple[int, int]] = []
    for first, last in sorted((*a.seqs, *b.seqs)):
        if seqs and first <= seqs[-1][1] + 1:
            seqs[-1] = (seqs[-1][0], max(seqs[-1][1], last))
        else:
            seqs.append((first, last))
    if len(seqs) > MERGED_RANGES:
        return None
    return Evicted(b.ts_ms, a.samples + b.samples, max(a.total, b.total), seqs, b.epoch).encode()


def _sends_any(groups: Sequence[Group], indices: Collection[int]) -> bool:
    """Whether `groups` carry a value (not an unchanged span) of a point at one of `indices`."""
    return any(not isinstance(values, int) and any(first + k in indices for k in range(len(values)))
               for _, first, values, _ in groups)
