"""Downlink messages: good ones decode (`proto.downlink`, `proto.commands`; a configuration's content by
`boxconfig` through `boxd.downlink`), each kind of bad one is refused with its reason; writes checked
against the configuration; replies bounded (`proto.replies`)."""

from __future__ import annotations

import asyncio
import math
import zlib
from pathlib import Path
from typing import Any

import cbor2
import pytest

from boxd import downlink
from boxd.commands import Buses, CommandRunner, buses_of
from boxd.downlink import SeenIds, ValidConfig
from boxd.fieldbus import make_sources
from boxd.logring import LogRing
from proto import replies, topics, wire
from proto.commands import Command, Write
from proto.downlink import decode_command
from proto.errors import RejectedError, WireError

GOOD_TOML = """
[uplink]
keepalive_s = 30

[[modbus_tcp]]
name = "ahu1"
host = "192.168.10.20"
poll_interval_s = 1.0

[[modbus_tcp.points]]
name = "supply_temp"
table = "holding"
address = 0
type = "float32"

[[modbus_tcp.points]]
name = "setpoint"
table = "holding"
address = 2
type = "int16"
scale = 0.1
writable = true
min = 10.0
max = 30.0

[[modbus_tcp.points]]
name = "fan"
table = "coil"
address = 0
writable = true

[[bacnet]]
name = "bacnet-1"
interface = "fieldbus0"
device_instance = 4194300

[[bacnet.devices]]
name = "ahu2"
device_instance = 1001

[[bacnet.devices.points]]
name = "sp"
object = "analog-value,1"
writable = true
min = 15.0
max = 25.0

[[bacnet.devices.points]]
name = "temp"
object = "analog-input,1"
"""


def frame(doc: object, *, deflate: bool = False) -> bytes:
    body = cbor2.dumps(doc)
    if deflate:
        packer = zlib.compressobj(6, zlib.DEFLATED, -15)
        return bytes([0x81]) + packer.compress(body) + packer.flush()
    return bytes([0x01]) + body


