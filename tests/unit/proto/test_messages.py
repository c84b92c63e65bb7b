"""Every message of the contract, both directions: what one side encodes, the other decodes to the
same typed value; and decoding is strict both ways (the cloud refuses what the Box would)."""

from __future__ import annotations

import json
from typing import Any

import cbor2
import pytest

from proto import commands, downlink, modem, replies, uplink, wire
from proto.errors import WireError
from proto.points import PointInfo

HEALTH = uplink.Health(
    ts_ms=1_800_000_000_000, epoch=0xABCDEF, last_seq=41, clock_ok=True, version="0.1.0", hb_s=60, up_s=3600,
    oldest_seq=40, queue=120, evicted=0, cert_not_after=1_900_000_000, config_version=3, config_sha256="ab" * 32,
    probation_s=300.0, buses={"ahu1": {"requests": 10, "errors": 1, "cycles": 5}}, restarts={"bus:ahu1": 1},
)


def test_every_uplink_message_round_trips() -> None:
    assert uplink.decode_health(HEALTH.encode()) == HEALTH
    minimal = uplink.Health(ts_ms=1, epoch=2, last_seq=3)
    assert uplink.decode_health(minimal.encode()) == minimal
    evicted = uplink.Evicted(ts_ms=5, samples=100, total=300, seqs=[(1, 4), (9, 9)], epoch=7)
    assert uplink.decode_event(evicted.encode()) == evicted
    ota = uplink.OtaEvent("d-1a2b", "0.2.0", "downloading", "25 % of 4000 bytes", "0.1.0", 9, 0.25)
    assert uplink.decode_event(ota.encode()) == ota
    signal = modem.SignalReport("lte", "good", -61, -85, -9)
    report = modem.ModemReport("connected", "roaming", "Sim Telecom", "26201", "1A2B3C", "LTE BAND 3",
                               "8949001234567890123", "861234567890123", signal, True, "cellular", "",
                               modem.UsageReport("2026-12-01", 10, 20, 500_000_000, True, True))
    with_modem = uplink.Health(ts_ms=1, epoch=2, last_seq=3, modem=report)
    assert uplink.decode_health(with_modem.encode()) == with_modem
    for ev in (modem.ModemEvent("fault", 4, "apn_rejected", "the network refused the APN 'x'"),
               modem.ModemEvent("fault_cleared", 5), modem.ModemEvent("recovery", 6, rung="reset", why="silent 60 s"),
               modem.ModemEvent("recovered", 7, rung="reset", why="silent 60 s", took_s=41.5),
               modem.WanEvent("cellular", "wwan0", "eth0 is down", 8, "route: exit 1")):
        assert uplink.decode_event(ev.encode()) == ev
    for status in (uplink.Status(True, 5, "0.1.0"), uplink.Status(False, 6, None, "connection lost"),
                   uplink.Status(True, 7, "0.1.0", crl=uplink.crl_digest(b"a CRL"))):
        assert uplink.decode_status(status.encode()) == status
    notice = b'{"v":1,"refused":12,"reason":"over its message rate"}'  # what cloud/boxguard.c writes
    assert uplink.decode_limits(notice) == uplink.LimitsNotice(12, "over its message rate")
    table = [PointInfo("ahu1.t", "degC", "float32"), PointInfo("ahu1.on", "", "bool")]
    assert wire.decode_table(wire.encode_table(table)) == (wire.table_id(table), table)


def test_replies_round_trip() -> None:
    cmd = replies.decode_reply(replies.reply("c-1", "ok", "1 of 2 point(s) read", result={"a.x": 1.5, "a.y": None},
                                             faults={"a.y": 1}))
    assert cmd == replies.CmdReply("c-1", "ok", "1 of 2 point(s) read", {"a.x": 1.5, "a.y": None}, {"a.y": 1})
    logs = replies.decode_reply(replies.reply("c-2", "ok", lines=["one", "two"]))
    assert isinstance(logs, replies.CmdReply) and logs.lines == ["one", "two"]
    config = replies.decode_reply(replies.config_reply(4, "applied", [f"{replies.ON_PROBATION} for 3 s"]))
    assert config == replies.ConfigReply(4, "applied", ["on probation for 3 s"])


