"""The daemon's wiring: identity, configuration, queue, buses and uplink under one supervisor.

Tasks (each owned by the supervisor, restarted with backoff when it fails):
  - ``bus:<name>``: one per field bus (a Modbus TCP device, a serial line, a BACnet
    network): the bus runs its own schedule and emits readings into the queue;
  - ``flush``: seals queued readings into batches and publishes them, QoS 1, while
    connected; a batch leaves the queue when the broker acknowledges it; a backlog
    drains oldest first, with one slot of the window kept for the freshest batch;
  - ``heartbeat``: a health report to the platform every `heartbeat_s`;
  - ``watchdog``: pings systemd's watchdog and reports STATUS;
  - ``runtime``: keeps ``<state>/run/status.json`` for ``boxctl status``;
  - ``downlink``: configuration pushes and commands from the platform, one at a time
    (`boxd.reconfig`, `boxd.commands`); a new configuration replaces the ``bus:*`` tasks
    without a restart, and is rolled back by itself if none of its devices works.

Updates (`ota.agent`): an ``update`` command downloads, installs and switches in a task of
its own, then the daemon exits 75 and `boxd launch` starts the new version on trial; a
version on trial commits itself once `health_missing()` is empty (connected to the broker,
a good reading from every bus, a batch acknowledged), and says what it still lacks in
``run/status.json`` for the launcher (and for the Box image's boot trial,
image/scripts/boot_check.py).

This module starts and stops things; the logic lives in the modules it wires.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path

import boxconfig as config
from boxconfig.errors import ConfigError
from boxd import __version__, downlink, reconfig, sdnotify
from boxd.backoff import Backoff
from boxd.clock import Clock
from boxd.commands import CommandFailed, CommandRunner, buses_of
from boxd.logring import LogRing
from boxd.modem import ModemManagerTask
from boxd.queue import Queue
from boxd.supervisor import Supervisor, TaskFactory
from boxd.uplink import Uplink
from boxkit import files
from drivers import Emit, PointInfo, PointSource, Quality, Sample, Value
from drivers.modbus import ModbusRtuSource, ModbusTcpDevice, ModbusTcpSource
from ota.agent import UpdateAgent
from proto import names, wire
from proto.downlink import MAX_VERSION, decode_command, decode_time, peek
from proto.errors import RejectedError, WireError
from proto.modem import ModemEvent, WanEvent
from proto.replies import ON_PROBATION, config_reply, reply
from proto.topics import Down, Up
from proto.uplink import Evicted, Health, OtaEvent
from trust import identity, renewal
from trust.crl import CrlKeeper
from trust.errors import EnrollError, IdentityError

log = logging.getLogger("boxd")


def _ranges(seqs: Sequence[int]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for s in sorted(seqs):
        if out and out[-1][1] + 1 == s:
            out[-1][1] = s
        else:
            out.append([s, s])
    return [(a, b) for a, b in out]


DOWNLINK_BACKLOG = 64  # downlink messages waiting to be handled; beyond, they are dropped (logged)
REFUSED_BASE_S, REFUSED_MAX_S = 1.0, 60.0  # pause before resending what the broker refused
RENEW_TRIAL_S = 45.0  # how long a renewed certificate has to connect before the previous one comes back
RESTART_STATUS = 75  # the exit status after a `restart` command (EX_TEMPFAIL): systemd starts boxd again


def _peek_version(payload: bytes) -> int:
    v = peek(payload, "version")
    return v if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_VERSION else 0


def _peek_id(payload: bytes) -> str:
    v = peek(payload, "id")
    return v if names.COMMAND_ID.fullmatch(v) else ""


def _env_float(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if math.isfinite(value) and value >= 0 else default


def _parse_text(text: bytes) -> config.BoxConfig:
    """A configuration's text, parsed and validated (RejectedError says why not)."""
    try:
        return config.parse(tomllib.loads(text.decode("utf-8")))
    except (UnicodeDecodeError, ValueError, RecursionError, ConfigError) as e:
        raise RejectedError(f"the last good configuration is not valid: {str(e)[:200]}") from e


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


