"""The benchmark's device farm: every controller of a `bench.workload` layout on its own TCP port.

A lean Modbus TCP server (function codes 1-4 only, asyncio protocols, no pymodbus) so
that the farm is never what limits a gateway, even one that sends one request per point
(10,000 requests a second in the large case). Every value a read covers moves on before
it is served, so each poll sees new values: counters grow by 1-3, int16 temperatures
walk by +-1..2, float32 values drift by a few hundredths, coils toggle (`--workload
counter`, the default); or each value is what a building's point reads at that moment
(`--workload building`, `bench.building`: most values change rarely). Register 0 of
the input table (the probe) counts reads; the farm logs when it served each probe
value, for the latency from a value change to its storage in the cloud.

    python -m bench.farm --devices 10 --points 100 --base-port 15020 --report farm.json [--alarm] [--workload building]

It prints "ready" once every port listens; on SIGTERM or SIGINT it writes the report
(requests served per device, and the probe log) and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import random
import signal
import struct
import sys
import time
from pathlib import Path

from bench.building import BuildingTrace
from bench.workload import WORKLOADS, Device, alarm_device, layout

_FLOAT = struct.Struct(">f")


class Controller:
    """One device's register images and value models."""

    def __init__(self, device: Device, seed: int, workload: str = "counter") -> None:
        self.requests = 0
        self._trace = BuildingTrace(device.points, seed, time.time()) if workload == "building" else None
        self.probes: list[tuple[int, float]] = []  # (probe value, wall time it was served)
        rng = random.Random(seed)
        self._rng = rng
        self.coils = bytearray(max((p.address for p in device.points if p.table == "coil"), default=0) + 1)
        top = {t: max((p.address + 2 for p in device.points if p.table == t), default=0) for t in ("input", "holding")}
        self.regs = {"input": [0] * top["input"], "holding": [0] * top["holding"]}
        # per table: sorted (address, kind) of the points, to move the values a read covers
        self.points: dict[str, list[tuple[int, str]]] = {"coil": [], "input": [], "holding": []}
        self.floats: dict[int, float] = {}
        for p in device.points:
            self.points[p.table].append((p.address, p.type))
            if p.type == "uint16":
                self.regs[p.table][p.address] = rng.randrange(0, 60000)
            elif p.type == "int16":
                self.regs[p.table][p.address] = rng.randrange(150, 280)
            elif p.type == "float32":
                self.floats[p.address] = rng.uniform(10.0, 500.0)
                self._set_float(p.table, p.address, self.floats[p.address])
        self.regs["input"][0] = 0  # the probe starts at 0

    def _set_float(self, table: str, address: int, value: float) -> None:
        hi, lo = struct.unpack(">HH", _FLOAT.pack(value))
        self.regs[table][address], self.regs[table][address + 1] = hi, lo

    def move(self, table: str, start: int, count: int) -> None:
        """Move on every value whose point lies in [start, start + count)."""
        rng, regs, end = self._rng, self.regs.get(table), start + count
        if self._trace is not None:
            self._read_trace(table, start, end)
            return
        for address, kind in self.points[table]:
            if address < start or address >= end:
                continue
            if kind == "bool":
                self.coils[address] ^= 1
            elif kind == "uint16":
                regs[address] = (regs[address] + 1 + rng.randrange(3)) & 0xFFFF  # type: ignore[index]
            elif kind == "int16":
                regs[address] = max(-400, min(600, regs[address] + rng.choice((-2, -1, 1, 2))))  # type: ignore[index]
            else:
                value = self.floats[address] + rng.choice((-1, 1)) * rng.randrange(1, 6) / 100
                self.floats[address] = value
                self._set_float(table, address, value)

    def _read_trace(self, table: str, start: int, end: int) -> None:
        assert self._trace is not None
        now = time.time()
        for address, kind in self.points[table]:
            if start <= address < end:
                value = self._trace.value(table, address, now)
                if kind == "bool":
                    self.coils[address] = int(value)
                elif kind == "float32":
                    self._set_float(table, address, float(value))
                else:
                    self.regs[table][address] = int(value) & 0xFFFF

    def read(self, function: int, start: int, count: int) -> bytes | None:
        """The response PDU's data part for a read, or None for an illegal address."""
        if function in (1, 2):
            if start + count > len(self.coils):
                return None
            self.move("coil", start, count)
            bits = self.coils[start:start + count]
            out = bytearray((count + 7) // 8)
            for i, b in enumerate(bits):
                if b:
                    out[i >> 3] |= 1 << (i & 7)
            return bytes([len(out)]) + bytes(out)
        table = "holding" if function == 3 else "input"
        regs = self.regs[table]
        if start + count > len(regs):
            return None
        self.move(table, start, count)
        if table == "input" and start == 0:
            self.probes.append((regs[0], time.time()))
        values = regs[start:start + count]
        return bytes([2 * count]) + struct.pack(f">{count}H", *[v & 0xFFFF for v in values])


class _Protocol(asyncio.Protocol):
    def __init__(self, ctl: Controller) -> None:
        self.ctl, self.buf = ctl, b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        out = []
        while len(self.buf) >= 7:
            tid, _proto, length, unit = struct.unpack(">HHHB", self.buf[:7])
            if len(self.buf) < 6 + length:
                break
            pdu, self.buf = self.buf[7:6 + length], self.buf[6 + length:]
            self.ctl.requests += 1
            function = pdu[0] if pdu else 0
            body = None
            if function in (1, 2, 3, 4) and len(pdu) == 5:
                start, count = struct.unpack(">HH", pdu[1:5])
                body = self.ctl.read(function, start, count)
                reply = bytes([function]) + body if body is not None else bytes([function | 0x80, 2])
            else:
                reply = bytes([function | 0x80, 1])
            out.append(struct.pack(">HHHB", tid, 0, len(reply) + 1, unit) + reply)
        if out and self.transport is not None:
            self.transport.write(b"".join(out))


async def serve(devices: list[Device], host: str, workload: str = "counter") -> dict[str, object]:
    """Serve until SIGTERM or SIGINT; return the report."""
    loop = asyncio.get_running_loop()
    controllers = [Controller(d, n, workload) for n, d in enumerate(devices)]
    servers = [await loop.create_server(functools.partial(_Protocol, c), host, d.port, reuse_address=True)
               for d, c in zip(devices, controllers, strict=True)]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    for s in servers:
        s.close()
    return {
        "requests": {d.name: c.requests for d, c in zip(devices, controllers, strict=True)},
        "probes": {d.name: c.probes for d, c in zip(devices, controllers, strict=True)},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.farm", description="Serve a benchmark layout over Modbus TCP.")
    p.add_argument("--devices", type=int, default=10)
    p.add_argument("--points", type=int, default=100)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--base-port", type=int, default=15020)
    p.add_argument("--report", type=Path, help="write requests and probe times here on exit")
    p.add_argument("--alarm", action="store_true", help="serve the alarm device too, after the others' ports")
    p.add_argument("--workload", choices=WORKLOADS, default="counter", help="how values move (default %(default)s)")
    args = p.parse_args(argv)
    devices = layout(args.devices, args.points, args.base_port)
    if args.alarm:
        devices.append(alarm_device(args.base_port + args.devices))
    try:
        report = asyncio.run(serve(devices, args.host, args.workload))
    except OSError as e:
        print(f"bench.farm: {e}", file=sys.stderr)
        return 1
    if args.report is not None:
        args.report.write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