def test_every_downlink_message_round_trips() -> None:
    push = downlink.ConfigPush(7, "[uplink]\n", allow_empty=True)
    assert downlink.decode_config(push.encode()) == push
    assert downlink.decode_time(downlink.TimeNotice(1_800_000_000_000).encode()).ts_ms == 1_800_000_000_000
    pem = b"-----BEGIN X509 CRL-----\nMIIB\n-----END X509 CRL-----\n"
    assert downlink.decode_crl(pem) == pem
    assert downlink.decode_table_request(downlink.TableRequest(2**32 - 1).encode()).table_id == 2**32 - 1
    every: list[commands.Command] = [
        commands.Write("c-1", 2e9, "ahu1.sp", 21.5, 8),
        commands.Write("c-2", 2e9, "ahu2.sp", None, 8, relinquish=True),
        commands.Read("c-3", 2e9, ("ahu1.t", "ahu2.sp")),
        commands.Restart("c-4", 2e9), commands.Reboot("c-5", 2e9), commands.Logs("c-6", 2e9, 20),
        commands.RenewCert("c-7", 2e9), commands.Update("c-8", 2e9, "d-1", "boxd-0.2.0.tar.gz", "0.2.0", 60),
        commands.UpdateAbort("c-9", 2e9, "d-1"),
    ]
    assert {c.name for c in every} == commands.NAMES  # each command has its class, each class its tag
    for cmd in every:
        assert downlink.decode_command(downlink.encode_command(cmd)) == cmd


def _doc(payload: dict[str, Any], tag_at: str | None = None) -> bytes:
    """A framed CBOR map; with `tag_at`, that field's value is wrapped in a CBOR tag (an epoch date)."""
    doc: dict[str, Any] = dict(payload)
    if tag_at is not None:
        doc[tag_at] = cbor2.CBORTag(1, doc[tag_at])
    return b"\x01" + cbor2.dumps(doc)


@pytest.mark.parametrize(("decode", "doc", "field"), [
    (uplink.decode_health, HEALTH.to_doc(), "ts"),
    (uplink.decode_event, uplink.OtaEvent("d-1", "0.2.0", "failed", "", "0.1.0", 9).to_doc(), "ts"),
    (replies.decode_reply, {"kind": "config", "version": 3, "status": "kept", "reasons": []}, "version"),
    (downlink.decode_command, {"id": "c-1", "name": "restart", "expires": 2e9, "args": {}}, "expires"),
    (downlink.decode_config, {"version": 1, "toml": ""}, "version"),
])
def test_a_cbor_tag_is_refused_in_both_directions(decode: Any, doc: dict[str, Any], field: str) -> None:
    decode(_doc(doc))  # as sent: fine
    with pytest.raises(WireError, match="tag 1 is not allowed"):
        decode(_doc(doc, tag_at=field))


