"""Fuzz harness (atheris) for the downlink decoder and the configuration validator.

Not a pytest module (pytest collects ``test_*.py`` only). Run it as in README.md::

    .venv/bin/python tests/fuzz/fuzz_downlink.py -max_total_time=600 tests/fuzz/corpus

Each input's first byte picks a target:

    0  `downlink.decode("cmd", rest)`          raw bytes
    1  `downlink.decode("config", rest)`       raw bytes
    2  `downlink.decode(leaf, frame(doc))`     a CBOR document built from the input: a valid
                                                message with one field replaced or removed,
                                                or an arbitrary nested structure
    3  `config.parse(raw)`                     a configuration built from the input: a valid
                                                one with one value anywhere replaced, a key
                                                dropped or an unknown key added; the values
                                                include what TOML can hold (dates, huge
                                                integers, NaN, deep arrays)
    4  `downlink.decode("config", ...)`        the TOML text of a valid configuration with
                                                bytes of the input spliced in

The only exceptions allowed are `RejectedError` (decode) and `ConfigError` (parse);
anything else, or an input running longer than -timeout, is a finding.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import sys
import tomllib
import zlib
from pathlib import Path
from typing import Any

import atheris
import cbor2

with atheris.instrument_imports(include=["boxd", "boxconfig", "proto", "drivers"]):
    import boxconfig as config
    import drivers.bacnet  # noqa: F401 (imported lazily by boxconfig: instrumented here)
    from boxconfig.errors import ConfigError
    from boxd import downlink
    from proto.errors import RejectedError

HERE = Path(__file__).resolve().parent
GOOD_TOML = (HERE / "good.toml").read_text()
GOOD_RAW = tomllib.loads(GOOD_TOML)
GOOD_CMDS: list[dict[str, Any]] = [
    {"id": "c-1", "name": "write", "expires": 1.8e9, "args": {"point": "ahu2.sp", "value": 21.5, "priority": 8}},
    {"id": "c-2", "name": "write", "expires": 1.8e9, "args": {"point": "ahu2.sp", "relinquish": True,
                                                              "priority": 8}},
    {"id": "c-3", "name": "read", "expires": 1.8e9, "args": {"points": ["ahu1.supply_temp", "ahu2.sp"]}},
    {"id": "c-4", "name": "logs", "expires": 1.8e9, "args": {"lines": 20}},
    {"id": "c-5", "name": "restart", "expires": 1.8e9, "args": {}},
]
WORDS = sorted({
    "name", "host", "port", "unit_id", "poll_interval_s", "timeout_s", "retries", "byte_order", "word_order",
    "points", "devices", "table", "address", "type", "unit", "scale", "offset", "bit", "length", "writable",
    "min", "max", "interface", "device_instance", "apdu_timeout_s", "apdu_retries", "object", "property",
    "priority", "cov", "cov_lifetime_s", "cov_confirmed", "baudrate", "parity", "stopbits", "bytesize",
    "max_gap", "max_registers", "write_multiple", "urgent", "keepalive_s", "batch_delay_ms", "max_samples", "uplink",
    "queue", "modbus_tcp", "modbus_rtu", "bacnet", "holding", "input", "coil", "discrete", "bool", "int16",
    "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string", "big", "little", "N", "E",
    "analog-input,1", "analog-value,0", "binary-output,3", "multi-state-value,2", "present-value",
    "object-name", "priority-array", "auto", "off", "192.168.1.2", "192.0.2.1:47809", "/dev/ttyUSB0",
    "fieldbus0", "ahu1", "ahu2", "id", "expires", "args", "value", "relinquish", "lines", "version", "toml",
    "write", "read", "restart", "reboot", "logs", "renew_cert", "degC", "", "a" * 300,
})
INTS = [0, 1, -1, 2, 5, 6, 7, 15, 16, 17, 100, 125, 247, 248, 255, 256, 502, 1000, 65535, 65536, 47808,
        4194302, 4194303, 2**31, 2**32, 2**63 - 1, 2**63, 2**64, -(2**63), 16**4000, -(16**4000)]
FLOATS = [0.0, -0.0, 0.05, 0.1, 0.5, 1.0, 1.5, 1e-300, 1e300, 86400.0, 86401.0, math.nan, math.inf, -math.inf]


def value(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> Any:
    """A value of the kinds tomllib (and CBOR) produce, biased to the validators' edges."""
    pick = fdp.ConsumeIntInRange(0, 13 if depth < 6 else 9)
    if pick == 0:
        return fdp.PickValueInList(INTS)
    if pick == 1:
        return fdp.ConsumeIntInRange(-(2**70), 2**70)
    if pick == 2:
        return fdp.PickValueInList(FLOATS)
    if pick == 3:
        return fdp.ConsumeRegularFloat()
    if pick == 4:
        return fdp.ConsumeBool()
    if pick == 5:
        return fdp.PickValueInList(WORDS)
    if pick == 6:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 80))
    if pick == 7:
        return fdp.PickValueInList([dt.datetime(2024, 1, 1, tzinfo=dt.UTC), dt.date(2024, 1, 1), dt.time(1, 2)])
    if pick == 8:
        return None  # not from TOML, but from CBOR
    if pick == 9:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 8))
    if pick == 10:
        deep: Any = value(fdp, 6)
        for _ in range(fdp.ConsumeIntInRange(1, 2000)):
            deep = [deep]
        return deep
    if pick == 11:
        return [value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    return {fdp.PickValueInList(WORDS): value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 5))}


