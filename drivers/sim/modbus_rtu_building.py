"""A Modbus RTU simulator of an RS-485 line, on a pseudo-terminal pair, with faults.

Does: open a pty pair, keep its master end and serve the line's units (7 meter2, 8
meter3, 9 room2 of `drivers.sim._building`) there, so that a Box opens the slave end
(`path`, e.g. /dev/pts/3) as its serial port; move the values in a task of its own;
find frames by t3.5 of silence (a frame whose length is known is taken at once),
check the CRC, answer from the building state (`_rtu_slave`), and inject the same
faults as the TCP simulator (`FaultInjection`: no answer, slow, an exception or
silence for reads over N registers, garbled CRC) plus `restart` (writable points
back to their defaults, the unit silent for ``down_s``). If the Box's port settings
(read back from the pty) differ from the simulator's line settings, every answer is
noise, as a real line at the wrong baud rate shows. `stats()` counts frames, CRC
errors and frames that came sooner than t3.5 after an answer (a master breaking the
inter-frame timing). Also a CLI that prints the pty path and the Box's
``[[modbus_rtu]]`` table (as TOML, the path line being a comment) until Ctrl-C::

    python -m drivers.sim.modbus_rtu_building [--baudrate 9600]

Does not: simulate the time bytes take on the wire (a pty delivers at once), or
collisions; pymodbus's server is not used (its RTU framer cannot be given faults).
This kernel refuses parity and 7 data bits on a pty (EINVAL): the simulated line is
8N1 or 8N2.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import termios
import time
import tty
from collections import Counter
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Final

from drivers._types import Value
from drivers.errors import SimulatorError
from drivers.modbus._config import ModbusRtuLine, Parity
from drivers.modbus._rtu_frame import MAX_FRAME, request_length, silent_interval_s
from drivers.sim._building import RTU_UNITS, BuildingState, building_rtu_line, building_rtu_points_toml
from drivers.sim._faults import Action, FaultInjection
from drivers.sim._rtu_slave import answer, exception_frame, garble, parse_request

__all__ = ["RtuBuildingSimulator", "main"]

_SPEEDS: Final[dict[int, int]] = {
    b: getattr(termios, f"B{b}") for b in (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
}
_NOISE: Final = bytes([0xFF, 0x00, 0xF0, 0x80, 0x7E, 0xFE, 0x00])  # what the wrong baud rate reads


class RtuBuildingSimulator(FaultInjection):
    """The simulated line on a pty. The constructor does no I/O; `path` exists once started."""

    def __init__(
        self, *, units: Mapping[int, tuple[str, str]] = RTU_UNITS, baudrate: int = 9600,
        parity: Parity = "N", stopbits: int = 1, bytesize: int = 8,
        update_interval_s: float = 0.5, seed: int = 0,
    ) -> None:
        super().__init__()
        if baudrate not in _SPEEDS:
            raise SimulatorError(f"baud rate {baudrate} is not one of {sorted(_SPEEDS)}")
        self.baudrate, self.parity, self.stopbits, self.bytesize = baudrate, parity, stopbits, bytesize
        self.silence_s = silent_interval_s(baudrate, bytesize, parity, stopbits)
        self.state = BuildingState(seed, units)
        self._interval = update_interval_s
        self._paused = False
        self._master = self._slave = -1
        self.path = ""
        self._buffer = bytearray()
        self._flush: asyncio.TimerHandle | None = None
        self._frames: asyncio.Queue[bytes] = asyncio.Queue()
        self._last_answer = float("-inf")
        self._down_until: dict[int, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stats = {"frames": 0, "answers": 0, "crc_errors": 0, "early_frames": 0, "noise": 0}
        self.calls: Counter[tuple[int, int]] = Counter()  # requests received, by (unit, function code)

    # -- the API the tests use (like BuildingSimulator's) -------------------------------

    def value(self, point: str) -> Value:
        """The value a master reads now for "<device>.<point>".

        Raises:
            KeyError: no such point.
        """
        return self.state.value(point)

    def values(self) -> dict[str, Value]:
        """The current value of every point of the Box's configuration, by "<device>.<point>"."""
        return {name: self.state.value(name) for name in self.state.box_names()}

    def line(self, poll_interval_s: float = 1.0, *, timeout_s: float = 0.5) -> ModbusRtuLine:
        """The Box's view of this line (typed)."""
        return building_rtu_line(self.path, poll_interval_s, baudrate=self.baudrate, timeout_s=timeout_s)

    def points_toml(self, poll_interval_s: float = 1.0, *, timeout_s: float = 0.5) -> str:
        """The Box configuration (a ``[[modbus_rtu]]`` table) for this running simulator."""
        return building_rtu_points_toml(self.path, poll_interval_s, baudrate=self.baudrate,
                                        timeout_s=timeout_s)

    def pause(self) -> None:
        """Freeze the values (writes still apply)."""
        self._paused = True

    def resume(self) -> None:
        """Let the values move again."""
        self._paused = False

    def restart(self, unit_id: int | None = None, *, down_s: float = 0.0) -> None:
        """A device restart: writable points back to their defaults; silent for `down_s`."""
        self.state.reset(unit_id)
        until = time.monotonic() + down_s
        for unit in self.state.units if unit_id is None else (unit_id,):
            self._down_until[unit] = until

    def stats(self) -> dict[str, int]:
        """Counters: frames received, answers sent, CRC errors, early frames, noise sent."""
        return dict(self._stats)

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the pty pair and serve.

        Raises:
            SimulatorError: no pty could be opened.
        """
        if self._master >= 0:
            return
        try:
            master, slave = os.openpty()
        except OSError as e:
            raise SimulatorError(f"cannot open a pseudo-terminal pair: {e.strerror}") from e
        self._master, self._slave = master, slave
        tty.setraw(master)
        tty.setraw(slave)
        attrs = termios.tcgetattr(slave)
        attrs[4] = attrs[5] = _SPEEDS[self.baudrate]
        attrs[2] = (attrs[2] & ~termios.CSTOPB) | (termios.CSTOPB if self.stopbits == 2 else 0)
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        os.set_blocking(master, False)
        self.path = os.ttyname(slave)
        loop = asyncio.get_running_loop()
        loop.add_reader(master, self._readable)
        self._tasks = [
            asyncio.create_task(self._respond(), name="rtu-sim-respond"),
            asyncio.create_task(self._move_values(), name="rtu-sim-values"),
        ]

    async def stop(self) -> None:
        """Stop serving and close the pty (the Box's port goes away).

        Raises:
            SimulatorError: a task of the simulator had failed (a bug).
        """
        if self._master < 0:
            return
        asyncio.get_running_loop().remove_reader(self._master)
        if self._flush is not None:
            self._flush.cancel()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        os.close(self._master)
        os.close(self._slave)
        self._master = self._slave = -1
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise SimulatorError("a task of the RTU simulator failed") from outcome

    async def __aenter__(self) -> RtuBuildingSimulator:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    # -- the line -------------------------------------------------------------------------

    def _readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EIO: nobody holds the slave end (we do, so only while closing)
            return
        now = time.monotonic()
        if not self._buffer and now - self._last_answer < self.silence_s:
            self._stats["early_frames"] += 1
        self._buffer += data
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        while self._buffer:
            length = request_length(bytes(self._buffer))
            if length is None or (length and len(self._buffer) < length):
                loop = asyncio.get_running_loop()
                self._flush = loop.call_later(self.silence_s, self._silence)
                return
            if not length:  # not a request we know: the rest is noise until silence
                self._flush = asyncio.get_running_loop().call_later(self.silence_s, self._silence)
                return
            frame, self._buffer = bytes(self._buffer[:length]), self._buffer[length:]
            self._frames.put_nowait(frame)

    def _silence(self) -> None:
        """t3.5 without a byte: whatever is buffered is one (broken) frame."""
        self._flush = None
        if self._buffer:
            self._frames.put_nowait(bytes(self._buffer[:MAX_FRAME]))
            self._buffer.clear()

    def _settings_match(self) -> bool:
        attrs = termios.tcgetattr(self._slave)
        cflag = attrs[2]
        parity = "N" if not cflag & termios.PARENB else ("O" if cflag & termios.PARODD else "E")
        size = 8 if cflag & termios.CSIZE == termios.CS8 else 7
        stop = 2 if cflag & termios.CSTOPB else 1
        return (attrs[4], parity, size, stop) == (
            _SPEEDS[self.baudrate], self.parity, self.bytesize, self.stopbits
        )

    async def _respond(self) -> None:
        while True:
            frame = await self._frames.get()
            self._stats["frames"] += 1
            if not self._settings_match():
                self._send(_NOISE[: 3 + len(frame) % 4], noise=True)
                continue
            request = parse_request(frame)
            if request is None:
                self._stats["crc_errors"] += 1
                continue
            unit = request.unit
            self.calls[unit, request.function_code] += 1
            if unit not in self.state.units or time.monotonic() < self._down_until.get(unit, 0.0):
                continue
            decision = self.decide(unit, request.function_code, request.count)
            if decision.delay_s:
                await asyncio.sleep(decision.delay_s)  # a slow device
            if decision.action is Action.SILENT:
                continue
            if decision.action is Action.EXCEPTION:
                self._send(exception_frame(unit, request.function_code, decision.exception_code))
                continue
            reply = answer(request, self.state)
            self._send(garble(reply) if decision.action is Action.GARBLE else reply)

    def _send(self, frame: bytes, *, noise: bool = False) -> None:
        try:
            os.write(self._master, frame)
        except (BlockingIOError, InterruptedError):  # nobody reads the line: the answer is lost
            return
        self._last_answer = time.monotonic()
        self._stats["noise" if noise else "answers"] += 1

    async def _move_values(self) -> None:
        t0 = time.monotonic()
        while True:
            await asyncio.sleep(self._interval)
            if not self._paused:
                self.state.update(time.monotonic() - t0)


async def _serve(baudrate: int, interval: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with RtuBuildingSimulator(baudrate=baudrate, update_interval_s=interval) as sim:
        units = ", ".join(f"{u} {name}" for u, (name, _) in sim.state.units.items())
        print(f"# building RTU simulator on {sim.path} at {baudrate} 8N1 (units {units}); "
              "Ctrl-C stops", flush=True)
        print(sim.points_toml(), end="", flush=True)
        await stop.wait()
    print("# building RTU simulator stopped", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator until SIGINT/SIGTERM; the exit status."""
    ap = argparse.ArgumentParser(prog="python -m drivers.sim.modbus_rtu_building",
                                 description="Modbus RTU simulator of an RS-485 line on a pty.")
    ap.add_argument("--baudrate", type=int, default=9600, choices=sorted(_SPEEDS))
    ap.add_argument("--update-interval", type=float, default=0.5, metavar="S",
                    help="seconds between value updates")
    args = ap.parse_args(argv)
    try:
        asyncio.run(_serve(args.baudrate, args.update_interval))
    except SimulatorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
