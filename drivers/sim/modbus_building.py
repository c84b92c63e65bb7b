"""A Modbus TCP simulator of a building controller, on pymodbus's server, with faults.

Does: serve the three units of `drivers.sim._building` (1 ahu1, 2 meter1, 3 room1) on
one TCP port, move their values in a task of its own, accept writes to the writable
points (FC 5, 6, 15, 16), and inject faults per unit (`drivers.sim._faults`): no
answer (`set_offline`), slow answers (`set_delay`), an exception or silence for
register reads over N (`set_read_limit`), garbled frames (`set_garbled`); and a
device restart (`restart`: every connection closed, writable points back to their
defaults). `pause` / `resume` freeze the values. For loss proofs, `counters=True` adds a
"reads" counter point to every unit and `record=True` keeps `served`, every read answered
with the values in it (`drivers.sim._served`). Also a CLI::

    python -m drivers.sim.modbus_building --host 127.0.0.1 --port 15020
    python -m drivers.sim.modbus_building --port 15020 --print-toml   # the Box's config

Does not: simulate serial lines (`modbus_rtu_building` does).

pymodbus 3.16 notes: the server is built from ``SimDevice``/``SimData`` (the old
``ModbusServerContext`` datastores are deprecated shims); each unit's ``action`` hook
runs (and is awaited: it may sleep) before every access and copies our register image
into pymodbus's, refuses writes outside the writable points, and raises
``NoSuchIdException`` for a unit that must stay silent, which a server with
``ignore_missing_devices=True`` answers with silence. pymodbus checks addresses
against its blocks before the hook, so an address outside the image is exception 2
even on an offline unit. Unknown unit ids fall on a catch-all device 0 that stays
silent. Garbling is done on the way out, in the server's ``trace_packet`` hook.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from types import TracebackType

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimAction, SimData, SimDevice

from drivers._types import Value
from drivers.errors import SimulatorError
from drivers.modbus._config import BIT_TABLES
from drivers.sim._building import UNITS, BuildingState, building_devices, building_points_toml
from drivers.sim._faults import Action, FaultInjection
from drivers.sim._served import ServedLog

__all__ = ["BuildingSimulator", "building_devices", "building_points_toml", "main"]

_TABLES = ("coil", "discrete", "holding", "input")  # pymodbus's order of non-shared blocks


class BuildingSimulator(FaultInjection):
    """The building's Modbus TCP server. The constructor does no I/O.

    Use ``async with BuildingSimulator(port=0) as sim:`` (or `start()` / `stop()`);
    `port` is the bound port once started. Faults: see `FaultInjection`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        update_interval_s: float = 0.5,
        seed: int = 0,
        counters: bool = False,
        record: bool = False,
    ) -> None:
        super().__init__()
        self.host = host
        self._requested_port = port
        self._port = 0
        self._interval = update_interval_s
        self.state = BuildingState(seed, counters=counters)
        self.served = ServedLog(self.state) if record else None
        # accesses by (unit, function code): pymodbus calls the hook twice for some writes
        self.calls: Counter[tuple[int, int]] = Counter()
        self._paused = False
        self._server: ModbusTcpServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The TCP port the server listens on (0 before `start()`)."""
        return self._port

    def value(self, point: str) -> Value:
        """The value a client reads now for "<device>.<point>", e.g. "ahu1.supply_temp".

        Raises:
            KeyError: no such point.
        """
        return self.state.value(point)

    def values(self) -> dict[str, Value]:
        """The current value of every point of the Box's configuration, by "<device>.<point>"."""
        return {name: self.state.value(name) for name in self.state.box_names()}

    def points_toml(self, poll_interval_s: float = 1.0, *, timeout_s: float = 1.0, retries: int = 1) -> str:
        """The Box configuration (``[[modbus_tcp]]`` tables) for this running simulator."""
        return building_points_toml(self.host, self._port, poll_interval_s, counters=self.state.counters,
                                    timeout_s=timeout_s, retries=retries)

    def connections(self) -> int:
        """Client connections open now (call on the simulator's loop)."""
        return len(self._server.active_connections) if self._server is not None else 0

    def restart(self, unit_id: int | None = None) -> None:
        """A device restart: close every client connection, writable points of the unit
        (default: all units) back to their defaults. The server keeps listening."""
        self.state.reset(unit_id)
        if self._server is not None:
            for connection in list(self._server.active_connections.values()):
                connection.close()

    def pause(self) -> None:
        """Freeze the values (writes still apply), so a test can compare exactly."""
        self._paused = True

    def resume(self) -> None:
        """Let the values move again."""
        self._paused = False

    async def start(self) -> None:
        """Listen and start moving values.

        Raises:
            SimulatorError: the address cannot be bound.
        """
        if self._server is not None:
            return
        devices = [self._device(unit) for unit in UNITS]
        devices.append(SimDevice(0, simdata=[SimData(0, values=[0], datatype=DataType.REGISTERS)],
                                 action=_no_such_unit))
        server = ModbusTcpServer(
            devices, address=(self.host, self._requested_port), ignore_missing_devices=True,
            trace_packet=self._garble,
        )
        try:
            await server.serve_forever(background=True)
        except RuntimeError as e:
            raise SimulatorError(f"cannot listen on {self.host}:{self._requested_port}") from e
        listener = server.transport
        if not isinstance(listener, asyncio.base_events.Server) or not listener.sockets:
            await server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus: unannotated
            raise SimulatorError(f"no listening socket on {self.host}:{self._requested_port}")
        self._port = int(listener.sockets[0].getsockname()[1])
        self._server = server
        self._task = asyncio.create_task(self._move_values(), name="building-sim-values")

    async def stop(self) -> None:
        """Close the listener and every connection, stop moving values.

        Raises:
            SimulatorError: the task that moves the values had failed (a bug).
        """
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus: unannotated
            await asyncio.sleep(0)  # let the closed transports run their callbacks
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            (outcome,) = await asyncio.gather(task, return_exceptions=True)
            if isinstance(outcome, Exception):
                raise SimulatorError("the simulator's value task failed") from outcome

    async def __aenter__(self) -> BuildingSimulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- internals --------------------------------------------------------------------

    async def _move_values(self) -> None:
        t0 = time.monotonic()
        while True:
            await asyncio.sleep(self._interval)
            if not self._paused:
                self.state.update(time.monotonic() - t0)

    def _device(self, unit: int) -> SimDevice:
        blocks: list[list[SimData]] = []
        for table, code in zip(_TABLES, (1, 2, 3, 4), strict=True):
            size = len(self.state.registers(unit, code))
            if table in BIT_TABLES:
                blocks.append([SimData(0, values=[False] * size * 16, datatype=DataType.BITS)])
            else:
                blocks.append([SimData(0, values=[0] * size, datatype=DataType.REGISTERS)])
        return SimDevice(
            unit, simdata=(blocks[0], blocks[1], blocks[2], blocks[3]), action=self._action(unit)
        )

    def _garble(self, sending: bool, data: bytes) -> bytes:
        """The server's trace_packet hook: spoil the answers of a garbled unit (one byte
        more than the frame says, so the byte count or the PDU length is wrong)."""
        if not sending or len(data) < 8 or not self.faults(data[6]).garbled:
            return data
        length = int.from_bytes(data[4:6], "big") + 1
        return data[:4] + length.to_bytes(2, "big") + data[6:] + b"\x00"

    def _action(self, unit: int) -> SimAction:
        async def action(
            function_code: int,
            _start_address: int,
            address: int,
            count: int,
            registers: list[int],
            set_values: list[int] | list[bool] | None,
        ) -> ExcCodes | None:
            self.calls[unit, function_code] += 1
            decision = self.decide(unit, function_code, count)
            if decision.delay_s:
                await asyncio.sleep(decision.delay_s)  # a slow device
            if decision.action is Action.SILENT:
                raise NoSuchIdException(f"unit {unit} does not answer")
            if decision.action is Action.EXCEPTION:
                return ExcCodes(decision.exception_code)
            state = self.state
            if set_values is not None and not state.write(unit, function_code, address, set_values):
                return ExcCodes.ILLEGAL_ADDRESS
            state.count_read(unit, function_code, address, count)
            image = state.registers(unit, function_code)
            registers[: len(image)] = image
            if self.served is not None and set_values is None and decision.action is Action.ANSWER:
                self.served.record(unit, function_code, address, count)
            return None

        return action


