"""Where a batch's bytes go, offline: the building trace through boxd's filter and encoder, no sockets.

`python -m bench.wirecost [--devices 5 --points 100 --seconds 600 --batch-delay-ms 5000]` runs
`bench.building` for D x P points polled every second (the devices staggered across the second,
as `drivers.modbus._sched` does), each poll through `boxd.grouping` and `boxd.onchange` with the
benchmark's rules (`--report poll|change|deadband`, the rules of `bench.gateway --report`), then
seals them into batches of `--batch-delay-ms` with `proto.wire` and prints the payload's bytes
per polled point: for each wire form, and (`--breakdown`) what each part of a batch costs,
measured by ablation (the deflated batch again without that part: its bytes are the difference).

What it leaves out (the IP run, `bench.gateway`, counts it): TCP/IP and TLS headers, MQTT headers
and topics, acknowledgements, heartbeats and keepalives. The filter's input is the trace's own
readings, as the farm would serve them (float32 through `drivers.modbus._codec`'s shortest decimal).
"""

from __future__ import annotations

import argparse
import json
import random
import struct
import tomllib
import zlib
from collections.abc import Sequence
from typing import Any

import cbor2

from bench.building import BuildingTrace
from bench.workload import DEADBANDS, METERED, device_points, is_meter
from boxconfig.report import Rule
from boxd import grouping
from boxd._queuesql import Group
from boxd.onchange import OnChange
from drivers import Quality, Sample
from drivers.modbus._codec import _shortest_float32
from drivers.modbus._config import ModbusPoint
from proto import wire

T0_S = 1_796_000_000.0  # a fixed wall-clock start (the trace's daily swing follows it)


def _rule(p: ModbusPoint, n: int, report: str) -> Rule:
    """The rule `bench.gateway --report` gives the `n`th point of a device (`bench.workload`'s deadbands)."""
    if report == "poll":
        return Rule(poll=True)
    bands = {"deadband": DEADBANDS, "metered": METERED}.get(report, {})
    kind = "meter" if "meter" in bands and is_meter(p, n) else p.type
    if kind not in bands:
        return Rule()
    table = tomllib.loads(f"r = {bands[kind]}")["r"]
    return Rule(deadband=float(table.get("deadband", 0.0)), deadband_pct=float(table.get("deadband_pct", 0.0)))


def polls(devices: int, points: int, seconds: int, report: str, seed: int = 1, jitter_ms: int = 5) -> list[Group]:
    """The groups boxd queues for the trace, in time order; each poll's time is its slot plus a
    latency drawn in [0, `jitter_ms`) (the bus's and the event loop's)."""
    late = random.Random(seed)
    shape = device_points(points)
    traces = [BuildingTrace(shape, seed + d, T0_S) for d in range(devices)]
    names = [f"d{d:03d}.{p.name}" for d in range(devices) for p in shape]
    index = {n: i for i, n in enumerate(names)}
    onchange = OnChange([_rule(p, n, report) for _ in range(devices) for n, p in enumerate(shape)])
    out: list[Group] = []
    for k in range(seconds):
        for d in range(devices):
            t = T0_S + k + d / devices
            ts_ms = round(t * 1000) + int(late.random() * jitter_ms)
            samples = []
            for p in shape:
                v = traces[d].value(p.table, p.address, t)
                if p.type == "float32":
                    v = _shortest_float32(struct.unpack(">f", struct.pack(">f", float(v)))[0])
                samples.append(Sample(f"d{d:03d}.{p.name}", ts_ms, v, Quality.GOOD))
            out += onchange.filter(grouping.group(samples, index).groups)
    return out


def batches(groups: Sequence[Group], delay_ms: int) -> list[list[Group]]:
    """The groups cut into batches: a batch holds what was read within `delay_ms` of its first."""
    out: list[list[Group]] = []
    start = None
    for g in groups:
        if start is None or g[0] - start >= delay_ms:
            out.append([])
            start = g[0]
        out[-1].append(g)
    return out


def encode_v1(groups: Sequence[Group]) -> bytes:
    base = groups[0][0]
    return wire.encode_batch(1, 1, 1, base, [wire.encode_group(ts - base, f, v, q) for ts, f, v, q in groups])


def encode_v2(groups: Sequence[Group], slack_ms: int = 0) -> bytes:
    base = groups[0][0]
    return wire.encode_batch_v2(1, 1, 1, base, [(ts - base, f, v, q) for ts, f, v, q in groups], slack_ms=slack_ms)


def _same(groups: Sequence[Group], batch: wire.Batch, slack_ms: int = 0) -> bool:
    """Whether `batch` says what `groups` say: each poll of each point a value, or unchanged (each
    poll's time within `slack_ms` of the reading's)."""
    def flat(gs: Sequence[tuple[int, int, Sequence[object] | int, dict[int, int]]]) -> dict[int, list[tuple[int, str]]]:
        out: dict[int, list[tuple[int, str]]] = {}
        for ts, first, values, _ in gs:
            for k in range(values if isinstance(values, int) else len(values)):
                out.setdefault(first + k, []).append((ts, "=" if isinstance(values, int) else repr(values[k])))
        return {p: sorted(v) for p, v in out.items()}
    decoded = [(batch.base_ts_ms + g.dt_ms, g.first, g.unchanged or g.values, g.faults) for g in batch.groups]
    want, got = flat(groups), flat(decoded)
    return want.keys() == got.keys() and all(
        len(want[p]) == len(got[p]) and all(a[1] == b[1] and abs(a[0] - b[0]) <= slack_ms
                                            for a, b in zip(want[p], got[p], strict=True)) for p in want)


