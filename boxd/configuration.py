"""Configuration pushes: applied without a restart, watched on probation, rolled back by themselves.

`Configurator.on_push` takes a push from the platform (untrusted: decoded and checked by
`boxd.downlink.decode_config`, in a thread: up to seconds of TOML), and answers on
``up/replies``:

- "rejected" with every reason, nothing changed (a version handled before is ignored: the
  retained push comes again at every connection);
- "applied": written atomically (`boxd.reconfig.ConfigFiles`), the buses replaced
  (`FieldBuses.replace`); a bus that cannot even be built brings the previous configuration
  back ("rejected");
- then, when there is a last good configuration to go back to, a probation (a job of the
  supervisor): "kept" at the first good reading, or "rolled_back" with what the devices said
  when none came within `probation_s`. A push during a probation keeps the proven
  configuration as the last good one.
"""

from __future__ import annotations

import asyncio
import logging
import time
import tomllib

import boxconfig as config
from boxconfig.errors import ConfigError
from boxd import downlink
from boxd.cellular import Cellular
from boxd.fieldbus import FieldBuses
from boxd.link import Link
from boxd.reconfig import ConfigFiles
from boxd.supervisor import Supervisor
from drivers import Quality
from drivers.errors import DriverError
from proto.downlink import MAX_VERSION, peek
from proto.errors import RejectedError
from proto.replies import ON_PROBATION, config_reply

log = logging.getLogger("boxd")


def peek_version(payload: bytes) -> int:
    """The version a push says it has, if it says one that could be valid (0 otherwise)."""
    v = peek(payload, "version")
    return v if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_VERSION else 0


def parse_text(text: bytes) -> config.BoxConfig:
    """A configuration's text, parsed and validated (RejectedError says why not)."""
    try:
        return config.parse(tomllib.loads(text.decode("utf-8")))
    except (UnicodeDecodeError, ValueError, RecursionError, ConfigError) as e:
        raise RejectedError(f"the last good configuration is not valid: {str(e)[:200]}") from e


class Configurator:
    """Owns configuration changes and their probation. The constructor does no I/O."""

    def __init__(self, files: ConfigFiles, buses: FieldBuses, link: Link, supervisor: Supervisor,
                 probation_s: float, *, cellular: Cellular | None = None) -> None:
        self.files = files
        self.cellular = cellular
        self.buses = buses
        self.link = link
        self.probation_s = probation_s
        self._supervisor = supervisor
        self._lock = asyncio.Lock()
        self._generation = 0  # configurations run since start: a probation watches one of them
        self._watched = 0  # the generation the latest probation watches (0: none yet)
        self._on_probation = False  # the latest probation still runs

    def _reply(self, payload: bytes) -> None:
        self.link.reply(payload)

    async def on_push(self, payload: bytes) -> None:
        """Handle a configuration push (see the module's docstring)."""
        try:
            push = await asyncio.to_thread(downlink.decode_config, payload)  # up to seconds of TOML
        except RejectedError as e:
            version = peek_version(payload)
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
        async with self._lock:
            # the running configuration becomes the last good one only if it gave good readings;
            # one still on probation leaves the last good one as it is (and the new one is watched)
            worked = self.buses.good > 0
            on_probation = self._on_probation
            previous, previous_text = self.buses.cfg, self.files.running
            try:
                if text != previous_text:
                    self.files.install(text, keep_running=worked)
            except OSError as e:
                log.error("configuration %d not applied: %s", push.version, e)
                self._reply(config_reply(push.version, "rejected", [f"cannot write the configuration: {e}"]))
                return
            self._handled(push.version)
            self._generation += 1
            try:
                await self.buses.replace(push.config)
            except Exception as e:  # a rollback guard: whatever stopped the new buses, the old ones run again
                log.exception("configuration %d cannot start; back to the one before", push.version)
                self.files.install(previous_text, keep_running=False)
                await self.buses.replace(previous)
                self._reply(config_reply(push.version, "rejected", [f"cannot start it: {e}"]))
                return
        log.info("configuration %d applied", push.version)
        self.files.remember(text, push.version)
        if self.buses.points.source_of and self.files.last_good.exists() and (worked or on_probation):
            self._reply(config_reply(push.version, "applied", [
                f"{ON_PROBATION} for {self.probation_s:g} s: kept once a device gives a good reading, "
                "else rolled back"]))
            version, generation = push.version, self._generation
            self._watched, self._on_probation = generation, True
            self._supervisor.spawn("probation", lambda: self._watch(version, generation))
        else:
            self._reply(config_reply(push.version, "applied"))

    async def reapply(self) -> None:
        """Run the running configuration again (at the pace the modem's data budget asks)."""
        async with self._lock:
            await self.buses.replace(self.buses.cfg)

    def _refused_apn(self) -> str:
        return self.cellular.refused_apn() if self.cellular is not None else ""

    def _handled(self, version: int) -> None:
        try:
            self.files.set_handled(version)
        except OSError as e:
            log.warning("cannot keep the configuration version in %s: %s", self.files.version_file, e)

    async def _watch(self, version: int, generation: int) -> None:
        try:
            await self._probation(version, generation)
        finally:
            if generation == self._watched:  # the latest probation ended (kept, rolled back or replaced)
                self._on_probation = False

    async def _probation(self, version: int, generation: int) -> None:
        """If none of the new configuration's points gives a good reading in `probation_s`
        (while the previous one had), or the network refuses its APN, go back to the last good
        configuration."""
        deadline = time.monotonic() + self.probation_s
        while time.monotonic() < deadline:
            if generation != self._generation:
                return  # another configuration came meanwhile: its own probation watches
            if self._refused_apn():
                break
            if self.buses.good and (self.cellular is None or self.cellular.settled()):
                log.info("configuration %d works (good readings): kept", version)
                self._reply(config_reply(version, "kept"))
                return
            await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        refused = self._refused_apn()
        if (self.buses.good and not refused) or generation != self._generation:
            return
        seen = ", ".join(f"{Quality(q).name.lower()} x{n}"
                         for q, n in sorted(self.buses.faults.items())) or "no reading"
        why = (f"{refused}; back to the last good configuration" if refused else
               f"no device of configuration {version} gave a good reading in {self.probation_s:g} s ({seen}); "
               "back to the last good configuration")
        log.error("%s", why)
        try:
            text = self.files.last_good.read_bytes()
            cfg = await asyncio.to_thread(parse_text, text)
            async with self._lock:
                if generation != self._generation or (self.buses.good and not refused):
                    return
                self.files.restore()
                self._generation += 1
                await self.buses.replace(cfg)
        except (OSError, RejectedError, DriverError) as e:
            log.error("cannot roll configuration %d back: %s", version, e)
            return
        if refused and self.cellular is not None:  # the link was down: answer once the broker acknowledges again
            await self.cellular.link_back()
        self._reply(config_reply(version, "rolled_back", [why]))