class Daemon:
    """One Box daemon. The constructor does no I/O; `run()` runs until cancelled."""

    def __init__(self, state_dir: Path, config_path: Path, *, probation_s: float = reconfig.DEFAULT_PROBATION_S,
                 reboot_command: str = "") -> None:
        self.state_dir = state_dir
        self.config_path = config_path
        self.probation_s = probation_s
        self.exit_status = 0  # non-zero after a `restart` command: systemd starts boxd again
        self.log_ring = LogRing()
        self.updates = UpdateAgent(state_dir, __version__, self._put_ota_event, self._restart_for_update,
                                   launched=os.environ.get("BOXD_LAUNCHED") == "1", backoff_s=_env_float(
                                       "BOXD_OTA_BACKOFF_S", 2.0))
        self.commands = CommandRunner(state_dir, self.log_ring, reboot_command, renew=self.renew_certificate,
                                      updates=self.updates)
        self.files = reconfig.ConfigFiles(config_path, state_dir)
        self._down: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(DOWNLINK_BACKLOG)
        self._good = 0  # good readings since the running configuration started
        self._polling: set[str] = set()  # buses with a good reading since the running configuration started
        self._acked_batches = 0  # since start
        self._ota_trial: asyncio.Task[None] | None = None
        self._faults: dict[int, int] = {}  # quality -> count, since the running configuration started
        self._main: asyncio.Task[None] | None = None
        self._probation: asyncio.Task[None] | None = None
        self._generation = 0  # configurations run since start: a probation watches one of them
        self._reconfiguring = asyncio.Lock()
        self._reply_acks: dict[int, asyncio.Event] = {}
        self._link_up = asyncio.Event()  # set at each connection (a renewed certificate's trial)
        self._trial: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._inflight: dict[int, int] = {}  # MQTT message id -> batch seq
        self._inflight_events: dict[int, int] = {}  # MQTT message id -> event id
        self.crl = CrlKeeper(state_dir, lambda path: self.uplink.add_crl(path) if self.uplink else None)
        self._refused = Backoff(REFUSED_BASE_S, REFUSED_MAX_S)  # the broker refused a message: wait, then resend
        self._hold_until = 0.0  # monotonic time before which nothing is sent again
        self._meta = b""
        self._table_id = 0
        self.sources: list[PointSource] = []
        self.queue = Queue(state_dir / "queue.db")
        self.uplink: Uplink | None = None
        self._cfg = config.BoxConfig()
        self.clock = Clock()
        self._started = time.monotonic()
        self._supervisor: Supervisor | None = None
        self._buses = buses_of({}, [])
        self._ident: identity.Identity | None = None
        self._rebooting = False  # a reboot command succeeded: the stop that follows is planned
        self._beat_now = asyncio.Event()  # a heartbeat is due now (connected, configuration changed)
        self.modem: ModemManagerTask | None = None  # the 4G modem's owner, when the configuration has a [modem]
        self._acks = 0  # acknowledgements from the broker since start (the modem's evidence of a working uplink)

    async def run(self) -> None:
        """Load everything, start the tasks, run until cancelled, stop cleanly.

        Raises:
            IdentityError, ConfigError, QueueError: the Box cannot start; the message says why.
        """
        self._main = asyncio.current_task()
        logging.getLogger().addHandler(self.log_ring)
        try:
            await self._run()
        finally:
            logging.getLogger().removeHandler(self.log_ring)

    async def _run(self) -> None:
        recovered = identity.recover(self.state_dir)  # a certificate switch cut by a power loss
        if recovered:
            log.warning("identity: %s", recovered)
        self._ident = ident = identity.load(self.state_dir)
        sdnotify.set_box_id(ident.box_id)
        on_trial = (self.state_dir / identity.PREV_DIR).is_dir()
        if on_trial:
            log.warning("identity: a renewed certificate is in use and not yet proven; the previous one is kept "
                        "until it connects")
        self.commands.load()
        self._cfg, self.files.running = reconfig.load_at_start(self.config_path, self.state_dir)
        cfg = self._cfg
        self.queue.max_samples = cfg.queue.max_samples
        self.queue.open()
        self.updates.at_start()
        self.modem = self._modem_of(cfg) if cfg.modem else None
        bus_tasks = self._use_sources(make_sources(self.modem.shape(cfg) if self.modem else cfg))
        self.uplink = self._make_uplink(ident)
        tasks: dict[str, TaskFactory] = {
            "flush": self._flush_loop, "heartbeat": self._heartbeat, "watchdog": self._watchdog,
            "runtime": self._runtime, "downlink": self._downlink_loop, **bus_tasks,
            **({"modem": self.modem.run} if self.modem else {}),
        }
        await self.uplink.start()
        if on_trial:
            self._trial = asyncio.create_task(self._trial_at_start(), name="certificate trial")
        if self.updates.trial is not None:
            self._ota_trial = asyncio.create_task(self.updates.watch_trial(self.health_missing), name="update trial")
        if not self.clock.trusted():
            log.warning("the clock reads before this software was built: readings are held until the "
                        "platform's time is known")
        log.info(
            "boxd started: Box %s, %d bus(es), %d point(s), queue epoch %x, %d sample(s) queued",
            ident.box_id, len(self.sources), len(self._buses.source_of), self.queue.epoch, self.queue.samples,
        )
        sdnotify.notify("READY=1")
        self._supervisor = Supervisor(tasks)
        try:
            await self._supervisor.run()
        finally:
            sdnotify.notify("STOPPING=1")
            if self._ota_trial is not None:
                self._ota_trial.cancel()
            await self.uplink.stop("restarting" if self.exit_status == RESTART_STATUS or self._rebooting
                                   else "stopped")
            self.queue.close()
            log.info("boxd stopped")

    def _make_uplink(self, ident: identity.Identity) -> Uplink:
        return Uplink(
            ident,
            on_connected=self._connected,
            on_disconnected=self._wake.set,
            on_ack=self._acked,
            on_message=self._downlink,
            keepalive_s=self._cfg.uplink.keepalive_s,
            backoff=Backoff(1.0, float(self._cfg.uplink.reconnect_max_s)),
            relax_time_check=lambda: not self.clock.trusted(),
        )

    # -- certificate renewal (the renew_cert command) ------------------------------------------

    async def renew_certificate(self) -> str:
        """A new key and certificate (`trust.renewal`, in a process of its own, authenticated by the
        current certificate), tried on the broker: kept if the Box connects with it within
        `RENEW_TRIAL_S`, otherwise the previous identity comes back. Returns what was done.

        Raises:
            CommandFailed: the renewal was refused or the new certificate did not work.
        """
        try:
            await renewal.renew(self.state_dir)
        except EnrollError as e:
            raise CommandFailed(f"the renewal failed: {e}") from e
        identity.activate_next(self.state_dir)
        new = identity.load(self.state_dir)
        log.info("identity: trying the renewed certificate (valid until %s)", f"{new.not_after():%Y-%m-%d}")
        if await self._switch_uplink(new, RENEW_TRIAL_S):
            identity.commit(self.state_dir)
            self._ident = new
            log.info("identity: the renewed certificate works; the previous one is dropped")
            await self._confirm_renewal()
            return f"renewed: the new certificate is valid until {new.not_after():%Y-%m-%d %H:%M} UTC"
        error = self.uplink.state.last_error if self.uplink else ""
        identity.revert(self.state_dir)
        old = identity.load(self.state_dir)
        log.error("identity: the renewed certificate did not connect (%s); back to the previous one", error)
        await self._switch_uplink(old, 0)
        raise CommandFailed(f"the new certificate did not connect within {RENEW_TRIAL_S:.0f} s ({error}); "
                            "the previous one is in use again")

    async def _trial_at_start(self) -> None:
        """A renewed certificate not yet proven at start (the daemon stopped during its trial):
        keep it if it connects within `RENEW_TRIAL_S`, otherwise go back to the previous one."""
        try:
            async with asyncio.timeout(RENEW_TRIAL_S):  # not wait_for: 3.11's can swallow a cancellation
                await self._link_up.wait()
        except TimeoutError:
            error = self.uplink.state.last_error if self.uplink else ""
            log.error("identity: the renewed certificate did not connect (%s); back to the previous one", error)
            try:
                identity.revert(self.state_dir)
                self._ident = old = identity.load(self.state_dir)
            except IdentityError as e:
                log.error("identity: cannot go back to the previous one: %s", e)
                return
            await self._switch_uplink(old, 0)
            return
        identity.commit(self.state_dir)
        log.info("identity: the renewed certificate works; the previous one is dropped")
        await self._confirm_renewal()

    async def _confirm_renewal(self) -> None:
        """Tell the platform the renewed certificate is in use, so that it revokes the previous one.
        A failure is only logged: the platform accepts both until the Box's next renewal."""
        try:
            await renewal.confirm(self.state_dir)
        except EnrollError as e:
            log.warning("identity: the platform was not told that the renewed certificate is in use (%s); "
                        "it keeps the previous one valid until the next renewal", e)
            return
        log.info("identity: the platform revoked the previous certificate")

    async def _switch_uplink(self, ident: identity.Identity, trial_s: float) -> bool:
        """Replace the MQTT link by one with `ident`; whether it connected within `trial_s`."""
        old, new = self.uplink, self._make_uplink(ident)
        self._link_up.clear()
        if old is not None:
            await old.stop("restarting")  # a new certificate: back in a moment
        self.uplink = new
        await new.start()
        if trial_s <= 0:
            return True
        try:
            async with asyncio.timeout(trial_s):
                await self._link_up.wait()
        except TimeoutError:
            return False
        return True

    # -- field buses --------------------------------------------------------------------

    def _use_sources(self, sources: list[PointSource]) -> dict[str, TaskFactory]:
        """Make `sources` the Box's buses (point table, table id, what commands see); their tasks."""
        self.sources = sources
        table: list[PointInfo] = [p for s in sources for p in s.points()]
        self._table_id = wire.table_id(table)
        self._meta = wire.encode_table(table)
        self._buses = buses_of(downlink.point_specs(self._cfg), sources)
        self._good, self._faults = 0, {}
        self._polling = set()
        tasks: dict[str, TaskFactory] = {}
        first = 0
        for src in sources:
            tasks[f"bus:{src.name}"] = self._bus_task(src, first)
            first += len(src.points())
        return tasks

    async def reconfigure(self, cfg: config.BoxConfig) -> None:
        """Run `cfg` from now on, without a restart: the bus tasks stop (each closes its bus),
        new sources start with a new point table (published, retained, before their data);
        the durable queue goes on (a batch never mixes table ids: `Queue.seal`)."""
        assert self._supervisor is not None
        await self._supervisor.stop([n for n in self._supervisor.names() if n.startswith("bus:")])
        self._cfg = cfg
        self.queue.max_samples = cfg.queue.max_samples
        if cfg.modem and self.modem:
            self.modem.reconfigure(cfg.modem, cfg.wan)
        elif cfg.modem or self.modem:  # a modem added or removed
            await self._supervisor.stop(["modem"])
            self.modem = self._modem_of(cfg) if cfg.modem else None
            if self.modem:
                self._supervisor.start("modem", self.modem.run)
        tasks = self._use_sources(make_sources(self.modem.shape(cfg) if self.modem else cfg))
        if self.uplink is not None:
            self.uplink.publish(Up.META, self._meta, qos=1, retain=True)
        for name, factory in tasks.items():
            self._supervisor.start(name, factory)
        log.info("configuration in use: %d bus(es), %d point(s)", len(self.sources), len(self._buses.source_of))
        self._beat_now.set()

    def _modem_of(self, cfg: config.BoxConfig) -> ModemManagerTask:
        assert cfg.modem is not None and self._ident is not None
        platform = (self._ident.broker_host, self._ident.broker_port)
        return ModemManagerTask(cfg.modem, cfg.wan, self.state_dir, platform=lambda: platform,
                                uplink=lambda: (bool(self.uplink and self.uplink.state.connected),
                                                len(self._inflight) + len(self._inflight_events), self._acks),
                                put_event=self._put_modem_event, wake_heartbeat=self._beat_now.set,
                                on_save=self._save_data)

    def _put_modem_event(self, event: ModemEvent | WanEvent) -> None:
        """The modem's events go through the writer, not waited for (sent once on disk; a failure is logged)."""
        def done(fut: asyncio.Future[None]) -> None:
            if not fut.cancelled() and fut.exception() is not None:
                log.error("modem: cannot queue its %s event: %s", event.to_doc().get("kind"), fut.exception())
            self._wake.set()

        self.queue.put_event(dataclasses.replace(event, ts_ms=self.clock.now_ms()).encode()).add_done_callback(done)

    async def _save_data(self, saving: bool) -> None:
        """The modem's data budget asks to save data (or no longer): the buses poll at the new pace."""
        async with self._reconfiguring:
            await self.reconfigure(self._cfg)

    def _bus_task(self, src: PointSource, first: int) -> TaskFactory:
        emit = self._emitter(src, first)

        async def run() -> None:
            await src.run(emit)

        return run

    def _emitter(self, src: PointSource, first: int) -> Emit:
        """The callback a bus hands its readings to: they become groups in the durable queue,
        and it returns once they are on disk (the bus waits for it before its next request).

        Readings of one instant for points consecutive in the table make one group, so a
        device read in full costs one group however many points it has.
        """
        index = {p.name: first + i for i, p in enumerate(src.points())}
        clock = self.clock

        async def emit(samples: Sequence[Sample]) -> None:
            by_ts: dict[int, list[tuple[int, Sample]]] = {}
            for s in samples:
                by_ts.setdefault(s.ts_ms, []).append((index[s.point], s))
            groups: list[tuple[int, int, list[Value], dict[int, int]]] = []
            good = 0
            for ts, items in by_ts.items():
                items.sort(key=lambda item: item[0])
                run_first = items[0][0]
                values: list[Value] = []
                faults: dict[int, int] = {}
                for idx, s in items:
                    if idx != run_first + len(values):  # a hole: close the run
                        groups.append((ts, run_first, values, faults))
                        run_first, values, faults = idx, [], {}
                    if s.quality != Quality.GOOD:
                        faults[len(values)] = int(s.quality)
                        self._faults[s.quality] = self._faults.get(s.quality, 0) + 1
                    else:
                        good += 1
                    values.append(s.value)
                groups.append((ts, run_first, values, faults))
            self._good += good
            if good:
                self._polling.add(src.name)
            stored = [(clock.stored_time(ts), f, v, q) for ts, f, v, q in groups]
            # written by the queue's thread, with other buses' readings: the bus goes on once they are on disk
            written = self.queue.put_many(self._table_id, stored, clock.timebase())
            self._wake.set()  # the flush task's seal is a later write of the same thread: it takes these
            await written
            if self.queue.samples > self.queue.max_samples:
                await self._evict()

        return emit

    async def _evict(self) -> None:
        ts, epoch = self.clock.now_ms(), self.queue.epoch

        def event(n: int, total: int, seqs: list[int]) -> bytes:  # queued with the eviction, in its transaction
            return Evicted(ts, n, total, _ranges(seqs), epoch).encode()

        n, _ = await self.queue.enforce_limit(self._inflight.values, event)
        if n:
            log.warning("queue full (%d samples): evicted the %d oldest", self.queue.max_samples, n)
            self._wake.set()  # its event is queued

    # -- uplink ---------------------------------------------------------------------------

    def _connected(self) -> None:
        assert self.uplink is not None
        self._link_up.set()
        self._inflight.clear()
        self._inflight_events.clear()
        self.uplink.publish(Up.META, self._meta, qos=1, retain=True)
        self._wake.set()
        self._beat_now.set()

    def _acked(self, mid: int, ok: bool) -> None:
        self._acks += 1
        waiter = self._reply_acks.get(mid)
        if waiter is not None:
            waiter.set()
        if ok:
            self._refused.reset()
        elif mid in self._inflight or mid in self._inflight_events:
            # refused (over the Box's rate at the broker, or not allowed): it stays queued and is sent
            # again after a pause that grows while refusals go on, not at once in a loop
            self._hold_until = time.monotonic() + self._refused.next()
        seq = self._inflight.pop(mid, None)
        if seq is not None and ok:
            self.queue.ack(seq)
            self._acked_batches += 1
        event = self._inflight_events.pop(mid, None)
        if event is not None and ok:
            self.queue.ack_event(event)
        self._wake.set()

    def _downlink(self, leaf: str, payload: bytes) -> None:
        """A message from the platform on `boxes/<id>/down/<leaf>` (untrusted input)."""
        if leaf == Down.TIME:
            try:
                notice = decode_time(payload)
            except WireError as e:
                log.warning("ignoring a malformed time message: %s", e)
                return
            was = self.clock.trusted()
            self.clock.platform_time(notice.ts_ms)
            if not was:
                log.info("the platform's time is known: held readings are re-based and sent")
                self._wake.set()
            return
        if leaf == Down.CRL:  # the platform's revocation list, checked and kept by the downlink task
            with contextlib.suppress(asyncio.QueueFull):
                self._down.put_nowait((leaf, payload))
            return
        if leaf not in (Down.CONFIG, Down.CMD):
            log.info("ignoring %d bytes on down/%s (not handled by this version)", len(payload), leaf)
            return
        try:
            self._down.put_nowait((leaf, payload))
        except asyncio.QueueFull:
            log.warning("ignoring a message on down/%s: %d downlink messages wait already", leaf, DOWNLINK_BACKLOG)

    # -- configuration pushes and commands ---------------------------------------------------

    def _reply(self, payload: bytes) -> int | None:
        mid = self.uplink.publish(Up.REPLIES, payload, qos=1) if self.uplink else None
        if mid is None:
            log.warning("a reply to the platform is lost: not connected")
        return mid

    async def _wait_acked(self, mid: int, limit_s: float) -> None:
        """Wait (at most `limit_s`) for the broker to acknowledge message `mid`."""
        event = self._reply_acks.setdefault(mid, asyncio.Event())
        try:
            async with asyncio.timeout(limit_s):
                await event.wait()
        except TimeoutError:
            log.warning("no acknowledgement of the reply within %.0f s", limit_s)
        finally:
            self._reply_acks.pop(mid, None)

    async def _downlink_loop(self) -> None:
        """Handle downlink messages one at a time; a message never takes this task down."""
        while True:
            leaf, payload = await self._down.get()
            try:
                if leaf == Down.CONFIG:
                    await self._on_config(payload)
                elif leaf == Down.CRL:
                    await self.crl.take(payload)
                else:
                    await self._on_command(payload)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # untrusted input: logged, answered if it can be, and the daemon goes on
                log.exception("a message on down/%s could not be handled", leaf)
                why = f"the Box could not handle it: {type(e).__name__}: {e}"
                if leaf == Down.CMD and (cmd_id := _peek_id(payload)):
                    self._reply(reply(cmd_id, "failed", why))
                elif leaf == Down.CONFIG and (version := _peek_version(payload)):
                    self._reply(config_reply(version, "rejected", [why]))

    async def _on_config(self, payload: bytes) -> None:
        try:
            push = await asyncio.to_thread(downlink.decode_config, payload)  # up to seconds of TOML
        except RejectedError as e:
            version = _peek_version(payload)
            if version and version <= self.files.handled_version():
                log.info("configuration %d was handled before; ignored", version)
                return
            log.warning("configuration %s rejected: %s", version or "(no version)", "; ".join(e.reasons))
            if version:
                self._handled(version)
            self._reply(config_reply(version or 0, "rejected", e.reasons))
            return
        if push.version <= self.files.handled_version():
            log.info("configuration %d was handled before (the latest is %d); ignored", push.version,
                     self.files.handled_version())
            return
        text = push.toml_text.encode("utf-8")
        async with self._reconfiguring:
            # the running configuration becomes the last good one only if it gave good readings;
            # one still on probation leaves the last good one as it is (and the new one is watched)
            worked = self._good > 0
            on_probation = self._probation is not None and not self._probation.done()
            previous, previous_text = self._cfg, self.files.running
            try:
                if text != self.files.running:
                    self.files.install(text, keep_running=worked)
            except OSError as e:
                log.error("configuration %d not applied: %s", push.version, e)
                self._reply(config_reply(push.version, "rejected", [f"cannot write the configuration: {e}"]))
                return
            self._handled(push.version)
            self._generation += 1
            try:
                await self.reconfigure(push.config)
            except Exception as e:  # a bus that cannot even be built: back to what ran
                log.exception("configuration %d cannot start; back to the one before", push.version)
                self.files.install(previous_text, keep_running=False)
                await self.reconfigure(previous)
                self._reply(config_reply(push.version, "rejected", [f"cannot start it: {e}"]))
                return
        log.info("configuration %d applied", push.version)
        self.files.remember(text, push.version)
        if self._buses.source_of and self.files.last_good.exists() and (worked or on_probation):
            self._reply(config_reply(push.version, "applied", [
                f"{ON_PROBATION} for {self.probation_s:g} s: kept once a device gives a good reading, "
                "else rolled back"]))
            self._probation = asyncio.create_task(self._watch(push.version, self._generation), name="probation")
        else:
            self._reply(config_reply(push.version, "applied"))

    def _handled(self, version: int) -> None:
        try:
            self.files.set_handled(version)
        except OSError as e:
            log.warning("cannot keep the configuration version in %s: %s", self.files.version_file, e)

    async def _watch(self, version: int, generation: int) -> None:
        """Probation of a new configuration: if none of its points gives a good reading in
        `probation_s` (while the previous one had), or the network refuses its APN, go back to the
        last good configuration."""
        deadline = time.monotonic() + self.probation_s
        while time.monotonic() < deadline:
            if generation != self._generation:
                return  # another configuration came meanwhile: its own probation watches
            if self.modem is not None and self.modem.fault == "apn_rejected":
                break
            if self._good and (self.modem is None or self.modem.settled()):
                log.info("configuration %d works (good readings): kept", version)
                self._reply(config_reply(version, "kept"))
                return
            await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        refused = self.modem.fault_text if self.modem is not None and self.modem.fault == "apn_rejected" else ""
        if (self._good and not refused) or generation != self._generation:
            return
        seen = ", ".join(f"{Quality(q).name.lower()} x{n}" for q, n in sorted(self._faults.items())) or "no reading"
        why = (f"{refused}; back to the last good configuration" if refused else
               f"no device of configuration {version} gave a good reading in {self.probation_s:g} s ({seen}); "
               "back to the last good configuration")
        log.error("%s", why)
        try:
            text = self.files.last_good.read_bytes()
            cfg = await asyncio.to_thread(_parse_text, text)
            async with self._reconfiguring:
                if generation != self._generation or (self._good and not refused):
                    return
                self.files.restore()
                self._generation += 1
                await self.reconfigure(cfg)
        except (OSError, RejectedError) as e:
            log.error("cannot roll configuration %d back: %s", version, e)
            return
        except Exception:  # this task is not supervised: never lose an error silently
            log.exception("cannot roll configuration %d back", version)
            return
        if refused:  # the link was down: answer once the broker acknowledges something again
            acks = self._acks
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(300):
                    while self._acks == acks or not (self.uplink and self.uplink.state.connected):  # noqa: ASYNC110 - two conditions set from the uplink thread
                        await asyncio.sleep(0.5)
        self._reply(config_reply(version, "rolled_back", [why]))

    async def _on_command(self, payload: bytes) -> None:
        try:
            cmd = decode_command(payload)
        except WireError as e:
            cmd_id = _peek_id(payload)
            log.warning("command %s rejected: %s", cmd_id or "(no id)", e)
            if cmd_id:
                self._reply(reply(cmd_id, "rejected", str(e)))
            return
        outcome = await self.commands.run(cmd, self._buses)
        self._rebooting = self._rebooting or outcome.then == "reboot"
        mid = self._reply(outcome.reply)
        if outcome.then == "restart":
            if mid is not None:
                await self._wait_acked(mid, 5.0)
            log.warning("restarting on the platform's command %s", cmd.id)
            self.exit_status = RESTART_STATUS
            assert self._main is not None
            self._main.cancel()

    async def _flush_loop(self) -> None:
        while True:
            settings = self._cfg.uplink
            await self._wake.wait()
            self._wake.clear()
            if self.uplink is None or not self.uplink.state.connected:
                continue
            hold = self._hold_until - time.monotonic()
            if hold > 0:
                await asyncio.sleep(hold)
            delay_ms = self.modem.batch_delay_ms(settings.batch_delay_ms) if self.modem else settings.batch_delay_ms
            if delay_ms and self.queue.backlog() <= len(self._inflight):
                # nothing sealed waits to go: let fresh readings share a batch (a backlog drains at once)
                await asyncio.sleep(delay_ms / 1000)
            await self.queue.seal(settings.max_batch_samples, self.clock.timebase())
            self._send_events()
            self._send_batches(settings.inflight_batches)

    def _send_events(self) -> None:
        assert self.uplink is not None
        busy = set(self._inflight_events.values())
        for event_id, payload in self.queue.events(8 + len(busy)):
            if event_id in busy:
                continue
            mid = self.uplink.publish(Up.EVENTS, payload, qos=1)
            if mid is None:
                return
            self._inflight_events[mid] = event_id

    def _send_batches(self, window: int) -> None:
        assert self.uplink is not None
        room = window - len(self._inflight)
        if room <= 0:
            return
        busy = set(self._inflight.values())
        picks: list[tuple[int, bytes]] = []
        if room >= 2 and self.queue.backlog() - len(busy) > room:
            newest = self.queue.newest_batch()  # a backlog: the freshest data must not wait behind it
            if newest is not None and newest[0] not in busy:
                picks.append(newest)
                busy.add(newest[0])
                room -= 1
        picks += self.queue.batches(0, room, busy)
        for seq, payload in picks:
            mid = self.uplink.publish(Up.DATA, payload, qos=1)
            if mid is None:
                return
            self._inflight[mid] = seq

    # -- updates (ota.agent) ----------------------------------------------------------------

    def _put_ota_event(self, event: OtaEvent) -> None:
        # waited for (one transaction on the loop, a few per update): the agent forgets its own
        # record of an outcome right after, and that record must not go before the event is on disk
        self.queue.put_event_now(dataclasses.replace(event, ts_ms=self.clock.now_ms()).encode())
        self._wake.set()

    def _restart_for_update(self) -> None:
        log.warning("restarting into the new version")
        self.exit_status = RESTART_STATUS
        assert self._main is not None
        self._main.cancel()

    def health_missing(self) -> str:
        """What keeps this daemon from being called healthy ("" when nothing does): connected
        to the broker, a good reading from every field bus, a batch acknowledged."""
        st = self.uplink.state if self.uplink else None
        if st is None or not st.connected:
            return f"not connected to the broker ({st.last_error if st and st.last_error else 'connecting'})"
        silent = [s.name for s in self.sources if s.name not in self._polling]
        if silent:
            shown = ", ".join(silent[:5]) + (f" and {len(silent) - 5} more" if len(silent) > 5 else "")
            return f"no good reading yet from {shown}"
        if self.sources and not self._acked_batches:
            return "no data acknowledged by the broker yet"
        return ""

    # -- health ---------------------------------------------------------------------------

    def health(self) -> Health:
        """The heartbeat's content (see docs/architecture.md, "Health")."""
        assert self._ident is not None
        restarts = {n: s.restarts for n, s in self._supervisor.stats.items()} if self._supervisor else {}
        return Health(
            ts_ms=self.clock.now_ms(), epoch=self.queue.epoch, last_seq=self.queue.last_seq(),
            clock_ok=self.clock.trusted(), version=__version__, hb_s=self._cfg.uplink.heartbeat_s,
            up_s=int(time.monotonic() - self._started), oldest_seq=self.queue.oldest_seq(),
            queue=self.queue.samples, evicted=self.queue.meta("evicted_total"),
            buses={s.name: dict(s.stats()) for s in self.sources},
            cert_not_after=int(self._ident.not_after().timestamp()),
            restarts={n: r for n, r in restarts.items() if r},
            config_version=self.files.running_version(), config_sha256=self.files.digest(),
            probation_s=self.probation_s, modem=self.modem.health() if self.modem else None,
        )

    async def _heartbeat(self) -> None:
        """A health report every `heartbeat_s`, and at once after each connection and each new
        configuration (so the platform knows the configuration that runs without waiting)."""
        while True:
            if self.uplink is not None and self.uplink.state.connected:
                self.uplink.publish(Up.HEALTH, self.health().encode(), qos=1)
            self._beat_now.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._cfg.uplink.heartbeat_s):
                    await self._beat_now.wait()

    def status(self) -> dict[str, object]:
        """What `boxctl status` and systemd's STATUS show."""
        st = self.uplink.state if self.uplink else None
        return {
            "pid": os.getpid(),
            "ts": time.time(),
            "connected": bool(st and st.connected),
            "connected_since": st.since if st else 0,
            "last_error": st.last_error if st else "",
            "queue_samples": self.queue.samples,
            "clock_ok": self.clock.trusted(),
            "buses": len(self.sources),
            "bus_health": {src.name: {"points": len(src.points()), "polling": src.name in self._polling,
                                      **{k: v for k, v in src.stats().items() if k in ("requests", "errors")}}
                           for src in self.sources},
            "points": len(self._buses.source_of),
            "config_version": self.files.running_version(),
            "config_sha256": self.files.digest(),
            "version": __version__,
            # always (not only on an update's trial): the Box image's boot trial reads it too
            "health_missing": self.health_missing(),
            "modem": self.modem.status() if self.modem else None,
        }

    async def _watchdog(self) -> None:
        interval = sdnotify.watchdog_interval() or 10.0
        while True:
            s = self.status()
            link = "connected" if s["connected"] else "not connected"
            sdnotify.notify(f"WATCHDOG=1\nSTATUS=uplink {link}, {s['queue_samples']} sample(s) queued")
            await asyncio.sleep(interval)

    async def _runtime(self) -> None:
        run = self.state_dir / "run"
        run.mkdir(parents=True, exist_ok=True)
        path = run / "status.json"
        launcher = os.getppid() if self.updates.launched else 0
        try:
            while True:
                files.write_atomic(path, json.dumps(self.status()).encode(), durable=False)
                if launcher and os.getppid() != launcher:  # killed: nobody would roll back or restart us
                    log.error("the launcher (pid %d) is gone: stopping", launcher)
                    assert self._main is not None
                    self._main.cancel()
                await asyncio.sleep(1.0)
        finally:
            path.unlink(missing_ok=True)