def cmd(name: object = "restart", args: object = None, **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": "c-1", "name": name, "expires": 1_800_000_000, "args": args or {}}
    doc.update(fields)
    return doc


# -- good messages -----------------------------------------------------------------------


@pytest.mark.parametrize("deflate", [False, True])
def test_config_push_decodes(deflate: bool) -> None:
    push = downlink.decode_config(frame({"version": 7, "toml": GOOD_TOML}, deflate=deflate))
    assert isinstance(push, ValidConfig)
    assert push.version == 7 and push.toml_text == GOOD_TOML
    assert push.config.uplink.keepalive_s == 30
    assert push.config.point_count() == 5


@pytest.mark.parametrize(("doc", "name", "args"), [
    (cmd("restart"), "restart", {}),
    (cmd("reboot"), "reboot", {}),
    (cmd("renew_cert"), "renew_cert", {}),
    (cmd("logs"), "logs", {"lines": 200}),
    (cmd("logs", {"lines": 1000}), "logs", {"lines": 1000}),
    (cmd("read", {"points": ["ahu1.supply_temp", "ahu1.supply_temp", "ahu2.sp"]}), "read",
     {"points": ["ahu1.supply_temp", "ahu2.sp"]}),
    (cmd("write", {"point": "ahu1.setpoint", "value": 21.5}), "write",
     {"point": "ahu1.setpoint", "value": 21.5, "relinquish": False}),
    (cmd("write", {"point": "ahu2.sp", "value": 20, "priority": 8}), "write",
     {"point": "ahu2.sp", "value": 20, "priority": 8, "relinquish": False}),
    (cmd("write", {"point": "ahu2.sp", "relinquish": True, "priority": 8}), "write",
     {"point": "ahu2.sp", "priority": 8, "relinquish": True}),
    (cmd("write", {"point": "ahu1.fan", "value": True}), "write",
     {"point": "ahu1.fan", "value": True, "relinquish": False}),
])
def test_commands_decode(doc: dict[str, Any], name: str, args: dict[str, Any]) -> None:
    for deflate in (False, True):
        c = decode_command(frame(doc, deflate=deflate))
        assert (c.id, c.name, c.expires, c.args()) == ("c-1", name, 1_800_000_000.0, args)


# -- bad messages --------------------------------------------------------------------------

DEEP: Any = []
for _ in range(50):
    DEEP = [DEEP]

BAD_CMD: list[tuple[str, bytes, str]] = [
    ("empty", b"", "empty payload"),
    ("version", bytes([0x02]) + cbor2.dumps(cmd()), "unsupported format version 2"),
    ("garbage cbor", b"\x01\xff\xff", "bad CBOR"),
    ("truncated", frame(cmd())[:-3], "truncated"),
    ("trailing", frame(cmd()) + b"\x00", "after the item"),
    ("bad deflate", b"\x81\xff\xff\xff", "bad compressed data"),
    ("too big", b"\x01" + cbor2.dumps("x" * 20000), "over the 16384-byte limit"),
    ("zip bomb", b"\x81" + zlib.compress(cbor2.dumps("x" * 100_000), 9, )[2:-4], "over the 65536-byte limit"),
    ("deep", frame(cmd(args={"a": DEEP})), "nested more than 4 deep"),
    ("many items", frame(cmd("read", {"points": [0] * 2000})), "more than 1000 items"),
    ("tag", frame(cmd(expires=cbor2.CBORTag(1, 1_800_000_000))), "tag 1 is not allowed"),
    ("bignum", frame(cmd(expires=2**70)), "tag 2 is not allowed"),
    ("indefinite", b"\x01\x9f\xff", "indefinite lengths"),
    ("undefined", frame(cmd(expires=cbor2.undefined)), "simple value 23"),
    ("duplicate key", b"\x01\xa2\x61a\x00\x61a\x01", "bad CBOR"),
    ("not a map", frame([1, 2]), "must be a map, not a list"),
    ("int key", frame({1: 2}), "map key must be a text string"),
    ("bytes key", frame({b"id": 2}), "keys must be text, not bytes"),
    ("unknown field", frame(cmd(extra=1)), "unknown field(s): 'extra'"),
    ("missing field", frame({"id": "c-1", "name": "restart", "args": {}}), "missing field(s): expires"),
    ("bad id", frame(cmd(id="a/b")), "id must be"),
    ("long id", frame(cmd(id="a" * 65)), "id must be"),
    ("empty id", frame(cmd(id="")), "id must be"),
    ("int id", frame(cmd(id=5)), "id must be"),
    ("unknown command", frame(cmd("format_disk")), "unknown command 'format_disk'"),
    ("name type", frame(cmd(name=1)), "name must be text"),
    ("expires nan", frame(cmd(expires=math.nan)), "expires must be"),
    ("expires inf", frame(cmd(expires=math.inf)), "expires must be"),
    ("expires bool", frame(cmd(expires=True)), "expires must be"),
    ("expires text", frame(cmd(expires="soon")), "expires must be"),
    ("expires negative", frame(cmd(expires=-1)), "expires must be"),
    ("args list", frame(cmd(args=[1])), "args must be a map, not a list"),
    ("restart arg", frame(cmd("restart", {"now": True})), "unknown field(s): 'now'"),
    ("logs zero", frame(cmd("logs", {"lines": 0})), "lines must be an integer from 1 to 1000"),
    ("logs many", frame(cmd("logs", {"lines": 1001})), "lines must be"),
    ("logs bool", frame(cmd("logs", {"lines": True})), "lines must be"),
    ("logs float", frame(cmd("logs", {"lines": 5.0})), "lines must be"),
    ("read none", frame(cmd("read", {"points": []})), "points must be a list of 1 to 100"),
    ("read too many", frame(cmd("read", {"points": ["a.b"] * 101})), "not a list of 101"),
    ("read not list", frame(cmd("read", {"points": "a.b"})), "points must be a list"),
    ("read bad name", frame(cmd("read", {"points": ["a.b", "a/b"]})), "points[1] must be a point name"),
    ("read missing", frame(cmd("read", {})), "missing field(s): points"),
    ("write no point", frame(cmd("write", {"value": 1})), "missing field(s): point"),
    ("write no value", frame(cmd("write", {"point": "a.b"})), "missing field(s): value"),
    ("write null", frame(cmd("write", {"point": "a.b", "value": None})), "value must be a boolean, number or text"),
    ("write map", frame(cmd("write", {"point": "a.b", "value": {}})), "not a map"),
    ("write nan", frame(cmd("write", {"point": "a.b", "value": math.nan})), "finite number"),
    ("write inf", frame(cmd("write", {"point": "a.b", "value": -math.inf})), "finite number"),
    ("write long text", frame(cmd("write", {"point": "a.b", "value": "x" * 257})), "over 256"),
    ("write bytes", frame(cmd("write", {"point": "a.b", "value": b"x"})), "not bytes"),
    ("priority 0", frame(cmd("write", {"point": "a.b", "value": 1, "priority": 0})), "priority must be"),
    ("priority 17", frame(cmd("write", {"point": "a.b", "value": 1, "priority": 17})), "priority must be"),
    ("priority bool", frame(cmd("write", {"point": "a.b", "value": 1, "priority": True})), "priority must be"),
    ("relinquish type", frame(cmd("write", {"point": "a.b", "value": 1, "relinquish": 1})), "relinquish must be"),
    ("relinquish value", frame(cmd("write", {"point": "a.b", "value": 1, "relinquish": True, "priority": 8})),
     "takes no value"),
    ("relinquish no priority", frame(cmd("write", {"point": "a.b", "relinquish": True})), "needs the priority"),
    ("write unknown arg", frame(cmd("write", {"point": "a.b", "value": 1, "force": True})), "unknown field(s)"),
]


@pytest.mark.parametrize(("payload", "reason"), [(p, r) for _, p, r in BAD_CMD], ids=[n for n, _, _ in BAD_CMD])
def test_bad_commands_are_refused(payload: bytes, reason: str) -> None:
    with pytest.raises(WireError) as info:
        decode_command(payload)
    assert reason in str(info.value)


BAD_CONFIG: list[tuple[str, bytes, str]] = [
    ("not a map", frame("x"), "must be a map, not text"),
    ("missing toml", frame({"version": 1}), "missing field(s): toml"),
    ("unknown field", frame({"version": 1, "toml": "", "x": 1}), "unknown field(s)"),
    ("version 0", frame({"version": 0, "toml": ""}), "version must be an integer from 1"),
    ("version bool", frame({"version": True, "toml": ""}), "version must be"),
    ("version float", frame({"version": 1.0, "toml": ""}), "version must be"),
    ("toml bytes", frame({"version": 1, "toml": b""}), "toml must be text, not bytes"),
    ("bad toml", frame({"version": 1, "toml": "[uplink\n"}), "not valid TOML"),
    ("huge int toml", frame({"version": 1, "toml": "a = " + "1" * 5000}), "not valid TOML"),
    ("deep toml", frame({"version": 1, "toml": "a = " + "[" * 5000}), "not valid TOML"),
    ("config error", frame({"version": 1, "toml": "[uplink]\nkeepalive_s = 1\n"}), "keepalive_s must be"),
    ("too big", b"\x01" + cbor2.dumps({"version": 1, "toml": "#" * 300_000}), "over the 262144-byte limit"),
]


@pytest.mark.parametrize(("payload", "reason"), [(p, r) for _, p, r in BAD_CONFIG],
                         ids=[n for n, _, _ in BAD_CONFIG])
def test_bad_configs_are_refused(payload: bytes, reason: str) -> None:
    with pytest.raises(RejectedError) as info:
        downlink.decode_config(payload)
    assert reason in str(info.value)


def test_config_rejected_with_every_reason() -> None:
    toml = GOOD_TOML.replace("keepalive_s = 30", "keepalive_s = 3\nbogus = 1") + """
[queue]
max_samples = 5

[[modbus_tcp]]
name = "ahu1"
host = "h"
poll_interval_s = 1.0
[[modbus_tcp.points]]
name = "p"
table = "holding"
address = 70000
type = "uint16"

[[modbus_rtu]]
name = "rs485"
port = "/dev/ttyUSB0"
[[modbus_rtu.devices]]
name = "m1"
unit_id = 300
poll_interval_s = 1.0
points = []
[[modbus_rtu.devices]]
unit_id = 2
poll_interval_s = 1.0
points = []
"""
    with pytest.raises(RejectedError) as info:
        downlink.decode_config(frame({"version": 2, "toml": toml}))
    reasons = info.value.reasons
    assert any("[uplink]: unknown key(s): bogus" in r for r in reasons)
    assert any("[queue] max_samples" in r for r in reasons)
    assert any('[[modbus_tcp]] #2: device "ahu1"' in r and "70000" in r for r in reasons)
    assert any('device "m1": unit_id 300' in r for r in reasons)
    assert any('device #2: missing key "name"' in r for r in reasons)
    assert str(info.value).startswith(f"config: {len(reasons)} problems")


def test_config_names_used_twice_across_buses() -> None:
    toml = GOOD_TOML.replace('name = "ahu2"', 'name = "ahu1"')
    with pytest.raises(RejectedError, match='device name "ahu1" is used twice'):
        downlink.decode_config(frame({"version": 2, "toml": toml}))


def test_unknown_leaf() -> None:
    where = topics.parse("boxes/B-1/down/ota")
    assert where.leaf is None and where.raw_leaf == "ota"  # not handled by this version: ignored
    with pytest.raises(WireError, match="unexpected topic"):
        topics.parse("boxes/B-1/sideways/cmd")


# -- expiry and repeated ids -----------------------------------------------------------------


def test_expiry() -> None:
    c: Command = decode_command(frame(cmd(expires=1000.5)))
    assert not downlink.is_expired(c, 1000.0)
    assert downlink.is_expired(c, 1000.5)
    assert downlink.is_expired(c, 2000)


def test_repeated_id_runs_once() -> None:
    seen = SeenIds(limit=3)
    assert seen.add("a") and seen.add("b")
    assert not seen.add("a")
    assert "a" in seen and "z" not in seen
    restored = SeenIds.from_json(seen.to_json(), limit=3)
    assert not restored.add("b")
    assert restored.add("c") and restored.add("d")  # "a" is forgotten: the oldest beyond 3
    assert len(restored) == 3 and "a" not in restored and "b" in restored


@pytest.mark.parametrize("data", [b"", b"{", b"[]", b'{"v": 2, "ids": []}', b'{"v": 1, "ids": [1]}',
                                  b'{"v": 1, "ids": ["a/b"]}', b"[" * 100_000])
def test_seen_ids_refuses_garbage(data: bytes) -> None:
    with pytest.raises(RejectedError, match="seen command ids"):
        SeenIds.from_json(data)


# -- writes, as the write command checks them: by the point's own bus (`PointSource.check_write`) -----


def buses() -> Buses:
    """The buses of GOOD_TOML (Modbus and BACnet), built, not running: nothing can be sent."""
    push = downlink.decode_config(frame({"version": 1, "toml": GOOD_TOML}))
    return buses_of(make_sources(push.config))


def write(args: dict[str, Any]) -> Write:
    c = decode_command(frame(cmd("write", args)))
    assert isinstance(c, Write)
    return c


@pytest.mark.parametrize("args", [
    {"point": "ahu1.setpoint", "value": 21.5},
    {"point": "ahu1.setpoint", "value": 10},
    {"point": "ahu1.setpoint", "value": 30.0},
    {"point": "ahu1.fan", "value": False},
    {"point": "ahu2.sp", "value": 20.0, "priority": 8},
    {"point": "ahu2.sp", "relinquish": True, "priority": 16},
])
def test_allowed_writes(args: dict[str, Any]) -> None:
    w = write(args)
    buses().source_of[w.point].check_write(w.point, None if w.relinquish else w.value, w.priority)


@pytest.mark.parametrize(("args", "reason"), [
    ({"point": "ahu9.x", "value": 1}, "is not a point of this Box"),
    ({"point": "ahu1.supply_temp", "value": 1.0}, "is not writable"),
    ({"point": "ahu2.temp", "value": 1.0}, "is not writable"),
    ({"point": "ahu1.setpoint", "value": 9.9}, "below its min 10.0"),
    ({"point": "ahu1.setpoint", "value": 30.5}, "above its max 30.0"),
    ({"point": "ahu2.sp", "value": 26}, "max 25.0"),
    ({"point": "ahu1.setpoint", "value": True}, "is not a number"),
    ({"point": "ahu1.setpoint", "value": "20"}, "is not a number"),
    ({"point": "ahu1.fan", "value": 1}, "is not true or false"),
    ({"point": "ahu1.setpoint", "value": 20, "priority": 8}, "has no write priorities"),
    ({"point": "ahu1.setpoint", "relinquish": True, "priority": 8}, "has no write priorities"),
    ({"point": "ahu2.sp", "value": 20, "priority": 6}, "6 is reserved"),
])
def test_refused_writes(tmp_path: Path, args: dict[str, Any], reason: str) -> None:
    runner = CommandRunner(tmp_path, LogRing())
    answer = replies.decode_reply(asyncio.run(runner.run(write(args), buses())).reply)
    assert isinstance(answer, replies.CmdReply)
    assert answer.status == "rejected" and reason in answer.detail
    assert answer.detail.startswith("cmd c-1 (write): ")


# -- replies -----------------------------------------------------------------------------------


def test_command_reply_round_trip() -> None:
    payload = replies.reply("c-1", "ok", "read 2 points", result={"a.b": 1.5, "a.c": None}, faults={"a.c": 1})
    doc = replies.decode_reply(payload).to_doc()
    assert doc == {"kind": "cmd", "id": "c-1", "status": "ok", "detail": "read 2 points",
                   "result": {"a.b": 1.5, "a.c": None}, "faults": {"a.c": 1}}
    assert wire.decode_doc(payload, {"id": str, "status": str})["status"] == "ok"


def test_reply_detail_is_bounded() -> None:
    doc = replies.decode_reply(replies.reply("c-1", "failed", "é" * 5000))
    assert isinstance(doc, replies.CmdReply)
    detail = doc.detail
    assert isinstance(detail, str) and len(detail.encode()) <= replies.MAX_DETAIL
    assert detail.endswith("...")


def test_logs_reply_is_bounded() -> None:
    lines = [f"line {i} " + "x" * 2000 for i in range(1000)]
    payload = replies.reply("c-1", "ok", lines=lines)
    assert len(payload) <= wire.MAX_PAYLOAD
    answer = replies.decode_reply(payload)
    assert isinstance(answer, replies.CmdReply)
    kept = answer.lines
    assert isinstance(kept, list) and 50 < len(kept) < 1000
    assert kept[-1].startswith("line 999 ")  # the newest are kept


def test_config_reply_round_trip() -> None:
    doc = replies.decode_reply(replies.config_reply(3, "rejected", ["a", "b" * 2000]))
    assert isinstance(doc, replies.ConfigReply) and doc.version == 3 and doc.status == "rejected"
    reasons = doc.reasons
    assert isinstance(reasons, list) and reasons[0] == "a" and len(reasons[1]) <= replies.MAX_REASON
    answer = replies.decode_reply(replies.config_reply(3, "rejected", [str(i) for i in range(500)]))
    assert isinstance(answer, replies.ConfigReply)
    many = answer.reasons
    assert isinstance(many, list) and len(many) == replies.MAX_REASONS and many[-1] == "... and 401 more"


def test_reply_statuses_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown command status"):
        replies.reply("c-1", "maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown configuration status"):
        replies.config_reply(1, "ok")  # type: ignore[arg-type]
    with pytest.raises(WireError, match="is not a reply"):
        replies.decode_reply(wire.encode_doc({"kind": "cmd", "status": "bogus", "id": "x"}))