def mutate(fdp: atheris.FuzzedDataProvider, doc: Any) -> Any:
    """`doc` with one place changed: a value replaced, a key dropped or an unknown key added."""
    doc = copy.deepcopy(doc)
    node = doc
    for _ in range(fdp.ConsumeIntInRange(0, 8)):
        children = list(node.items()) if isinstance(node, dict) else list(enumerate(node)) \
            if isinstance(node, list) else []
        children = [(k, v) for k, v in children if isinstance(v, dict | list)]
        if not children:
            break
        node = fdp.PickValueInList(children)[1]
    if isinstance(node, dict) and node:
        key = fdp.PickValueInList(sorted(node, key=str))
        action = fdp.ConsumeIntInRange(0, 2)
        if action == 0:
            node[key] = value(fdp)
        elif action == 1:
            del node[key]
        else:
            node[fdp.PickValueInList(WORDS) + fdp.ConsumeUnicodeNoSurrogates(2)] = value(fdp)
    elif isinstance(node, list) and node:
        node[fdp.ConsumeIntInRange(0, len(node) - 1)] = value(fdp)
    return doc


def frame(doc: Any, deflate: bool) -> bytes:
    try:
        body = cbor2.dumps(doc)
    except (ValueError, TypeError, RecursionError, cbor2.CBOREncodeError):
        body = b"\xf6"
    if deflate:
        packer = zlib.compressobj(6, zlib.DEFLATED, -15)
        return b"\x81" + packer.compress(body) + packer.flush()
    return b"\x01" + body


def test_one(data: bytes) -> None:
    if not data:
        return
    target, rest = data[0] % 5, data[1:]
    if target == 0:
        _decode("cmd", rest)
    elif target == 1:
        _decode("config", rest)
    elif target == 2:
        fdp = atheris.FuzzedDataProvider(rest)
        leaf = fdp.PickValueInList(["cmd", "config"])
        base: Any = fdp.PickValueInList(GOOD_CMDS) if leaf == "cmd" else {"version": 3, "toml": GOOD_TOML}
        doc = mutate(fdp, base) if fdp.ConsumeBool() else value(fdp)
        _decode(leaf, frame(doc, fdp.ConsumeBool()))
    elif target == 3:
        fdp = atheris.FuzzedDataProvider(rest)
        raw = mutate(fdp, GOOD_RAW) if fdp.ConsumeIntInRange(0, 3) else value(fdp)
        if not isinstance(raw, dict):
            raw = {"modbus_tcp": [raw]}
        try:
            config.parse(raw)
        except ConfigError:
            problems = config.problems(raw)
            assert problems, "parse refused what problems() finds no problem in"
        else:
            assert config.problems(raw) == []
    else:
        fdp = atheris.FuzzedDataProvider(rest)
        at = fdp.ConsumeIntInRange(0, len(GOOD_TOML))
        cut = fdp.ConsumeIntInRange(0, 40)
        text = GOOD_TOML[:at] + fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 60)) + GOOD_TOML[at + cut:]
        _decode("config", frame({"version": 1, "toml": text}, fdp.ConsumeBool()))


def _decode(leaf: str, payload: bytes) -> None:
    try:
        downlink.decode(leaf, payload)
    except RejectedError as e:
        assert str(e) and e.reasons and all(isinstance(r, str) and r for r in e.reasons)


def seed(corpus: Path) -> None:
    """Put valid messages (each target's first byte before them) in an empty corpus directory."""
    if not corpus.is_dir() or any(corpus.iterdir()):
        return
    seeds = [bytes([0]) + frame(c, d) for c in GOOD_CMDS for d in (False, True)]
    seeds += [bytes([1]) + frame({"version": 3, "toml": GOOD_TOML}, d) for d in (False, True)]
    seeds += [bytes([t]) + bytes(range(i, i + 64)) for t in (2, 3, 4) for i in range(0, 192, 64)]
    for n, data in enumerate(seeds):
        (corpus / f"seed-{n:02d}").write_bytes(data)


def main() -> None:
    sys.setrecursionlimit(1000)  # the interpreter's default: what boxd runs with
    for arg in sys.argv[1:]:
        if not arg.startswith("-"):
            seed(Path(arg))
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