def _deflated(body: object) -> int:
    raw = cbor2.dumps(body)
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    return len(z.compress(raw) + z.flush()) + 1


def breakdown_v1(groups: Sequence[Group]) -> dict[str, int]:
    """The v1 batch's bytes, and each part's share by ablation."""
    base = groups[0][0]
    rows: list[list[Any]] = [wire.encode_group(ts - base, f, v, q) for ts, f, v, q in groups]
    full = _deflated([1, 1, 1, base, rows])
    no_spans = _deflated([1, 1, 1, base, [r for r in rows if not isinstance(r[2], int)]])
    zero_dt = _deflated([1, 1, 1, base, [[0, *r[1:]] for r in rows]])
    zero_values = _deflated([1, 1, 1, base, [r if isinstance(r[2], int) else [r[0], r[1], [0] * len(r[2])]
                                             for r in rows]])
    header = _deflated([2**40, 2**20, 2**31, base, []])
    return {"batch": full, "header": header, "spans": full - no_spans, "times": full - zero_dt,
            "values": full - zero_values}


def breakdown_v2(payload: bytes) -> dict[str, int]:
    """The format 2 batch's bytes, and each part's share by ablation."""
    body = wire.unframe_untrusted(payload, max_depth=5, max_items=10**6, text_keys=False, versions=wire.BATCH_VERSIONS)
    assert isinstance(body, list)
    epoch, seq, table, base, groups = body
    series: list[list[Any]] = [g for g in groups if len(g) >= 6]
    plain: list[list[Any]] = [g for g in groups if len(g) < 6]

    def size(ss: list[list[object]], pl: list[list[object]]) -> int:
        return _deflated([epoch, seq, table, base, pl + ss])

    full = size(series, plain)
    no_jitter = size([[*g[:4], [0] * len(g[4]), *g[5:]] for g in series], plain)
    ch = [g[5] for g in series]
    no_values = size([[*g[:5], [x if k % 3 < 2 else 0 for k, x in enumerate(c)], *g[6:]]
                      for g, c in zip(series, ch, strict=True)], plain)
    no_where = size([[*g[:5], [x if k % 3 == 2 else 0 for k, x in enumerate(c)], *g[6:]]
                     for g, c in zip(series, ch, strict=True)], plain)
    no_series = size([], plain)
    return {"batch": len(payload), "header": _deflated([epoch, seq, table, base, []]),
            "poll times (jitter)": full - no_jitter, "changed values": full - no_values,
            "change positions (poll, point)": full - no_where, "series": full - no_series}


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="bench.wirecost", description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=5)
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--report", choices=("poll", "change", "deadband", "metered"), default="deadband")
    ap.add_argument("--batch-delay-ms", type=int, nargs="+", default=[5000, 60000])
    ap.add_argument("--breakdown", action="store_true", help="each part's bytes (by ablation)")
    ap.add_argument("--jitter-ms", type=int, default=5, help="a poll's time is its slot plus up to this (default 5)")
    ap.add_argument("--time-slack-ms", type=int, default=0,
                    help="the Box's [uplink] time_slack_ms: poll times sent within this of the readings' (default 0)")
    args = ap.parse_args(argv)
    groups = polls(args.devices, args.points, args.seconds, args.report, jitter_ms=args.jitter_ms)
    polled = args.devices * args.points * args.seconds
    sent = sum(len(v) for _, _, v, _ in groups if not isinstance(v, int))
    spans = sum(isinstance(g[2], int) for g in groups)
    result: dict[str, object] = {"polled": polled, "values_sent": sent, "spans": spans}
    for delay in args.batch_delay_ms:
        cut = batches(groups, delay)
        v2 = [encode_v2(b, args.time_slack_ms) for b in cut]
        if not all(_same(b, wire.decode_batch(p), args.time_slack_ms) for b, p in zip(cut, v2, strict=True)):
            raise SystemExit("format 2 did not decode to what was encoded")
        row: dict[str, object] = {"batches": len(cut),
                                  "v1_bytes_per_polled_point": round(sum(len(encode_v1(b)) for b in cut) / polled, 4),
                                  "v2_bytes_per_polled_point": round(sum(map(len, v2)) / polled, 4)}
        if args.breakdown:
            parts: dict[str, int] = {}
            for b in cut:
                for k, v in breakdown_v1(b).items():
                    parts[k] = parts.get(k, 0) + v
            row["v1_breakdown_bytes_per_polled_point"] = {k: round(v / polled, 4) for k, v in parts.items()}
            parts = {}
            for p in v2:
                for k, v in breakdown_v2(p).items():
                    parts[k] = parts.get(k, 0) + v
            row["v2_breakdown_bytes_per_polled_point"] = {k: round(v / polled, 4) for k, v in parts.items()}
        result[f"delay {delay} ms"] = row
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
