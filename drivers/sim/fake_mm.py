"""ModemManager faked on a private D-Bus: a dbus-daemon of its own and python-dbusmock with
`drivers.sim.mm_template` (for the ModemManager backend's tests, the demo and HIL targets without a modem).

`FakeModemManager(workdir)` starts ``dbus-daemon`` (Debian's, with the session bus's policy, on a
socket in `workdir`) and ``python3 -m dbusmock --template mm_template.py`` on it (Debian's python3,
which has dbus-python and GLib; dbusmock itself, pinned, from `DBUSMOCK_DIR`, where
scripts/bootstrap.sh installs it). `address` is the bus to give the backend; `fault()` and
`counts()` drive and read the fake. `available()` says why it cannot run here.

Why a fake: a real ModemManager probes real devices (USB, QMI, MBIM) and does not take a pty.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType

from drivers.errors import SimulatorError

_REPO = Path(__file__).resolve().parents[2]
DBUSMOCK_DIR = Path(os.environ.get("BOXD_DBUSMOCK", _REPO / ".venv" / "dbusmock"))
TEMPLATE = Path(__file__).with_name("mm_template.py")
SYSTEM_PYTHON = "/usr/bin/python3"
SESSION_CONF = "/usr/share/dbus-1/session.conf"


def available() -> str | None:
    """None when the fake can run here, else why not."""
    if shutil.which("dbus-daemon") is None:
        return "dbus-daemon is not installed (Debian: dbus-daemon)"
    if not (DBUSMOCK_DIR / "dbusmock").is_dir():
        return f"python-dbusmock is not installed in {DBUSMOCK_DIR} (scripts/bootstrap.sh)"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import dbus, gi"], capture_output=True, timeout=30)
    if probe.returncode:
        return "Debian's python3 lacks dbus-python or GLib (python3-dbus, python3-gi)"
    return None


class FakeModemManager:
    """The private bus and the fake. A context manager; the constructor does no I/O."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.address = f"unix:path={workdir / 'bus'}"
        self._bus: subprocess.Popen[bytes] | None = None
        self._mock: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> FakeModemManager:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "fake-mm.log").open("ab")
        try:
            self._bus = subprocess.Popen(["dbus-daemon", f"--config-file={SESSION_CONF}", f"--address={self.address}",
                                          "--nofork", "--nopidfile"], stdout=log, stderr=log)
            self._wait((self.workdir / "bus").exists, "the private bus")
            env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.address, "PYTHONPATH": str(DBUSMOCK_DIR)}
            self._mock = subprocess.Popen([SYSTEM_PYTHON, "-m", "dbusmock", "--system", "--template", str(TEMPLATE)],
                                          env=env, stdout=log, stderr=log)
            self._wait(self._ready, "the fake ModemManager")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None) -> None:
        for proc in (self._mock, self._bus):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._mock = self._bus = None

    def _wait(self, ready: object, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not ready():  # type: ignore[operator]
            for proc in (self._bus, self._mock):
                if proc is not None and proc.poll() is not None:
                    raise SimulatorError(f"{what} exited; see {self.workdir / 'fake-mm.log'}")
            if time.monotonic() > deadline:
                raise SimulatorError(f"{what} did not start within {timeout:.0f} s")
            time.sleep(0.05)

    def _ready(self) -> bool:
        try:
            self.call("Counts")
        except SimulatorError:
            return False
        return True

    def call(self, method: str, *args: str) -> str:
        """Call the fake's control interface (``org.boxd.FakeModem``)."""
        return asyncio.run(self._call(method, list(args)))

    async def _call(self, method: str, args: list[str]) -> str:
        from dbus_fast import Message, MessageType
        from dbus_fast.aio import MessageBus

        try:
            bus = await MessageBus(bus_address=self.address).connect()
        except (OSError, EOFError) as e:
            raise SimulatorError(f"the private bus does not answer: {e}") from e
        try:
            reply = await bus.call(Message(destination="org.freedesktop.ModemManager1",
                                           path="/org/freedesktop/ModemManager1", interface="org.boxd.FakeModem",
                                           member=method, signature="s" if args else "", body=args))
        finally:
            bus.disconnect()
        if reply is None or reply.message_type == MessageType.ERROR:
            raise SimulatorError(f"the fake ModemManager refused {method}: {reply.body if reply else 'no reply'}")
        return str(reply.body[0]) if reply.body else ""

    def fault(self, fault: str) -> None:
        """Inject a fault (see `drivers.sim.mm_template`)."""
        self.call("Fault", fault)

    async def afault(self, fault: str) -> None:
        """`fault()` from a coroutine."""
        await self._call("Fault", [fault])

    async def acounts(self) -> dict[str, int]:
        """`counts()` from a coroutine."""
        return {str(k): int(v) for k, v in json.loads(await self._call("Counts", [])).items()}

    def counts(self) -> dict[str, int]:
        """What the backend did: resets, pin_tries, registrations, connects, inhibits."""
        return {str(k): int(v) for k, v in json.loads(self.call("Counts")).items()}
