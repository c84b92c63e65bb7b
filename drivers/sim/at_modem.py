"""A simulated 4G modem on a pseudo-terminal, with faults and a control socket; also its CLI.

Does: open a pty pair and serve AT commands on its master end (`_at_sim.AtResponder` answers),
keep a stable name for the Box's configuration (`link`, a symbolic link to the current pty, as
udev's /dev/serial/by-id/ names are), and act as a modem's USB device does: after AT+CFUN=1,1 or a
power-cycle the port goes away for `boot_s` and comes back as *another* pty (re-enumeration) with
``RDY``. Its data path is a `Plant` (`drivers.sim._cell.NetnsBearer`: a real interface in the Box's
network namespace that goes up and down with the bearer). Faults beyond `_at_sim`'s: noise on the
line (``garbage``), bursts of URCs (``urc-storm``), the port unplugged for a while (``unplug``).

Control: a Unix socket at `control`, one command a line, answered "ok ..." or "error ..."::

    power-cycle | reboot-box | fault stall|detach|wedge|stuck | silence S | garbage on|off |
    urc-storm N | unplug S | network home|roaming|denied|searching | sim in|out |
    pin N (PIN required, N attempts left) | apns A,B | signal RSRP RSRQ SINR RSSI | iccid DIGITS | counts

CLI (the demo's modem; Ctrl-C stops it)::

    python -m drivers.sim.at_modem serve --link DIR/modem --control DIR/modem.sock [--vendor quectel|generic]
    python -m drivers.sim.at_modem control DIR/modem.sock power-cycle      # what a Box's power unit would do

Does not: speak PPP or QMI (the kernel here has no PPP; the data path is the plant's interface).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
import tty
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from drivers.errors import SimulatorError
from drivers.sim._at_sim import AtResponder, ModemModel, NoPlant, Plant

__all__ = ["AtModemSimulator", "control", "main"]
MAX_INPUT = 4096
NOISE = b"\r\n\xff\xfe\x00\x1b[0;~\x80garbage\x00\r\n"


class AtModemSimulator:
    """The modem. The constructor does no I/O; `start()` opens the pty and the control socket."""

    def __init__(self, link: Path, control: Path, *, model: ModemModel | None = None, plant: Plant | None = None,
                 boot_s: float = 1.0) -> None:
        self.link, self.control_path = link, control
        self.model = model or ModemModel()
        self.plant: Plant = plant or NoPlant()
        self.responder = AtResponder(self.model, self.plant)
        self.boot_s = boot_s
        self.path = ""  # the current pty (changes on every re-enumeration)
        self.garbage = False
        self.box_reboots = 0
        self._master = self._slave = -1
        self._input = bytearray()
        self._output = bytearray()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- life ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the pty, point `link` at it, listen on the control socket."""
        self._loop = asyncio.get_running_loop()
        self.link.parent.mkdir(parents=True, exist_ok=True)
        self._plug()
        with contextlib.suppress(FileNotFoundError):
            self.control_path.unlink()
        self._server = await asyncio.start_unix_server(self._client, path=str(self.control_path))
        self.control_path.chmod(0o600)

    async def stop(self) -> None:
        """Close everything (the plant's interface stays for its owner to remove)."""
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self._unplug()
        with contextlib.suppress(FileNotFoundError):
            self.control_path.unlink()

    def _plug(self, avoid: str = "") -> None:
        master, slave = os.openpty()
        if avoid and os.ttyname(slave) == avoid:  # the kernel gave the old number again: take the next one
            other = os.openpty()
            os.close(master)
            os.close(slave)
            master, slave = other
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave, self.path = master, slave, os.ttyname(slave)
        tmp = self.link.with_name(f".{self.link.name}.{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(self.path)
        tmp.replace(self.link)
        assert self._loop is not None
        self._loop.add_reader(master, self._readable)
        self._input.clear()
        self._output.clear()

    def _unplug(self) -> None:
        if self._master < 0:
            return
        assert self._loop is not None
        self._loop.remove_reader(self._master)
        self._loop.remove_writer(self._master)
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._master = self._slave = -1
        self.path = ""

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _away(self, seconds: float, then: Callable[[], None] | None = None) -> None:
        """The USB device goes away for `seconds` and comes back under a new name (re-enumeration)."""
        await asyncio.sleep(0.1)  # the answer before (OK to AT+CFUN=1,1) is read first
        old = self.path
        self._unplug()
        reenumerate = getattr(self.plant, "reenumerate", None)
        if reenumerate is not None:
            await asyncio.to_thread(reenumerate)
        await asyncio.sleep(seconds)
        if then is not None:
            then()
        self._plug(avoid=old)
        self._send(["RDY"])

    # -- the serial line -----------------------------------------------------------------

    def _readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError:  # EIO: nobody has the port open: nothing to read
            return
        self._input += data
        if len(self._input) > MAX_INPUT:
            del self._input[:-MAX_INPUT]
        while (cut := self._input.find(b"\r")) >= 0:
            line = self._input[:cut].decode("ascii", "replace").strip("\n\x00 ")
            del self._input[:cut + 1]
            self._command(line)

    def _command(self, line: str) -> None:
        echo = self.model.echo
        answer = self.responder.handle(line, time.monotonic())
        if answer is None:
            return
        self._send(answer, echo=echo)
        if line.upper() == "AT+CFUN=1,1" and answer[-1] == "OK":
            self._spawn(self._away(self.boot_s, lambda: self.responder.restart(power=False)))

    def _send(self, lines: list[str], *, echo: bool = False) -> None:
        out = bytearray()
        for i, text in enumerate(lines):
            if self.garbage:
                out += NOISE
            out += text.encode("ascii", "replace") + b"\r" if echo and i == 0 else b"\r\n" + text.encode() + b"\r\n"
        self._write(bytes(out))

    def _write(self, data: bytes) -> None:
        if self._master < 0:
            return
        self._output += data
        self._flush()

    def _flush(self) -> None:
        assert self._loop is not None
        try:
            while self._output:
                n = os.write(self._master, self._output)
                del self._output[:n]
        except BlockingIOError:
            self._loop.add_writer(self._master, self._flush)
            return
        except OSError:
            self._output.clear()
        self._loop.remove_writer(self._master)

    # -- control ---------------------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    answer = "ok " + await self.do(line.decode(errors="replace").strip())
                except (ValueError, IndexError) as e:
                    answer = f"error {e}"
                writer.write(answer.encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def do(self, command: str) -> str:
        """Carry out one control command (see the module's docstring); what to answer after "ok".

        Raises:
            ValueError: an unknown command or a bad value.
        """
        words = command.split()
        if not words:
            raise ValueError("empty command")
        verb, args = words[0], words[1:]
        if verb == "counts":
            return json.dumps({**self.model.counts, "box_reboots": self.box_reboots, "path": self.path})
        action = self._actions().get(verb)
        if action is None:
            raise ValueError(f"unknown command {verb!r}")
        action(args)
        return ""

    def _actions(self) -> dict[str, Callable[[list[str]], None]]:
        m, r = self.model, self.responder

        def power(box: bool) -> Callable[[list[str]], None]:
            def act(_: list[str]) -> None:
                self.box_reboots += box
                self._spawn(self._away(self.boot_s, lambda: r.restart(power=True, count=not box)))
            return act

        def signal(a: list[str]) -> None:
            m.rsrp, m.rsrq, m.sinr, m.rssi = (int(v) for v in a[:4])

        def pin(a: list[str]) -> None:  # another SIM, with a PIN, as after a swap
            r.set_sim(False)
            m.pin_enabled, m.unlocked, m.pin_attempts, m.sim_present = True, False, int(a[0]), True

        return {
            "power-cycle": power(False), "reboot-box": power(True),
            "fault": lambda a: r.fault(a[0], time.monotonic()),
            "silence": lambda a: r.fault("silence", time.monotonic(), float(a[0])),
            "garbage": lambda a: setattr(self, "garbage", a[0] == "on"),
            "urc-storm": lambda a: self._write(b"".join(b'\r\n+QIND: "csq",%d,99\r\n' % (i % 32)
                                                        for i in range(int(a[0])))),
            "unplug": lambda a: self._spawn(self._away(float(a[0]))),
            "network": lambda a: r.set_network(a[0]), "sim": lambda a: r.set_sim(a[0] == "in"), "pin": pin,
            "apns": lambda a: setattr(m, "apns", tuple(a[0].split(","))), "signal": signal,
            "iccid": lambda a: setattr(m, "iccid", a[0]),
        }

def control(path: Path, command: str, timeout: float = 10.0) -> str:
    """Send one control command to a running simulator; its answer after "ok".

    Raises:
        SimulatorError: the simulator is not there or refused the command.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
            s.sendall(command.encode() + b"\n")
            answer = s.makefile("r").readline().strip()
        except OSError as e:
            raise SimulatorError(f"the modem simulator at {path} does not answer: {e}") from e
    if not answer.startswith("ok"):
        raise SimulatorError(f"the modem simulator refused {command!r}: {answer}")
    return answer[3:]


async def _serve(args: argparse.Namespace) -> None:
    model = ModemModel(vendor=args.vendor, apns=tuple(args.apns.split(",")))
    sim = AtModemSimulator(args.link, args.control, model=model)
    await sim.start()
    print(f"ready {sim.path} (link {args.link}, control {args.control})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await sim.stop()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m drivers.sim.at_modem``."""
    p = argparse.ArgumentParser(prog="python -m drivers.sim.at_modem", description="A simulated 4G modem on a pty.")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the modem until Ctrl-C")
    s.add_argument("--link", type=Path, required=True, help="the stable name of its port (a symbolic link)")
    s.add_argument("--control", type=Path, required=True, help="its control socket")
    s.add_argument("--vendor", choices=["quectel", "generic"], default="quectel")
    s.add_argument("--apns", default="internet.test", help="the APNs the network accepts (comma-separated)")
    c = sub.add_parser("control", help="send one command to a running simulator")
    c.add_argument("socket", type=Path)
    c.add_argument("words", nargs="+")
    args = p.parse_args(argv)
    if args.cmd == "control":
        try:
            print(control(args.socket, " ".join(args.words)))
        except SimulatorError as e:
            print(f"at_modem: {e}", file=sys.stderr)
            return 1
        return 0
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
