"""The daemon's wiring: identity, configuration, queue, pollers and uplink under one supervisor.

Tasks (each owned by the supervisor, restarted with backoff when it fails):
  - ``poll:<device>``: reads one device every poll interval into the queue;
  - ``flush``: seals queued readings into batches and publishes them, QoS 1, while
    connected; a batch leaves the queue when the broker acknowledges it;
  - ``watchdog``: pings systemd's watchdog and reports STATUS;
  - ``runtime``: keeps ``<state>/run/status.json`` for ``boxctl status``.

This module starts and stops things; the logic lives in the modules it wires.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path

from boxd import config, identity, sdnotify, wire
from boxd.backoff import Backoff
from boxd.queue import Queue
from boxd.supervisor import Supervisor, TaskFactory
from boxd.uplink import Uplink
from drivers import PointInfo, PointSource, Quality
from drivers.modbus import ModbusTcpSource

log = logging.getLogger("boxd")


class Daemon:
    """One Box daemon. The constructor does no I/O; `run()` runs until cancelled."""

    def __init__(self, state_dir: Path, config_path: Path) -> None:
        self.state_dir = state_dir
        self.config_path = config_path
        self._wake = asyncio.Event()
        self._inflight: dict[int, int] = {}  # MQTT message id -> batch seq
        self._last_sent = 0
        self._meta = b""
        self.sources: list[PointSource] = []
        self.queue = Queue(state_dir / "queue.db")
        self.uplink: Uplink | None = None
        self._cfg = config.BoxConfig()

    async def run(self) -> None:
        """Load everything, start the tasks, run until cancelled, stop cleanly.

        Raises:
            IdentityError, ConfigError, QueueError: the Box cannot start; the message says why.
        """
        ident = identity.load(self.state_dir)
        self._cfg = cfg = config.load(self.config_path)
        self.queue.open()
        self.sources = [ModbusTcpSource(d) for d in cfg.modbus_tcp]
        table: list[PointInfo] = [p for s in self.sources for p in s.points()]
        self._table_id = wire.table_id(table)
        self._meta = wire.encode_table(table)
        self.uplink = Uplink(
            ident,
            on_connected=self._connected,
            on_disconnected=self._wake.set,
            on_ack=self._acked,
            keepalive_s=cfg.uplink.keepalive_s,
            backoff=Backoff(1.0, float(cfg.uplink.reconnect_max_s)),
        )
        tasks: dict[str, TaskFactory] = {
            "flush": self._flush_loop, "watchdog": self._watchdog, "runtime": self._runtime,
        }
        first = 0
        for src in self.sources:
            tasks[f"poll:{src.name}"] = self._poller(src, first)
            first += len(src.points())
        await self.uplink.start()
        log.info(
            "boxd started: Box %s, %d device(s), %d point(s), queue epoch %x",
            ident.box_id, len(self.sources), len(table), self.queue.epoch,
        )
        sdnotify.notify("READY=1")
        try:
            await Supervisor(tasks).run()
        finally:
            sdnotify.notify("STOPPING=1")
            await self.uplink.stop()
            for src in self.sources:
                await src.stop()
            self.queue.close()
            log.info("boxd stopped")

    # -- polling --------------------------------------------------------------------------

    def _poller(self, src: PointSource, first: int) -> TaskFactory:
        offsets = {p.name: i for i, p in enumerate(src.points())}
        n = len(offsets)

        async def poll() -> None:
            await src.start()
            interval = src.poll_interval_s
            due = time.monotonic()
            while True:
                samples = await src.read()
                values: list[object] = [None] * n
                faults: dict[int, int] = {}
                for s in samples:
                    i = offsets[s.point]
                    values[i] = s.value
                    if s.quality != Quality.GOOD:
                        faults[i] = int(s.quality)
                ts = samples[0].ts_ms if samples else int(time.time() * 1000)
                self.queue.put(self._table_id, ts, first, values, faults)  # type: ignore[arg-type]
                self._wake.set()
                due += interval
                now = time.monotonic()
                if due < now:  # fell behind (slow device): skip the missed slots
                    due = now + interval - (now - due) % interval
                await asyncio.sleep(due - now)

        return poll

    # -- uplink ---------------------------------------------------------------------------

    def _connected(self) -> None:
        assert self.uplink is not None
        self._inflight.clear()
        self._last_sent = 0
        self.uplink.publish("meta", self._meta, qos=1, retain=True)
        self._wake.set()

    def _acked(self, mid: int, ok: bool) -> None:
        seq = self._inflight.pop(mid, None)
        if seq is not None and ok:
            self.queue.ack(seq)
        self._wake.set()

    async def _flush_loop(self) -> None:
        up, settings = self.uplink, self._cfg.uplink
        assert up is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not up.state.connected:
                continue
            if settings.batch_delay_ms:
                await asyncio.sleep(settings.batch_delay_ms / 1000)  # let readings share a batch
            self.queue.seal(settings.max_batch_samples)
            room = settings.inflight_batches - len(self._inflight)
            for seq, payload in self.queue.batches(self._last_sent, max(0, room)):
                mid = up.publish("data", payload, qos=1)
                if mid is None:
                    break
                self._inflight[mid] = seq
                self._last_sent = seq

    # -- health ---------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        """What `boxctl status` and systemd's STATUS show."""
        batched, pending = self.queue.depth()
        st = self.uplink.state if self.uplink else None
        return {
            "pid": os.getpid(),
            "ts": time.time(),
            "connected": bool(st and st.connected),
            "connected_since": st.since if st else 0,
            "last_error": st.last_error if st else "",
            "queue_samples": batched + pending,
            "devices": len(self.sources),
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
        path, tmp = run / "status.json", run / "status.json.tmp"
        try:
            while True:
                tmp.write_text(json.dumps(self.status()))
                tmp.replace(path)
                await asyncio.sleep(2.0)
        finally:
            path.unlink(missing_ok=True)

