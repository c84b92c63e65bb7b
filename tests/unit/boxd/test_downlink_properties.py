"""Property tests of the downlink decoder: whatever arrives, a valid message or a RejectedError.

Never another exception, never a hang (each example has a deadline; sizes are bounded by
the decoder's limits, which some strategies go past on purpose).
"""

from __future__ import annotations

import math
import time
import tomllib
import zlib
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import boxconfig as config
from boxconfig.errors import ConfigError
from boxd import downlink
from boxd.downlink import ValidConfig
from proto.commands import NAMES, Command
from proto.errors import RejectedError

GOOD_TOML = (Path(__file__).parents[2] / "fuzz" / "good.toml").read_text()
GOOD_CMDS: list[dict[str, Any]] = [
    {"id": "c-1", "name": "write", "expires": 1.8e9, "args": {"point": "ahu2.sp", "value": 21.5, "priority": 8}},
    {"id": "c-2", "name": "read", "expires": 1.8e9, "args": {"points": ["ahu1.supply_temp", "ahu2.sp"]}},
    {"id": "c-3", "name": "logs", "expires": 1.8e9, "args": {"lines": 20}},
    {"id": "c-4", "name": "reboot", "expires": 1.8e9, "args": {}},
]
PROPS = settings(deadline=2000, max_examples=300, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-(2**70), 2**70), st.floats(),
    st.text(max_size=40), st.binary(max_size=20),
    st.sampled_from(["id", "name", "expires", "args", "point", "value", "points", "write", "read", "version",
                     "toml", "lines", "priority", "relinquish", math.inf, math.nan, 2**64, -(2**63) - 1]),
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=12), inner, max_size=6)),
    max_leaves=40,
)


def frame(doc: object, deflate: bool) -> bytes:
    body = cbor2.dumps(doc)
    if deflate:
        packer = zlib.compressobj(6, zlib.DEFLATED, -15)
        return b"\x81" + packer.compress(body) + packer.flush()
    return b"\x01" + body


def decodes_or_refuses(leaf: str, payload: bytes) -> ValidConfig | Command | None:
    try:
        return downlink.decode(leaf, payload)
    except RejectedError as e:
        assert str(e) and e.reasons
        return None


@PROPS
@given(st.sampled_from(["cmd", "config"]), st.binary(max_size=2000))
def test_arbitrary_bytes(leaf: str, payload: bytes) -> None:
    decodes_or_refuses(leaf, payload)
    decodes_or_refuses(leaf, b"\x01" + payload)
    decodes_or_refuses(leaf, b"\x81" + zlib.compress(payload)[2:-4])


@PROPS
@given(st.sampled_from(["cmd", "config"]), documents, st.booleans())
def test_arbitrary_documents(leaf: str, doc: object, deflate: bool) -> None:
    decodes_or_refuses(leaf, frame(doc, deflate))


@PROPS
@given(st.sampled_from(GOOD_CMDS), st.data())
def test_commands_with_one_field_changed(base: dict[str, Any], data: st.DataObject) -> None:
    doc = {**base, "args": dict(base["args"])}
    target = data.draw(st.sampled_from([doc, doc["args"]]))
    key = data.draw(st.sampled_from([*sorted(target), "extra"]))
    if data.draw(st.booleans()):
        target[key] = data.draw(documents)
    else:
        target.pop(key, None)
    got = decodes_or_refuses("cmd", frame(doc, data.draw(st.booleans())))
    if got is not None:  # what passed is what the schema allows
        assert isinstance(got, Command) and got.name in NAMES
        assert isinstance(got.expires, float) and math.isfinite(got.expires)


@PROPS
@given(st.sampled_from([frame(c, d) for c in GOOD_CMDS for d in (False, True)]), st.data())
def test_mutated_command_bytes(payload: bytes, data: st.DataObject) -> None:
    buf = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 8))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        at = data.draw(st.integers(0, max(0, len(buf) - 1)))
        if op == "flip" and buf:
            buf[at] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "insert":
            buf[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and buf:
            del buf[at]
        elif op == "truncate":
            del buf[at:]
    decodes_or_refuses("cmd", bytes(buf))


@settings(deadline=5000, max_examples=40)
@given(st.sampled_from(["cmd", "config"]), st.integers(1, 200_000),
       st.sampled_from([b"\x81", b"\xa1\x60", b"\xd8\x1c\x81"]))  # lists, maps, shared lists
def test_deep_nesting(leaf: str, depth: int, opener: bytes) -> None:
    body = opener * depth + b"\x00"
    with pytest.raises(RejectedError):
        downlink.decode(leaf, b"\x01" + body)
    with pytest.raises(RejectedError):
        downlink.decode(leaf, b"\x81" + zlib.compress(body)[2:-4])


@pytest.mark.parametrize("body", [
    cbor2.dumps({"version": 1, "toml": "#" * (4 * 1024 * 1024)}),  # exactly over the inflated limit
    b"\x9a\x00\x3f\xff\xfb" + b"\xa0" * (4 * 1024 * 1024 - 5),  # 4 Mi empty maps: refused before decoding
    b"\x9b" + b"\xff" * 8,  # a list claiming 2**64 - 1 items
    b"\x7b" + b"\x7f" * 8,  # a text claiming a huge length
    cbor2.dumps({"version": 1, "toml": "a = [" + "{}," * 1_000_000 + "]"}),  # TOML of a million tables
])
def test_huge_inputs_are_refused_quickly(body: bytes) -> None:
    # the bound is on this process's CPU (a hostile input must not cost the Box minutes), not on the wall
    # clock, which a loaded machine (the suite's other workers) stretches without the decoder's fault
    start = time.process_time()
    with pytest.raises(RejectedError):
        downlink.decode("config", b"\x81" + zlib.compress(body, 9)[2:-4])
    assert time.process_time() - start < 5


@PROPS
@given(st.integers(0, len(GOOD_TOML)), st.integers(0, 30), st.text(max_size=30))
def test_config_text_spliced(at: int, cut: int, insert: str) -> None:
    text = GOOD_TOML[:at] + insert + GOOD_TOML[at + cut:]
    got = decodes_or_refuses("config", frame({"version": 1, "toml": text}, False))
    if got is not None:
        assert isinstance(got, ValidConfig) and got.toml_text == text


toml_values = st.recursive(
    st.one_of(st.booleans(), st.integers(), st.integers(-(16**1100), 16**1100), st.floats(),
              st.text(max_size=20), st.sampled_from(["holding", "coil", "float32", "analog-value,1", "auto"])),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)


@PROPS
@given(st.data())
def test_config_parse_with_one_value_changed(data: st.DataObject) -> None:
    raw: Any = tomllib.loads(GOOD_TOML)
    node = raw
    for _ in range(data.draw(st.integers(0, 6))):
        kids = [v for v in (node.values() if isinstance(node, dict) else node) if isinstance(v, dict | list)]
        if not kids:
            break
        node = data.draw(st.sampled_from(kids))
    if isinstance(node, dict):
        node[data.draw(st.sampled_from([*sorted(node), "x"]))] = data.draw(toml_values)
    elif node:
        node[data.draw(st.integers(0, len(node) - 1))] = data.draw(toml_values)
    try:
        config.parse(raw)
    except ConfigError:
        assert config.problems(raw)
    else:
        assert config.problems(raw) == []
