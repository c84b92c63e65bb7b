"""The sending task on the daemon's real queue and forwarder, with the longest batch delay a
configuration may set (60 s, beyond the test's own deadline): an urgent reading is sealed and sent
at once with the ordinary readings queued before it (one batch), an event goes out while ordinary
readings still wait for their delay, and an urgent batch overtakes a full window of backlog.
A batch delay that held any of them would time the test out: a logical assertion, not a timing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from boxconfig import BoxConfig, UplinkSettings
from boxd.daemon import Daemon
from boxd.sender import Lead
from drivers import Sample
from drivers._report import Report
from drivers.modbus import ModbusPoint, ModbusTcpDevice
from proto import wire
from proto.topics import Up
from tests.support.fakebus import FakeBus
from tests.support.fakeident import load_fake
from tests.support.fakeuplink import FakeUplink
from tests.support.wait import eventually, in_loop

# the point "ahu.alarm" is urgent; "ahu.temp" is not (the bus is a fake: the device is never polled)
AHU = ModbusTcpDevice(name="ahu", host="127.0.0.1", poll_interval_s=1.0, points=(
    ModbusPoint(name="temp", address=0), ModbusPoint(name="alarm", address=1, urgent=True)))


async def running(tmp_path: Path, **uplink: int) -> tuple[Daemon, FakeUplink, FakeBus, asyncio.Task[None]]:
    d = Daemon(tmp_path, tmp_path / "unused.toml", uplink=FakeUplink)
    d.queue.open()
    bus = FakeBus("ahu", ["temp", "alarm"])
    d.buses.use(BoxConfig(uplink=UplinkSettings(**{"batch_delay_ms": 60000, **uplink}), modbus_tcp=(AHU,)), [bus])
    await d.link.start(load_fake(tmp_path))
    up = d.link.uplink
    assert isinstance(up, FakeUplink) and up.state.connected
    return d, up, bus, asyncio.create_task(d.sender.run())


def now_ms() -> int:
    """A reading's stamp now, as the buses stamp them: its batch delay runs from then (one stamped a
    minute ago would have waited its 60 s already, and be sealed at once)."""
    return int(time.time() * 1000)


def points_in(payload: bytes) -> list[int]:
    return sorted(g.first + i for g in wire.decode_batch(payload).groups for i in range(len(g.values)))


@in_loop
async def test_an_urgent_reading_leaves_at_once_with_the_ordinary_readings_queued(tmp_path: Path) -> None:
    t0 = now_ms()
    d, up, bus, task = await running(tmp_path)
    assert d.buses.urgent == {1}  # the table index of ahu.alarm
    emit = d.buses.emitter(bus, first=0)
    await emit([Sample("ahu.temp", t0, 21.5)])  # ordinary: waits for the batch delay
    await emit([Sample("ahu.alarm", t0 + 100, 1.0)])  # urgent: everything queued leaves now
    (batch,) = await eventually(lambda: up.on(Up.DATA), "the urgent batch", within=20)
    assert points_in(batch.payload) == [0, 1]  # one batch, not two: the ordinary reading rode along
    task.cancel()
    d.queue.close()


@in_loop
async def test_events_do_not_wait_for_the_batch_delay(tmp_path: Path) -> None:
    t0 = now_ms()
    d, up, bus, task = await running(tmp_path)
    await d.buses.emitter(bus, first=0)([Sample("ahu.temp", t0, 21.5)])
    d.queue.put_event_now(b"an event")
    d.sender.wake()
    await eventually(lambda: up.on(Up.EVENTS), "the event", within=20)
    assert up.on(Up.DATA) == [] and d.queue.depth() == (0, 1)  # the reading still waits for its delay
    task.cancel()
    d.queue.close()


@in_loop
async def test_an_urgent_batch_overtakes_a_full_window_of_backlog(tmp_path: Path) -> None:
    t0 = now_ms()
    d, up, bus, task = await running(tmp_path, inflight_batches=4)
    for i in range(20):  # an outage's worth of readings, one batch each, filling the window
        await d.queue.put(d.buses.table_id, 1_600_000_000_000 + i, 0, [float(i)], {})
        await d.queue.seal(1)
    d.sender.wake()
    await eventually(lambda: len(up.on(Up.DATA)) == 4, "the window to fill")
    await d.buses.emitter(bus, first=0)([Sample("ahu.alarm", t0, 1.0)])
    await eventually(lambda: len(up.on(Up.DATA)) == 5, "the urgent batch", within=20)
    assert points_in(up.on(Up.DATA)[-1].payload) == [1]  # the alarm, past the full window, no ack needed
    task.cancel()
    d.queue.close()


@in_loop
async def test_in_report_on_change_only_a_changed_urgent_value_takes_the_lane(tmp_path: Path) -> None:
    t0 = now_ms()
    d = Daemon(tmp_path, tmp_path / "unused.toml", uplink=FakeUplink)
    d.queue.open()
    bus = FakeBus("ahu", ["temp", "alarm"])
    change = Report(mode="change", deadband=0.0, deadband_pct=0.0, max_age_s=900)
    d.buses.use(BoxConfig(uplink=UplinkSettings(batch_delay_ms=60000), modbus_tcp=(AHU,), report=change), [bus])
    await d.link.start(load_fake(tmp_path))
    up = d.link.uplink
    assert isinstance(up, FakeUplink)
    task = asyncio.create_task(d.sender.run())
    emit = d.buses.emitter(bus, first=0)
    await emit([Sample("ahu.alarm", t0, 1.0)])  # a new value: sent at once
    await eventually(lambda: len(up.on(Up.DATA)) == 1, "the urgent batch", within=20)
    # the same alarm again, unchanged: a span, which waits with the ordinary readings
    await emit([Sample("ahu.temp", t0 + 1000, 21.5), Sample("ahu.alarm", t0 + 1000, 1.0)])
    d.queue.put_event_now(b"an event")  # a wake-up that publishes what is due, and nothing else
    d.sender.wake()
    await eventually(lambda: up.on(Up.EVENTS), "the event", within=20)
    assert len(up.on(Up.DATA)) == 1 and d.queue.depth()[1] > 0  # the unchanged alarm did not seal the batch
    await emit([Sample("ahu.alarm", t0 + 2000, 0.0)])  # changed again: the lane, with what waited
    await eventually(lambda: len(up.on(Up.DATA)) == 2, "the second urgent batch", within=20)
    task.cancel()
    d.queue.close()


@in_loop
async def test_the_batch_delay_runs_from_the_reading_not_from_its_queueing(tmp_path: Path) -> None:
    # an ordinary reading whose poll took the whole 60 s delay (a slow line, a stalled write) waited
    # its delay already: it is sealed at once, not 60 s after it reached the queue
    d, up, bus, task = await running(tmp_path)
    await d.buses.emitter(bus, first=0)([Sample("ahu.temp", int(time.time() * 1000) - 60_000, 21.5)])
    (batch,) = await eventually(lambda: up.on(Up.DATA), "the batch", within=20)
    assert points_in(batch.payload) == [0]
    task.cancel()
    d.queue.close()


def test_the_lead_is_the_smoothed_time_to_the_acknowledgement_and_its_deviation_at_most_a_tenth_of_the_delay(
        ) -> None:
    lead = Lead()
    assert lead.ms(5000) == 0  # nothing measured yet: the whole delay
    lead.note(0.080)
    assert round(lead.ms(5000)) == 80 + 4 * 40  # the first: its time, and half of it as its deviation
    for _ in range(40):
        lead.note(0.040)
    assert 40 <= lead.ms(5000) < 42  # steady: the deviation fades, the time is what batches take
    lead.note(0.120)  # one slow batch (80 ms more): the lead grows by its deviation, not only by an eighth
    assert lead.ms(5000) > 40 + 10 + 4 * 0.25 * 80 - 1
    lead.note(100.0)
    assert lead.ms(5000) == 500 and lead.ms(0) == 0  # never more than a tenth of the delay


@in_loop
async def test_sealing_starts_early_by_the_lead(tmp_path: Path) -> None:
    # the longest delay (15 min), a lead of a tenth of it (90 s): a reading read 811 s ago is due now,
    # not in 89 s (beyond the test's deadline)
    d, up, bus, task = await running(tmp_path, batch_delay_ms=900_000)
    d.sender.lead.note(90.0)
    await d.buses.emitter(bus, first=0)([Sample("ahu.temp", int(time.time() * 1000) - 811_000, 21.5)])
    (batch,) = await eventually(lambda: up.on(Up.DATA), "the batch", within=20)
    assert points_in(batch.payload) == [0]
    task.cancel()
    d.queue.close()


@in_loop
async def test_with_a_time_slack_late_polls_are_sent_on_their_schedule(tmp_path: Path) -> None:
    # [uplink] time_slack_ms: unchanged polls late by up to 200 ms (a busy Box) are sent on the
    # device's schedule, so they cost no bytes; every poll still says "unchanged", none is lost
    t0 = now_ms() - 20_000
    d = Daemon(tmp_path, tmp_path / "unused.toml", uplink=FakeUplink)
    d.queue.open()
    bus = FakeBus("ahu", ["temp", "alarm"])
    change = Report(mode="change", deadband=0.0, deadband_pct=0.0, max_age_s=900)
    uplink = UplinkSettings(batch_delay_ms=60000, time_slack_ms=250)
    d.buses.use(BoxConfig(uplink=uplink, modbus_tcp=(AHU,), report=change), [bus])
    await d.link.start(load_fake(tmp_path))
    up = d.link.uplink
    assert isinstance(up, FakeUplink)
    task = asyncio.create_task(d.sender.run())
    emit = d.buses.emitter(bus, first=0)
    late = [0, 0, 120, 35, 199, 7, 160, 88, 1, 140]
    for k, ms in enumerate(late):
        await emit([Sample("ahu.temp", t0 + 1000 * k + ms, 21.5)])  # unchanged after the first poll
    await emit([Sample("ahu.alarm", t0 + 10_000, 1.0)])  # urgent: what is queued leaves now
    (batch,) = await eventually(lambda: up.on(Up.DATA), "the batch", within=20)
    b = wire.decode_batch(batch.payload)
    temp = sorted(b.base_ts_ms + g.dt_ms for g in b.groups if g.first == 0)
    assert temp == [t0 + 1000 * k for k in range(10)]
    task.cancel()
    d.queue.close()
