"""`DeviceTask`: one BACnet device's schedule: find it, subscribe, poll, take COV.

Does: locate the device (Who-Is for its instance when it has no configured address,
again after it stops answering; a directed Who-Is otherwise, to learn its max-APDU
and segmentation), keep its COV subscriptions (`_cov` decides when), poll every
point that COV does not cover once per poll interval, in ReadPropertyMultiple
batches (`_plan`) or, for a device that rejects RPM, ReadProperty one by one,
and hand every reading to `emit`. A device fault only sets this device's samples'
quality; an unanswered request ends the cycle's other requests at once (they would
time out too), so a silent device costs one timeout per cycle. Does not: bind
sockets or encode requests (`_stack`), or own other devices.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence

from drivers._types import Emit, Quality, Sample, Value
from drivers.bacnet._config import BacnetDevice, BacnetPoint, split_address
from drivers.bacnet._cov import CovTracker, Subscription, SubState
from drivers.bacnet._names import (
    COV_OBJECT_TYPES,
    object_type_number,
    property_number,
    unit_symbol,
    units_name,
    value_kind,
)
from drivers.bacnet._plan import PropertyRead, plan_batches, response_budget, shrink
from drivers.bacnet._stack import OWN_MAX_APDU, OWN_MAX_SEGMENTS, IAm, Reading, Ref, Stack, is_too_big, is_unsupported
from drivers.bacnet.errors import DeviceRefusedError, NoAnswerError

log = logging.getLogger("drivers.bacnet")

DEFAULT_MAX_APDU = 480  # assumed until the device's I-Am says otherwise
Clock = Callable[[], float]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class DeviceTask:
    """Reads one device; `run()` owns its schedule. Point indexes are within the device."""

    def __init__(
        self, device: BacnetDevice, stack: Stack, *, port: int, first_pid: int, clock: Clock = time.monotonic
    ) -> None:
        """Prepare the device's reads and subscriptions; no I/O."""
        self.device = device
        self.stack = stack
        self.clock = clock
        self.names = [f"{device.name}.{p.name}" for p in device.points]
        self.refs = [Ref(p.object.type, p.object.instance, p.property) for p in device.points]
        self.reads = [_property_read(p) for p in device.points]
        self.pinned: str | None = None
        if device.address is not None:
            host, own_port = split_address(device.address)
            self.pinned = f"{host}:{own_port or port}"
        self.address = self.pinned
        self.max_apdu, self.segmentation = DEFAULT_MAX_APDU, "no-segmentation"
        self.budget: int | None = None  # set smaller when the device found answers too big
        self.rpm: bool | None = None  # None: not known yet
        self.units: dict[int, str] = {}
        self.values: list[Value] = [None] * len(self.names)
        self.qualities: list[Quality] = [Quality.NOT_CONNECTED] * len(self.names)
        self.cycles = 0
        self.notifications = 0
        self.wake = asyncio.Event()
        self._silent = 0  # cycles in a row without any answer
        self._units_done = False
        self._who_is_sent = False
        self._locating = False
        self._last_restart = -math.inf
        self._next_poll = 0.0
        self.cov = CovTracker(
            self._subscriptions(first_pid), lifetime_s=device.cov_lifetime_s,
            request_time_s=stack.request_time_s, poll_interval_s=device.poll_interval_s,
        )

    def _subscriptions(self, first_pid: int) -> list[Subscription]:
        if self.device.cov != "auto":
            return []
        by_object: dict[tuple[str, int], list[int]] = {}
        for i, ref in enumerate(self.refs):
            if ref.property == "present-value" and ref.object_type in COV_OBJECT_TYPES:
                by_object.setdefault((ref.object_type, ref.instance), []).append(i)
        return [Subscription(first_pid + n, tuple(ix)) for n, ix in enumerate(by_object.values())]

    # -- the schedule -----------------------------------------------------------------

    async def run(self, emit: Emit, start_delay_s: float = 0.0) -> None:
        """Poll and subscribe until cancelled; never raises for a device fault."""
        await self._sleep(start_delay_s)
        while True:
            if self.address is None or not self._who_is_sent:
                await self._locate()
                if self.address is None:
                    await self._set_all(Quality.NO_ANSWER, emit)
                    await self._sleep(self.device.poll_interval_s)
                    continue
            if not self._units_done:
                await self._learn_units()
            await self._subscribe_due()
            now = self.clock()
            if now >= self._next_poll:
                covered = self.cov.covered(now)
                await self._poll([i for i in range(len(self.names)) if i not in covered], emit)
                self._next_poll += self.device.poll_interval_s
                if self._next_poll <= now:  # first cycle, or late: no catching up
                    self._next_poll = now + self.device.poll_interval_s
            wake_at = min(self._next_poll, self.cov.next_due() or math.inf)
            await self._sleep(wake_at - self.clock())

    async def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        self.wake.clear()
        try:
            async with asyncio.timeout(seconds):
                await self.wake.wait()
        except TimeoutError:
            pass

    async def _locate(self) -> None:
        """Who-Is for the device's instance: broadcast, or to its configured address."""
        self._locating = True
        try:
            found = await self.stack.who_is(
                self.device.device_instance, self.device.device_instance, self.pinned,
                max(1.0, self.stack.request_time_s),
            )
        finally:
            self._locating = False
        self._who_is_sent = True
        if found:
            self.i_am(found[0], solicited=True)
        elif self.pinned is None:
            log.warning("bacnet device %s: no I-Am for instance %d", self.device.name, self.device.device_instance)

    def i_am(self, i_am: IAm, *, solicited: bool = False) -> None:
        """The device announced itself: learn its address and limits; after an unsolicited
        I-Am (as a device sends when it starts) send the subscriptions again."""
        self.max_apdu, self.segmentation = i_am.max_apdu, i_am.segmentation
        if self.pinned is not None and i_am.address != self.pinned:
            log.warning("bacnet device %s: I-Am from %s, but its address is configured as %s",
                        self.device.name, i_am.address, self.pinned)
        elif self.address != i_am.address:
            if self.address is not None:
                log.info("bacnet device %s: moved from %s to %s", self.device.name, self.address, i_am.address)
            self.address = i_am.address
        if not solicited and not self._locating:
            now = self.clock()
            if now - self._last_restart >= max(10.0, self.device.poll_interval_s):
                self._last_restart = now
                self.cov.restarted(now)
            self.wake.set()

    # -- reading ----------------------------------------------------------------------

    async def _poll(self, indexes: Sequence[int], emit: Emit) -> None:
        if indexes:
            readings = await self.read(indexes)
            ts = now_ms()
            await emit([Sample(self.names[i], ts, r.value, r.quality) for i, r in zip(indexes, readings, strict=True)])
            if all(r.quality is Quality.NO_ANSWER for r in readings):
                self._silent += 1
                if self._silent == 1:
                    log.warning("bacnet device %s (%s): not answering", self.device.name, self.address)
                if self._silent >= 2 and self.pinned is None:
                    self.address = None  # find it again: it may have moved
            else:
                if self._silent:
                    log.info("bacnet device %s (%s): answering again", self.device.name, self.address)
                    self.cov.device_back(self.clock())
                self._silent = 0
        self.cycles += 1

    async def read(self, indexes: Sequence[int]) -> list[Reading]:
        """Read these points now: RPM batches, or RP one by one for a device without RPM."""
        readings = await self._read_refs([self.refs[i] for i in indexes], [self.reads[i] for i in indexes])
        for i, r in zip(indexes, readings, strict=True):
            self.values[i], self.qualities[i] = r.value, r.quality
        return readings

    async def _read_refs(self, refs: Sequence[Ref], reads: Sequence[PropertyRead]) -> list[Reading]:
        if self.address is None:
            return [Reading(None, Quality.NO_ANSWER, "device not found (no I-Am)")] * len(refs)
        address = self.address
        got: dict[int, Reading] = {}
        if self.rpm is not False:
            await self._read_multiple(address, refs, reads, got)
        rest = [n for n in range(len(refs)) if n not in got]
        for k, n in enumerate(rest):
            got[n] = reading = await self.stack.read_property(address, refs[n])
            if reading.quality is Quality.NO_ANSWER:  # the rest would time out too
                got.update((m, reading) for m in rest[k + 1 :])
                break
        return [got[n] for n in range(len(refs))]

    def _budget(self) -> int:
        budget = response_budget(self.max_apdu, self.segmentation, OWN_MAX_APDU, OWN_MAX_SEGMENTS)
        return min(budget, self.budget) if self.budget is not None else budget

    async def _read_multiple(
        self, address: str, refs: Sequence[Ref], reads: Sequence[PropertyRead], got: dict[int, Reading]
    ) -> None:
        """RPM batches into `got` (by position); leaves out what RP must read (RPM not supported)."""
        queue = self._plan(reads, range(len(refs)))
        while queue:
            batch = queue.pop(0)
            try:
                readings = await self.stack.read_multiple(address, [refs[n] for n in batch])
            except NoAnswerError as e:
                failed = Reading(None, Quality.NO_ANSWER, str(e))
                got.update((n, failed) for b in [batch, *queue] for n in b)
                return
            except DeviceRefusedError as e:
                if is_unsupported(e) and self.rpm is not True:
                    log.info("bacnet device %s: no ReadPropertyMultiple (%s): reading one property at a time",
                             self.device.name, e)
                    self.rpm = False
                    return
                if is_too_big(e) and len(batch) > 1:
                    self.budget = shrink(self._budget())
                    log.info("bacnet device %s: answer too big (%s): at most %d bytes per answer now",
                             self.device.name, e, self.budget)
                    queue[:0] = self._plan(reads, batch)
                    continue
                failed = Reading(None, Quality.DEVICE_EXCEPTION, str(e))
                got.update((n, failed) for n in batch)
                continue
            self.rpm = True
            got.update(zip(batch, readings, strict=True))

    def _plan(self, reads: Sequence[PropertyRead], positions: Sequence[int]) -> list[list[int]]:
        """Batches of `positions` (indexes into `reads`) that fit the device."""
        chosen = [reads[n] for n in positions]
        max_request = min(self.max_apdu, OWN_MAX_APDU)
        batches = plan_batches(chosen, max_request=max_request, max_response=self._budget())
        return [[positions[j] for j in b] for b in batches]

    async def _learn_units(self) -> None:
        """Read the units of the points configured without one (once, on first contact)."""
        want = [i for i, p in enumerate(self.device.points)
                if p.unit is None and value_kind(p.object.type, "units") is not None]
        self.units = {i: p.unit for i, p in enumerate(self.device.points) if p.unit is not None}
        if not want or self.address is None:
            self._units_done = self.address is not None
            return
        refs = [Ref(self.refs[i].object_type, self.refs[i].instance, "units") for i in want]
        units = property_number("units") or 0
        reads = [PropertyRead(self.reads[i].object_type, self.reads[i].instance, units, "uint32") for i in want]
        readings = await self._read_refs(refs, reads)
        for i, r in zip(want, readings, strict=True):
            if r.quality is Quality.GOOD and isinstance(r.value, int):
                self.units[i] = unit_symbol(units_name(r.value))
        self._units_done = any(r.quality is not Quality.NO_ANSWER for r in readings)

    async def _set_all(self, quality: Quality, emit: Emit) -> None:
        ts = now_ms()
        self.values = [None] * len(self.names)
        self.qualities = [quality] * len(self.names)
        await emit([Sample(name, ts, None, quality) for name in self.names])
        self.cycles += 1

    # -- COV --------------------------------------------------------------------------

    async def _subscribe_due(self) -> None:
        if self.address is None:
            return
        for sub in self.cov.due(self.clock()):
            ref = self.refs[sub.points[0]]
            renewal = sub.state is SubState.ACTIVE
            try:
                await self.stack.subscribe(
                    self.address, ref, sub.process_id, self.device.cov_lifetime_s, self.device.cov_confirmed
                )
            except NoAnswerError:
                for other in self.cov.due(self.clock()):  # the rest would time out too
                    self.cov.unanswered(other, self.clock())
                log.warning("bacnet device %s: COV %s of %s not answered: polling it",
                            self.device.name, "renewal" if renewal else "subscription", self._obj(ref))
                return
            except DeviceRefusedError as e:
                if is_unsupported(e):
                    log.info("bacnet device %s: no COV (%s): polling every %g s",
                             self.device.name, e, self.device.poll_interval_s)
                    self.cov.refuse_all(self.clock())
                    return
                log.info("bacnet device %s: COV of %s refused (%s): polling it", self.device.name, self._obj(ref), e)
                self.cov.refused(sub, self.clock())
                continue
            if not renewal:
                log.debug("bacnet device %s: subscribed to %s", self.device.name, self._obj(ref))
            self.cov.accepted(sub, self.clock())

    @staticmethod
    def _obj(ref: Ref) -> str:
        return f"{ref.object_type},{ref.instance}"

    async def notified(self, address: str, process_id: int, values: list[tuple[str, Reading]], emit: Emit) -> bool:
        """A COV notification for one of our subscriptions; False if it is not ours. Returns once
        its readings are emitted (a confirmed notification is acknowledged only then)."""
        sub = self.cov.subscriptions.get(process_id)
        if sub is None or address != self.address:
            return False
        self.notifications += 1
        readings = dict(values)
        ts = now_ms()
        samples = []
        for i in sub.points:
            r = readings.get(self.refs[i].property)
            if r is not None:
                self.values[i], self.qualities[i] = r.value, r.quality
                samples.append(Sample(self.names[i], ts, r.value, r.quality))
        if samples:
            await emit(samples)
        return True


def _property_read(p: BacnetPoint) -> PropertyRead:
    return PropertyRead(
        object_type_number(p.object.type) or 0, p.object.instance, property_number(p.property) or 0, p.kind
    )