@pytest.mark.parametrize(("payload", "reason"), [
    ({**HEALTH.to_doc(), "extra": 1}, "unknown field"),
    ({**HEALTH.to_doc(), "last_seq": True}, "last_seq"),
    ({**HEALTH.to_doc(), "clock_ok": 1}, "clock_ok"),
    ({**HEALTH.to_doc(), "buses": {"ahu1": {"requests": "many"}}}, "buses"),
    ({**HEALTH.to_doc(), "version": ["0.1.0"]}, "version"),
])
def test_a_heartbeat_is_checked_field_by_field(payload: dict[str, Any], reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        uplink.decode_health(wire.encode_doc(payload))


@pytest.mark.parametrize(("change", "reason"), [
    ({"kind": "party"}, "unknown event kind"),
    ({"state": "exploded"}, "unknown state"),
    ({"deployment": "d/1"}, "deployment"),
    ({"version": "1.2"}, "version"),
    ({"running": ""}, "running"),
    ({"progress": 1.5}, "progress"),
    ({"ts": "yesterday"}, "ts"),
    ({"v": 2}, "version 2"),
    ({"extra": 1}, "unknown field"),
])
def test_an_ota_event_is_checked_field_by_field(change: dict[str, Any], reason: str) -> None:
    doc = {**uplink.OtaEvent("d-1", "0.2.0", "failed", "", "0.1.0", 9).to_doc(), **change}
    with pytest.raises(WireError, match=reason):
        uplink.decode_event(wire.encode_doc(doc))


@pytest.mark.parametrize("doc", [
    {"kind": "cmd", "id": "c/1", "status": "ok", "detail": ""},
    {"kind": "cmd", "id": "c-1", "status": "ok", "detail": "", "result": {"not a point": 1}},
    {"kind": "cmd", "id": "c-1", "status": "ok", "detail": "", "faults": {"a.b": 99}},
    {"kind": "cmd", "id": "c-1", "status": "ok", "detail": "", "extra": 1},
    {"kind": "config", "version": True, "status": "kept", "reasons": []},
    {"kind": "config", "version": 1, "status": "kept", "reasons": "none"},
])
def test_a_reply_is_checked_field_by_field(doc: dict[str, Any]) -> None:
    with pytest.raises(WireError):
        replies.decode_reply(wire.encode_doc(doc))


@pytest.mark.parametrize("payload", [b"", b"{", b"[]", json.dumps({"v": 2, "online": True}).encode(),
                                     json.dumps({"v": 1, "online": "yes"}).encode(),
                                     json.dumps({"v": 1, "online": True, "reason": 5}).encode(), b"x" * 3000,
                                     json.dumps({"v": 1, "online": True, "crl": "ABCDEF0123456789"}).encode(),
                                     json.dumps({"v": 1, "online": True, "crl": 5}).encode()])
def test_a_status_is_checked(payload: bytes) -> None:
    with pytest.raises(WireError):
        uplink.decode_status(payload)


@pytest.mark.parametrize("payload", [b"", b"{}", b'{"table": -1}', b'{"table": 4294967296}', b'{"table": true}',
                                     b'{"table": 1, "more": 2}', b'{"table": 1.5}', b"[1]", b"x" * 2000])
def test_a_table_request_is_checked(payload: bytes) -> None:
    with pytest.raises(WireError):
        downlink.decode_table_request(payload)


@pytest.mark.parametrize("payload", [b"", b"[]", b'{"refused": "12", "reason": "x"}', b'{"refused": 1}'])
def test_a_limits_notice_is_checked(payload: bytes) -> None:
    with pytest.raises(WireError, match="limits notice"):
        uplink.decode_limits(payload)


@pytest.mark.parametrize("payload", [b"", b"{}", b'{"ts": "now"}', b'{"ts": true}', b'{"ts": -1}', b"[" * 2000])
def test_a_time_message_is_checked(payload: bytes) -> None:
    with pytest.raises(WireError, match="time must be"):
        downlink.decode_time(payload)


@pytest.mark.parametrize("payload", [b"", b"not a crl", b"-----BEGIN CERTIFICATE-----\n",
                                     b"-----BEGIN X509 CRL-----" + b"x" * downlink.MAX_CRL])
def test_a_crl_is_checked(payload: bytes) -> None:
    with pytest.raises(WireError, match="PEM CRL"):
        downlink.decode_crl(payload)


def test_a_point_table_names_points_whole() -> None:
    for name in ("nodot", "a.b.c", "Ahu.t"):
        body = b"\x01" + cbor2.dumps([0, [[name, "", "f"]]])
        with pytest.raises(WireError, match="not a point name"):
            wire.decode_table(body)


# -- storage as the acknowledgement (issue 20) -----------------------------------------------------


def test_stored_notices_and_the_acks_capability_round_trip_and_older_readers_are_unaffected() -> None:
    for notice in (downlink.StoredNotice(2**62, 7), downlink.StoredNotice(1, 4, frozenset({6, 7, 9, 260}))):
        assert downlink.decode_stored(notice.encode()) == notice
    assert len(downlink.StoredNotice(2**62, 123_456).encode()) < 40  # a few 4G bytes
    every_third = frozenset(range(1001, 1097)) - frozenset(range(1001, 1097, 3))  # a receiver lost a third
    assert len(downlink.StoredNotice(2**62, 1000, every_third).encode()) < 60
    with_acks = downlink.TimeNotice(1_800_000_000_000, acks=True)
    assert downlink.decode_time(with_acks.encode()) == with_acks
    assert downlink.decode_time(b'{"ts": 5}').acks is False  # an older platform: no stored notices
    assert json.loads(with_acks.encode())["ts"] == 1_800_000_000_000  # an older Box reads only "ts"
    status = uplink.Status(True, 1, "1.0", acks_s=30)
    assert uplink.decode_status(status.encode()) == status
    assert uplink.decode_status(b'{"v":1,"online":true,"ts":1}').acks_s == 0  # an older Box asks for none


@pytest.mark.parametrize("payload", [
    b"", b"[]", b'{"e": 1}', b'{"e": -1, "s": 2}', b'{"e": 1, "s": true}', b'{"e": 1, "s": 2, "x": 3}',
    b'{"e": 1, "s": 2, "b": "%%%"}', b'{"e": 1, "s": 2, "b": 7}', b'{"e": 1, "s": 2, "b": "AAA"}',
    b'{"e": 1, "s": 2, "b": "' + b"A" * 48 + b'"}', b"{" * 2000,
])
def test_a_malformed_stored_notice_is_refused_saying_what(payload: bytes) -> None:
    with pytest.raises(WireError, match="stored notice"):
        downlink.decode_stored(payload)


def test_a_status_asking_for_notices_out_of_bounds_is_refused() -> None:
    for acks in (-1, 3601, True, "30"):
        with pytest.raises(WireError, match="acks"):
            uplink.decode_status(json.dumps({"v": 1, "online": True, "ts": 1, "acks": acks}).encode())
