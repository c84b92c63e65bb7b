"""What the daemon says about itself: the heartbeat, ``run/status.json``, systemd's watchdog.

`Reporter` owns three long-lived tasks: ``heartbeat`` (a health report to the platform every
`heartbeat_s`, and at once after each connection and each new configuration, `beat_now`),
``watchdog`` (pings systemd's watchdog with a STATUS line) and ``runtime`` (keeps
``<state>/run/status.json`` for ``boxctl status`` and the image's boot trial). `missing` says
what keeps the daemon from being healthy (an update's trial commits once it is empty).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from boxd import sdnotify
from boxd.cellular import Cellular
from boxd.certs import Certificates
from boxd.clock import Clock
from boxd.fieldbus import FieldBuses
from boxd.forwarder import Forwarder
from boxd.link import Link
from boxd.queue import Queue
from boxd.reconfig import ConfigFiles
from boxd.supervisor import TaskStats
from boxkit import files
from proto.topics import Up
from proto.uplink import Health

log = logging.getLogger("boxd")


class Reporter:
    """The daemon's health, for the platform, systemd and ``boxctl``. The constructor does no I/O."""

    def __init__(self, state_dir: Path, *, link: Link, queue: Queue, clock: Clock, buses: FieldBuses,
                 files: ConfigFiles, certs: Certificates, forwarder: Forwarder,
                 restarts: Callable[[], Mapping[str, TaskStats]], probation_s: float,
                 version: str, cellular: Cellular | None = None) -> None:
        self.version = version  # boxd's, or on a Box image the image release's
        self.cellular = cellular
        self.state_dir = state_dir
        self.link, self.queue, self.clock, self.buses = link, queue, clock, buses
        self.files, self.certs, self.forwarder = files, certs, forwarder
        self.probation_s = probation_s
        self._restarts = restarts
        self._started = time.monotonic()
        self._beat_now = asyncio.Event()

    def beat_now(self) -> None:
        """Send a health report at once (connected, configuration changed)."""
        self._beat_now.set()

    def missing(self) -> str:
        """What keeps this daemon from being called healthy ("" when nothing does): connected
        to the broker, a good reading from every field bus, a batch acknowledged."""
        st = self.link.state
        if not st.connected:
            return f"not connected to the broker ({st.last_error or 'connecting'})"
        sources = self.buses.sources
        silent = [s.name for s in sources if s.name not in self.buses.polling]
        if silent:
            shown = ", ".join(silent[:5]) + (f" and {len(silent) - 5} more" if len(silent) > 5 else "")
            return f"no good reading yet from {shown}"
        if sources and not self.forwarder.acked_batches:
            return "no data acknowledged by the broker yet"
        return ""

    def health(self) -> Health:
        """The heartbeat's content (see docs/architecture.md, "Health")."""
        ident = self.certs.ident
        assert ident is not None
        q = self.queue
        return Health(
            ts_ms=self.clock.now_ms(), epoch=q.epoch, last_seq=q.last_seq(),
            clock_ok=self.clock.confirmed(), version=self.version, hb_s=self.buses.cfg.uplink.heartbeat_s,
            up_s=int(time.monotonic() - self._started), oldest_seq=q.oldest_seq(),
            queue=q.samples, evicted=q.meta("evicted_total"),
            buses={s.name: dict(s.stats()) for s in self.buses.sources},
            cert_not_after=int(ident.not_after().timestamp()),
            restarts={n: s.restarts for n, s in self._restarts().items() if s.restarts},
            config_version=self.files.running_version(), config_sha256=self.files.digest(),
            probation_s=self.probation_s, modem=self.cellular.health() if self.cellular else None,
        )

    def status(self) -> dict[str, object]:
        """What `boxctl status` and systemd's STATUS show."""
        st = self.link.state
        buses = self.buses
        return {
            "pid": os.getpid(),
            "ts": time.time(),
            "connected": st.connected,
            "connected_since": st.since,
            "last_error": st.last_error,
            "queue_samples": self.queue.samples,
            "clock_ok": self.clock.confirmed(),
            "buses": len(buses.sources),
            "bus_health": {src.name: {"points": len(src.points()), "polling": src.name in buses.polling,
                                      **{k: v for k, v in src.stats().items() if k in ("requests", "errors")}}
                           for src in buses.sources},
            "points": len(buses.points.source_of),
            "config_version": self.files.running_version(),
            "config_sha256": self.files.digest(),
            "version": self.version,
            # always (not only on an update's trial): the Box image's boot trial reads it too
            "health_missing": self.missing(),
            "modem": self.cellular.status() if self.cellular else None,
        }

    async def heartbeat(self) -> None:
        """The ``heartbeat`` task."""
        while True:
            if self.link.connected():
                self.link.publish(Up.HEALTH, self.health().encode(), qos=1)
            self._beat_now.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.buses.cfg.uplink.heartbeat_s):
                    await self._beat_now.wait()

    async def watchdog(self) -> None:
        """The ``watchdog`` task."""
        interval = sdnotify.watchdog_interval() or 10.0
        while True:
            s = self.status()
            link = "connected" if s["connected"] else "not connected"
            sdnotify.notify(f"WATCHDOG=1\nSTATUS=uplink {link}, {s['queue_samples']} sample(s) queued")
            await asyncio.sleep(interval)

    async def runtime(self) -> None:
        """The ``runtime`` task."""
        run = self.state_dir / "run"
        run.mkdir(parents=True, exist_ok=True)
        path = run / "status.json"
        try:
            while True:
                files.write_atomic(path, json.dumps(self.status()).encode(), durable=False)
                await asyncio.sleep(1.0)
        finally:
            path.unlink(missing_ok=True)
