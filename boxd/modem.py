"""The daemon's owner of the 4G modem: bring-up, the recovery ladder, signal, data used, the uplink choice.

`ModemManagerTask.run()` is one supervised task. Every `check_s` (every second while `boxctl modem
watch` asks, through a fresh ``<state>/run/modem-watch``) it:

1. opens the modem if it is not open (a port that went away, as on USB re-enumeration, is opened
   again when it is back: the configuration names a stable path, /dev/serial/by-id/...);
2. brings it up: the SIM (the PIN from the state directory, by `pin_verdict`'s rule), registration,
   the data bearer with the configured APN; a *configuration fault* (no SIM, wrong PIN, APN refused,
   registration denied) is reported once, as an event with its cause in words, and holds the ladder;
   a refused APN is asked again at a pause that doubles to an hour (or at once for a new APN);
3. gathers the evidence (the uplink's acknowledgements through `uplink()`, whether the modem
   answers, a TCP handshake with the platform's host when the uplink has been silent) and climbs
   the ladder (`_modem_ladder`) when it says so; each rung and each recovery is an event;
4. reads the signal (every `signal_s`), the interface's byte counters (`_modem_usage`), the budget
   (saving data is asked of the daemon through `on_save`), and moves the uplink between the
   preferred interface and the modem (`_wan`).

`health()` gives the modem's part of the heartbeat when `Reporter` says it is due; `status()` the
whole view for ``run/status.json`` (`boxctl modem status`). The constructor does no I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from boxconfig.modem import ModemSettings, WanSettings
from boxd import _wan
from boxd._modem_ladder import Action, Evidence, Ladder, Recovery
from boxd._modem_report import Reporter, fault_words, grade, pin_digest, pin_verdict, signal_report
from boxd._modem_store import ModemStore
from boxd._modem_usage import BudgetState, Usage, budget_state, period_start, slowed
from drivers.modem import (
    Bearer,
    ModemBackend,
    ModemError,
    ModemGone,
    ModemIdentity,
    ModemRefused,
    ModemTimeout,
    Registration,
    RegState,
    Signal,
    SimState,
    SimStatus,
    make_backend,
)
from drivers.modem import _netif as netif
from proto.modem import MAX_TEXT, ModemEvent, ModemReport, UsageReport, WanEvent

if TYPE_CHECKING:
    from boxconfig import BoxConfig

log = logging.getLogger("boxd.modem")
UplinkView = Callable[[], tuple[bool, int, int]]  # (connected, publishes owed an acknowledgement, acknowledgements)
WATCH_FILE = "run/modem-watch"
SAVE_EVERY_S = 60.0
PROBE_TIMEOUT_S = 5.0
APN_RETRY_S, APN_RETRY_MAX_S = 60.0, 3600.0
SAVE_BATCH_DELAY_MS = 30_000  # "bigger batches": readings wait this long to share one while saving data
DEFAULT_POWER_COMMAND = "systemctl start --no-block boxd-modem-power.service"
DEFAULT_REBOOT_COMMAND = "systemctl reboot"


class ModemManagerTask:
    """Owns the modem. `run()` is the supervised task."""

    def __init__(self, settings: ModemSettings, wan: WanSettings, state_dir: Path, *, uplink: UplinkView,
                 platform: Callable[[], tuple[str, int]], put_event: Callable[[ModemEvent | WanEvent], None],
                 wake_heartbeat: Callable[[], None] = lambda: None,
                 on_save: Callable[[bool], Awaitable[None]] | None = None,
                 backend: ModemBackend | None = None) -> None:
        self.settings, self.wan_settings, self.state_dir = settings, wan, state_dir
        self._uplink, self._platform, self._put_event, self._wake = uplink, platform, put_event, wake_heartbeat
        self._on_save = on_save
        # without them, the systemd defaults, and only in a boxd that systemd started (never a developer's machine)
        self.reboot_command = os.environ.get("BOXD_REBOOT_COMMAND", "")
        self.power_command = os.environ.get("BOXD_MODEM_POWER_COMMAND", "")
        self.route_command = os.environ.get("BOXD_ROUTE_COMMAND", _wan.DEFAULT_ROUTE_COMMAND)
        self._given_backend = backend
        self.backend: ModemBackend = backend or self._make_backend()
        self.store = ModemStore(state_dir)
        self.ladder = Ladder(settings.ladder)
        self.wan = _wan.WanChooser(wan)
        self.reporter = Reporter(float(settings.report_s))
        self.usage: Usage | None = None  # loaded in run()
        self.is_open = False
        self.answers = False
        self.identity = ModemIdentity()
        self.sim_state = SimState.UNKNOWN
        self.reg = Registration(RegState.UNKNOWN)
        self.signal = Signal()
        self.bearer_now = Bearer(False)
        self.fault, self.fault_text = "", ""
        self.saving = False
        self.note = ""  # the last thing said about the modem, for boxctl
        self._connected_at: float | None = None
        self._silent_since: float | None = None
        self._acks = -1
        self._apn_retry_at, self._apn_pause = 0.0, APN_RETRY_S
        self._signal_at = self._saved_at = 0.0
        self._misses = 0
        self._poor_since: float | None = None
        self._standby_since: float | None = None
        self._reported: Recovery | None = None
        self._pending_backend = False
        self._reconnect_needed = False
        self._apn_up = ""  # the APN of the bearer this task brought up
        self._link_now = (True, 0.0)  # the uplink's state at this check

    def _make_backend(self) -> ModemBackend:
        s = self.settings
        return make_backend(s.backend, s.port, interface=s.interface, baudrate=s.baudrate,
                            timeout_s=float(s.ladder.at_timeout_s),
                            network_timeout_s=float(max(s.ladder.bearer_timeout_s, 10)))

    def reconfigure(self, settings: ModemSettings, wan: WanSettings) -> None:
        """A new configuration: the next check uses it (a new APN is tried at once)."""
        old, self.settings = self.settings, settings
        if (settings.backend, settings.port, settings.baudrate, settings.interface) != \
                (old.backend, old.port, old.baudrate, old.interface) and self._given_backend is None:
            self._pending_backend = True
        if settings.apn != old.apn:
            self._apn_retry_at, self._apn_pause = 0.0, APN_RETRY_S
            if self.fault == "apn_rejected":
                self._set_fault("", "")
            self._reconnect_needed = True
        self.ladder.settings = settings.ladder
        self.reporter.min_interval_s = float(settings.report_s)
        if wan != self.wan_settings:
            self.wan_settings, self.wan = wan, _wan.WanChooser(wan)

    # -- the task ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Check the modem every `check_s` until cancelled; the modem is closed and the count kept at the end."""
        self.usage = self.store.load_usage()
        self.ladder.ledger = self.store.load_ladder()
        try:
            while True:
                await self._check()
                await asyncio.sleep(1.0 if self._watched() else float(self.settings.ladder.check_s))
        finally:
            self._count(durable=True)
            with contextlib.suppress(Exception):
                await self.backend.close()

    def _watched(self) -> bool:
        try:
            return time.time() - (self.state_dir / WATCH_FILE).stat().st_mtime < 3.0
        except OSError:
            return False

    async def _check(self) -> None:
        now = time.monotonic()
        if self._pending_backend:
            self._pending_backend = False
            await self.backend.close()
            self.backend, self.is_open = self._make_backend(), False
        try:
            await self._bring_up(now)
            self.answers, self._misses = True, 0
        except ModemTimeout as e:
            self._misses += 1
            self.answers = self._misses < 2
            self._say(f"the modem does not answer ({e})")
        except ModemGone as e:
            self.answers, self.is_open = False, False
            self._say(str(e))
            with contextlib.suppress(Exception):
                await self.backend.close()
        except ModemError as e:
            self._say(f"the modem: {e}")
        if self._count() and self._on_save is not None:
            await self._on_save(self.saving)
        evidence = await self._evidence(now)
        action = self.ladder.step(evidence)
        self._report_recovery()
        if action is not None:
            await self._climb(action)
        await self._choose_wan(now, evidence)
        if self.reporter.due_in(now) == 0 and self.reporter.changed(self._doc()):
            self._wake()

    async def _bring_up(self, now: float) -> None:
        b = self.backend
        if not self.is_open:
            await b.open()
            self.is_open = True
            self.identity = await b.identity()
            log.info("modem: %s %s (IMEI %s), SIM %s", self.identity.manufacturer, self.identity.model,
                     self.identity.imei, self.identity.iccid or "none")
        if not await self._sim_ready():
            self.bearer_now = Bearer(False)  # no SIM, no data session
            return None
        self.reg = await b.registration()
        if self.reg.state == RegState.DENIED:
            return self._set_fault("registration_denied", fault_words("registration_denied"))
        if self.fault == "registration_denied":
            self._set_fault("", "")
        if now - self._signal_at >= (1.0 if self._watched() else self.settings.signal_s):
            self.signal, self._signal_at = await b.signal(), now
            poor = grade(self.signal) == "poor"
            self._poor_since = (self._poor_since or now) if poor else None
        was = self.bearer_now.connected
        if not self.reg.state.registered:
            if was:
                self._lost(f"the modem lost the network (registration {self.reg.state.value}); waiting for it")
            self.bearer_now = Bearer(False)
            return None
        self.bearer_now = await b.bearer()
        if was and not self.bearer_now.connected:
            self._lost("the network dropped the data bearer; connecting again")
        if self._reconnect_needed and self.bearer_now.connected:
            self._reconnect_needed = False
            self._count()
            await b.disconnect()
            self.bearer_now = Bearer(False)
        if not self.bearer_now.connected and now >= self._apn_retry_at:
            await self._connect(now)
        return None

    async def _sim_ready(self) -> bool:
        """Whether the SIM is there and unlocked (else its configuration fault is set)."""
        b = self.backend
        sim = await b.sim()
        if sim.state == SimState.READY and self.sim_state not in (SimState.READY, SimState.UNKNOWN):
            self.identity = await b.identity()  # a SIM back (perhaps another one: its ICCID is reported)
        self.sim_state = sim.state
        if sim.state == SimState.MISSING:
            self._set_fault("sim_missing", fault_words("sim_missing"))
            return False
        if sim.state == SimState.FAILURE:
            self._set_fault("sim_failure", fault_words("sim_failure"))
            return False
        if sim.state in (SimState.PIN_REQUIRED, SimState.PUK_REQUIRED):
            if not await self._unlock(sim):
                return False
            sim = await b.sim()
            self.sim_state = sim.state
            self.identity = await b.identity()
        if self.fault in ("sim_missing", "sim_failure", "pin_required", "pin_wrong", "pin_unsafe", "puk_required"):
            self._set_fault("", "")
        return True

    async def _unlock(self, sim: SimStatus) -> bool:
        pin, problem = self.store.read_pin(self.settings.pin_file)
        verdict = pin_verdict(sim, pin, self.store.refused_pin)
        if not verdict.send:
            detail = problem if verdict.cause == "pin_required" else ""
            self._set_fault(verdict.cause, fault_words(verdict.cause, attempts=sim.pin_attempts, detail=detail))
            return False
        try:
            await self.backend.unlock(pin)
        except ModemRefused as e:
            if e.cause != "pin_wrong":
                raise
            self.store.refused_pin = pin_digest(pin)
            self.store.save_ladder(self.ladder.ledger)
            self._set_fault("pin_wrong", fault_words("pin_wrong"))
            return False
        log.info("modem: the SIM is unlocked")
        return True

    async def _connect(self, now: float) -> None:
        apn = self.settings.apn
        try:
            self.bearer_now = await self.backend.connect(apn)
        except ModemRefused as e:
            if e.cause != "apn_rejected":
                raise
            self._apn_retry_at, self._apn_pause = now + self._apn_pause, min(APN_RETRY_MAX_S, self._apn_pause * 2)
            self._set_fault("apn_rejected", fault_words("apn_rejected", apn=apn))
            return
        if self.fault == "apn_rejected":
            self._set_fault("", "")
        self._apn_pause, self._apn_up = APN_RETRY_S, apn
        log.info("modem: data bearer up with APN %s (%s)", apn, self.bearer_now.address or "no address yet")

    # -- evidence, ladder, uplink choice ---------------------------------------------------------

    def _link(self, now: float) -> tuple[bool, float]:
        """(the uplink works, how long it has owed an acknowledgement or been disconnected)."""
        connected, owed, acks = self._uplink()
        progressed, self._acks = acks != self._acks, acks
        if connected and (owed == 0 or progressed):
            self._silent_since = None if owed == 0 else now
            return True, 0.0
        self._silent_since = self._silent_since if self._silent_since is not None else now
        return False, now - self._silent_since

    async def _evidence(self, now: float) -> Evidence:
        link_ok, silent = self._link_now = self._link(now)
        if self.wan.active != "cellular":  # on standby: the modem's own state is the evidence
            ready = self.answers and self.bearer_now.connected and self.reg.state.registered
            self._standby_since = None if ready else self._standby_since or now
            link_ok, silent = ready, 0.0 if ready else now - (self._standby_since or now)
        ev = Evidence(now, time.time(), link_ok, silent, self.answers, None, self.fault,
                      other_wan=self.wan.active != "cellular")
        if self.ladder.wants_probe(ev) and self.wan.active == "cellular" and self.answers:
            ev = Evidence(now, ev.wall, link_ok, silent, self.answers, await self._probe(), self.fault, ev.other_wan)
        return ev

    async def _probe(self) -> bool:
        """Whether the platform's host answers a TCP handshake (a refusal is an answer too)."""
        host, port = self._platform()
        try:
            async with asyncio.timeout(min(PROBE_TIMEOUT_S, float(self.settings.ladder.silent_s))):
                _, writer = await asyncio.open_connection(host, port)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True
        except ConnectionRefusedError:
            return True
        except (OSError, TimeoutError):
            return False

    async def _climb(self, action: Action) -> None:
        log.warning("modem: %s", action.words)
        self._say(f"the modem does not answer: {action.words.split(': ')[0]}" if not self.answers else action.words)
        self._put_event(ModemEvent("recovery", rung=action.rung, why=action.why[:MAX_TEXT]))
        self._count(durable=True)
        self.store.save_ladder(self.ladder.ledger)
        try:
            if action.rung == "reconnect":
                with contextlib.suppress(ModemRefused):
                    await self.backend.disconnect()
                await self._connect(time.monotonic())
            elif action.rung == "reregister":
                await self.backend.register()
            elif action.rung == "reset":
                self.is_open = False
                await self.backend.reset()
            elif action.rung == "power_cycle":
                self.is_open = False
                await self.backend.close()
                await _run(self.power_command, DEFAULT_POWER_COMMAND, "power-cycle the modem")
            elif action.rung == "reboot":
                await _run(self.reboot_command, DEFAULT_REBOOT_COMMAND, "reboot the Box")
        except ModemError as e:
            log.warning("modem: %s failed: %s", action.rung, e)

    def _report_recovery(self) -> None:
        r = self.ladder.recovered
        if r is not None and self._reported is not r:
            self._reported = r
            log.info("modem: the link is back (%s, after %.0f s)", r.rung or "by itself", r.took_s)
            self._put_event(ModemEvent("recovered", rung=r.rung, why=r.why[:MAX_TEXT], took_s=r.took_s))
            self._say(f"the link came back after {r.took_s:.0f} s" + (f" ({r.rung})" if r.rung else ""))

    async def _choose_wan(self, now: float, ev: Evidence) -> None:
        prefer = self.wan_settings.prefer
        if not prefer:
            return
        up = netif.running(prefer) and bool(netif.address(prefer))
        link_ok, silent = self._link_now if self.wan.active == "preferred" else (True, 0.0)
        switch = self.wan.step(now, up, link_ok, silent)
        if switch is None:
            return
        metric = _wan.DEMOTED_METRIC if switch.to == "cellular" else _wan.PREFERRED_METRIC
        error = await _wan.set_metric(self.route_command, prefer, metric)
        interface = prefer if switch.to == "preferred" else (self.settings.interface or "the modem")
        log.warning("wan: the uplink moves to %s: %s%s", interface, switch.why, f" ({error})" if error else "")
        self._put_event(WanEvent(switch.to, interface, switch.why[:MAX_TEXT], error=error[:MAX_TEXT]))
        self._silent_since = None

    # -- data used -----------------------------------------------------------------------------

    def _count(self, *, durable: bool = False) -> bool:
        """Add what the interface moved (kept on disk every minute, or now); whether saving data changed."""
        usage = self.usage
        if usage is None:
            return False
        interface = self.settings.interface or self.bearer_now.interface
        usage.roll(period_start(dt.datetime.now().astimezone(), self.settings.billing_day).isoformat())
        if interface:
            usage.take(netif.counters(interface), netif.index(interface))
        now = time.monotonic()
        if durable or now - self._saved_at >= SAVE_EVERY_S:
            self.store.save_usage(usage, durable=durable)
            self._saved_at = now
        saving = self.budget().save
        if saving == self.saving:
            return False
        self.saving = saving
        log.warning("modem: %s", "over the data budget's pace: saving data (bigger batches, slower points)"
                    if saving else "within the data budget again")
        return True

    def budget(self) -> BudgetState:
        """The budget's verdict now."""
        return budget_state(self.usage or Usage(), self.settings.budget_mb, dt.datetime.now().astimezone(),
                            self.settings.billing_day)

    # -- reports -------------------------------------------------------------------------------

    def _set_fault(self, cause: str, words: str) -> None:
        if cause == self.fault:
            return
        self.fault, self.fault_text = cause, words
        if cause:
            log.error("modem: %s", words)
            self._say(words)
            self._put_event(ModemEvent("fault", cause=cause, words=words[:MAX_TEXT]))
        else:
            log.info("modem: the configuration fault is cleared")
            self._put_event(ModemEvent("fault_cleared"))
        self._wake()

    def _lost(self, words: str) -> None:
        """The data session went (the network's doing: no rung, no fault; the next check acts)."""
        log.warning("modem: %s", words)
        self._say(words)
        self._wake()  # the modem's state in the next heartbeat

    def _say(self, text: str) -> None:
        if text != self.note:
            self.note = text

    def report(self) -> ModemReport:
        """The modem now, as the heartbeat carries it (text from the modem cut to the report's bounds)."""
        b, u = self.budget(), self.usage or Usage()
        weak = self._poor_since is not None and time.monotonic() - self._poor_since >= self.settings.weak_signal_s
        reg, ident = self.reg, self.identity
        return ModemReport(
            state="fault" if self.fault else "connected" if self.bearer_now.connected else
            "registered" if reg.state.registered else "searching" if self.answers else "no answer",
            reg=reg.state.value, operator=reg.operator[:64], plmn=reg.plmn[:8], cell=reg.cell[:32],
            band=reg.band[:32], iccid=ident.iccid[:24], imei=ident.imei[:20], signal=signal_report(self.signal),
            weak=weak, wan=self.wan.active, fault=self.fault,
            usage=UsageReport(u.period[:40], u.rx, u.tx, b.budget, b.near, b.save),
        )

    def _doc(self) -> dict[str, object]:
        return self.report().to_doc()

    def health(self) -> ModemReport | None:
        """The modem's part of the heartbeat when it is due, else None (see `Reporter`)."""
        report = self.report()
        return report if self.reporter.take(report.to_doc(), time.monotonic()) is not None else None

    def status(self) -> dict[str, object]:
        """Everything, for ``run/status.json`` and `boxctl modem status`."""
        return {**self._doc(), "backend": self.backend.name, "port": self.settings.port, "apn": self.settings.apn,
                "interface": self.settings.interface, "address": self.bearer_now.address,
                "fault_text": self.fault_text, "note": self.note, "answers": self.answers,
                "sim": self.sim_state.value, "tech": self.reg.tech or self.signal.tech,
                "ladder": self.ladder.state(), "model": f"{self.identity.manufacturer} {self.identity.model}".strip()}

    def shape(self, cfg: BoxConfig) -> BoxConfig:
        """The configuration to run: while saving data, points that are not critical are polled less often."""
        return slowed(cfg, self.settings.slow_factor, self.settings.is_critical) if self.saving else cfg

    def settled(self) -> bool:
        """Whether the modem has tried the configured APN (connected with it, or a fault said why not)."""
        return bool(self.fault) or (self.bearer_now.connected and self._apn_up == self.settings.apn)

    def batch_delay_ms(self, configured: int) -> int:
        """How long readings wait to share a batch (longer while saving data)."""
        return max(configured, SAVE_BATCH_DELAY_MS) if self.saving else configured


async def _run(command: str, default: str, what: str) -> None:
    """Run a command from the environment (words split like a shell's; no shell), else `default`
    under systemd only."""
    import shlex

    if not command:
        if not os.environ.get("INVOCATION_ID"):
            log.error("modem: this boxd was not started by systemd: it does not %s (set the command in the "
                      "environment: BOXD_MODEM_POWER_COMMAND, BOXD_REBOOT_COMMAND)", what)
            return
        command = default
    argv = shlex.split(command)
    try:
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.DEVNULL)
        async with asyncio.timeout(60):
            status = await proc.wait()
    except (OSError, TimeoutError) as e:
        log.error("modem: cannot %s with %r: %s", what, command, e)
        return
    if status:
        log.error("modem: %r failed (exit %d): cannot %s", command, status, what)
