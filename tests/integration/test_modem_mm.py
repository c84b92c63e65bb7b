"""boxd's modem owner on the ModemManager backend, against ModemManager faked on a private D-Bus.

The fake (`drivers.sim.fake_mm`: a dbus-daemon of its own and python-dbusmock with
`drivers.sim.mm_template`) speaks ModemManager's D-Bus API as ModemManager 1.20 does; the backend
(`drivers.modem.MmModem`, dbus-fast) and the owner task (`boxd.modem.ModemManagerTask`) are the
real ones. A real ModemManager cannot run here: it probes real USB/QMI/MBIM devices and does not
take a pty, so this is a mock of the daemon (the one place where no real part can run), and the
AT backend's tests (`test_modem.py`) run on the simulated modem with a real data path instead.
The uplink is a stand-in that always works: these tests are about bring-up and configuration
faults (which must never reset the modem), not the ladder.
"""

from __future__ import annotations

import asyncio
import contextlib
import tomllib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from boxconfig import parse
from boxd.modem import ModemManagerTask
from drivers.modem import MmModem, make_backend
from drivers.sim import fake_mm
from proto.modem import ModemEvent, WanEvent

pytestmark = pytest.mark.skipif(fake_mm.available() is not None, reason=str(fake_mm.available()))


@pytest.fixture
def mm(tmp_path: Path) -> Iterator[fake_mm.FakeModemManager]:
    with fake_mm.FakeModemManager(tmp_path / "mm") as fake:
        yield fake


@contextlib.asynccontextmanager
async def owner(state: Path, address: str, apn: str = "internet.test") -> AsyncIterator[
        tuple[ModemManagerTask, list[ModemEvent | WanEvent]]]:
    """The modem's owner task running on the fake, checking every second."""
    raw = tomllib.loads(f'[modem]\napn = "{apn}"\ninterface = ""\npin_file = "sim.pin"\nsignal_s = 1\n'
                        "[modem.ladder]\ncheck_s = 1\n")
    settings = parse(raw).modem
    assert settings is not None
    events: list[ModemEvent | WanEvent] = []
    acks = iter(range(1_000_000))
    task = ModemManagerTask(settings, parse({}).wan, state, uplink=lambda: (True, 1, next(acks)),
                            platform=lambda: ("127.0.0.1", 1), put_event=events.append,
                            backend=MmModem(bus_address=address, timeout_s=5.0, network_timeout_s=10.0))
    running = asyncio.create_task(task.run())
    try:
        yield task, events
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def until(cond: Callable[[], object], what: str, limit_s: float = 30.0) -> None:
    """Poll `cond` (the task's state, set by the task on this loop) with a deadline."""
    deadline = asyncio.get_running_loop().time() + limit_s
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def _pin(state: Path, pin: str = "1234") -> None:
    state.mkdir(parents=True, exist_ok=True)
    (state / "sim.pin").write_text(pin + "\n")
    (state / "sim.pin").chmod(0o600)


def test_bring_up_unlocks_the_sim_registers_and_connects_with_the_configured_apn(mm: fake_mm.FakeModemManager,
                                                                                tmp_path: Path) -> None:
    state = tmp_path / "box"
    _pin(state)
    mm.fault("pin:3")

    async def scenario() -> None:
        async with owner(state, mm.address) as (task, events):
            await until(lambda: task.status()["state"] == "connected", "the bearer up")
            st = task.status()
            assert (st["sim"], st["reg"], st["operator"], st["iccid"]) == ("ready", "home", "Sim Telecom",
                                                                          "89490200001234567890")
            assert st["address"] == "100.64.9.2" and st["signal"]["grade"] == "fair"  # type: ignore[index]
            assert task.backend.name == "modemmanager" and not events

    asyncio.run(scenario())
    counts = mm.counts()
    assert counts.get("pin_tries") == 1 and counts.get("connects") == 1 and not counts.get("resets")


def test_configuration_faults_are_reported_and_never_reset_the_modem(mm: fake_mm.FakeModemManager,
                                                                     tmp_path: Path) -> None:
    """One attempt left: the PIN is never sent; no SIM, a refused APN, a denied registration: each
    said in words, each cleared when mended, and no reset at all."""
    state = tmp_path / "box"
    _pin(state)
    mm.fault("pin:1")

    async def scenario() -> None:
        async with owner(state, mm.address, apn="wrong.apn") as (task, events):
            await until(lambda: task.fault == "pin_unsafe", "the PIN held back at one attempt left")
            assert "only 1 attempt(s) left" in task.fault_text
            await mm.afault("pin:3")
            await until(lambda: task.fault == "apn_rejected", "the APN refused")
            assert "the network refused the APN 'wrong.apn'" in task.fault_text
            await mm.afault("sim-missing")
            await until(lambda: task.fault == "sim_missing", "no SIM")
            await mm.afault("sim-in")
            await mm.afault("denied")
            await until(lambda: task.fault == "registration_denied", "the registration denied")
            await mm.afault("home")
            await until(lambda: task.fault in ("", "apn_rejected"), "the denial cleared")
            faults = [e.cause for e in events if isinstance(e, ModemEvent) and e.event == "fault"]
            assert faults[:2] == ["pin_unsafe", "apn_rejected"]
            assert {"sim_missing", "registration_denied"} <= set(faults)
            assert task.ladder.state()["held"] or not any(isinstance(e, ModemEvent) and e.event == "recovery"
                                                          for e in events)

    asyncio.run(scenario())
    counts = mm.counts()
    assert counts.get("pin_tries") == 1  # only once three attempts were left again
    assert not counts.get("resets")


def test_direct_at_is_used_only_while_modemmanager_is_inhibited(mm: fake_mm.FakeModemManager, tmp_path: Path) -> None:
    """The AT backend (on the AT simulator's pty) tells ModemManager to keep off the device for as
    long as its port is open, and only then."""
    from drivers.sim._at_sim import ModemModel
    from drivers.sim.at_modem import AtModemSimulator

    async def scenario() -> None:
        sim = AtModemSimulator(tmp_path / "ttyUSB2", tmp_path / "modem.sock", model=ModemModel())
        await sim.start()
        backend = make_backend("at", str(tmp_path / "ttyUSB2"), bus_address=mm.address, timeout_s=2.0)
        try:
            assert await mm.acounts() == {}
            await backend.open()
            assert (await mm.acounts()).get("inhibits") == 1 and not (await mm.acounts()).get("uninhibits")
            assert (await backend.identity()).imei  # the modem answers on the port meanwhile
            await backend.close()
            assert (await mm.acounts()).get("uninhibits") == 1
        finally:
            await backend.close()
            await sim.stop()

    asyncio.run(scenario())