async def _no_such_unit(
    _fc: int, _start: int, _address: int, _count: int, _regs: list[int],
    _values: list[int] | list[bool] | None,
) -> ExcCodes | None:
    raise NoSuchIdException("no such unit")


async def _serve(host: str, port: int, interval: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with BuildingSimulator(host, port, update_interval_s=interval) as sim:
        units = ", ".join(f"{u} {name}" for u, name in UNITS.items())
        print(f"building simulator on {sim.host}:{sim.port} (units {units}); Ctrl-C stops",
              flush=True)
        await stop.wait()
    print("building simulator stopped", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator until SIGINT/SIGTERM; the exit status."""
    ap = argparse.ArgumentParser(prog="python -m drivers.sim.modbus_building",
                                 description="Modbus TCP simulator of a building controller.")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on")
    ap.add_argument("--port", type=int, default=15020, help="TCP port (0: any free port)")
    ap.add_argument("--update-interval", type=float, default=0.5, metavar="S",
                    help="seconds between value updates")
    ap.add_argument("--print-toml", action="store_true",
                    help="print the Box configuration for --host/--port and exit")
    args = ap.parse_args(argv)
    if args.print_toml:
        print(building_points_toml(args.host, args.port), end="")
        return 0
    try:
        asyncio.run(_serve(args.host, args.port, args.update_interval))
    except SimulatorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
