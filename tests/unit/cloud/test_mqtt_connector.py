"""The MQTT connector's pure parts (topic templates, loops refused, data messages, commands checked)
and its durable queue in the store (the byte cap evicting the oldest, counted; deleted on PUBACK)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from cloud.mqttconn import Backoff, messages
from cloud.store import Store
from proto import wire
from proto.points import PointInfo
from tests.support.storedb import both_engines

TABLE = [PointInfo("ahu1.temp", "degC", "float32"), PointInfo("ahu1.fan", "", "bool")]


def _batch(seq: int, temp: float = 21.5) -> wire.Batch:
    payload = wire.encode_batch(3, seq, wire.table_id(TABLE), 1_700_000_000_000, [wire.encode_group(0, 0, [temp, True],
                                                                                                   {})])
    return wire.decode_batch(payload)


def test_templates_render_whole_levels_and_subscribe_with_a_wildcard_for_the_box() -> None:
    data = messages.levels(messages.DEFAULT_DATA, "acme/site-1")
    cmd = messages.levels(messages.DEFAULT_COMMAND, "acme/site-1", allowed=("{box}",), needs=("{box}",))
    assert messages.render(data, "BOX-1", "ahu1.temp") == "acme/site-1/BOX-1/ahu1.temp"
    assert messages.subscription(cmd) == "acme/site-1/+/set"
    assert messages.box_of(cmd, "acme/site-1/BOX-1/set") == "BOX-1"
    assert messages.box_of(cmd, "acme/site-1/BOX-1/other") is None
    assert messages.box_of(cmd, "acme/site-1/$bad/set") is None  # not a Box id


@pytest.mark.parametrize(("template", "prefix", "why"), [
    ("{prefix}/x{box}", "p", "whole level"),
    ("{prefix}/+/{box}", "p", "neither text"),
    ("{prefix}/#", "p", "neither text"),
    ("{prefix}/{box}", "a/+", "prefix"),
    ("$SYS/{box}", "", "not starting with $"),
    ("{prefix}/{box}/{box}", "p", "twice"),
])
def test_templates_with_wildcards_partial_placeholders_or_system_topics_are_refused(template: str, prefix: str,
                                                                                    why: str) -> None:
    with pytest.raises(messages.TemplateError, match=why.replace("$", r"\$")):
        messages.levels(template, prefix)


def test_a_command_topic_that_a_published_topic_could_name_is_an_overlap() -> None:
    def lv(t: str) -> list[str]:
        return messages.levels(t, "p")

    assert not messages.overlap(lv("{prefix}/{box}/set"), lv("{prefix}/{box}/{point}"))  # a point has a dot
    assert messages.overlap(lv("{prefix}/{box}/set"), lv("{prefix}/data/{box}"))  # a Box may be called "set"
    assert messages.overlap(lv("{prefix}/{box}/set"), lv("{prefix}/{box}/set"))
    assert not messages.overlap(lv("{prefix}/{box}/set"), lv("{prefix}/{box}/reply"))
    assert messages.overlap(lv("{prefix}/{box}/a.b"), lv("{prefix}/{box}/{point}"))


def test_data_messages_a_point_or_a_batch_with_the_filter_and_non_finite_values_as_text() -> None:
    per_point = messages.data(messages.levels(messages.DEFAULT_DATA, "p"), "BOX-1", _batch(7, float("nan")), TABLE,
                              ["ahu1.t*"])
    assert [(t, json.loads(m)) for t, m in per_point] == [
        ("p/BOX-1/ahu1.temp", {"id": "BOX-1/3/7", "box": "BOX-1", "point": "ahu1.temp",
                               "samples": [[1_700_000_000_000, "NaN", 0]], "unchanged": []})]
    whole = messages.data(messages.levels("{prefix}/{box}/batch", "p"), "BOX-1", _batch(8), TABLE, [])
    doc = json.loads(whole[0][1])
    assert whole[0][0] == "p/BOX-1/batch" and doc["seq"] == 8 and [s[0] for s in doc["samples"]] == [
        "ahu1.temp", "ahu1.fan"]
    assert messages.data(messages.levels(messages.DEFAULT_DATA, "p"), "BOX-1", _batch(9), TABLE, ["other.*"]) == []


@pytest.mark.parametrize(("payload", "why"), [
    (b"x" * (messages.MAX_COMMAND + 1), "at most 4096 bytes"),
    (b"\xff", "not a JSON document"),
    (b'{"point": "a.b", "value": NaN}', "not a JSON document"),
    (b"[1]", "a JSON object"),
    (b'{"point": "a.b"}', "needs point and value"),
    (b'{"point": "a.b", "value": 1, "name": "reboot"}', "unknown keys 'name'"),
    (b'{"point": "ab", "value": 1}', "point name"),
    (b'{"point": "a.b", "value": {"x": 1}}', "boolean, number or text"),
    (b'{"point": "a.b", "value": 1, "priority": 17}', "priority"),
    (b'{"point": "a.b", "value": 1, "ttl_s": 1}', "ttl_s"),
    (b'{"point": "a.b", "value": 1, "id": "a b"}', "id"),
])
def test_commands_are_checked_strictly_and_say_what_is_wrong(payload: bytes, why: str) -> None:
    with pytest.raises(messages.CommandError, match=why):
        messages.parse_command(payload)


def test_a_refused_command_keeps_its_id_for_the_reply_and_a_good_one_is_a_write() -> None:
    with pytest.raises(messages.CommandError) as e:
        messages.parse_command(b'{"id": "r1", "point": "a.b", "value": 1, "x": 2}')
    assert e.value.ref == "r1"
    w = messages.parse_command(b'{"id": "r2", "point": "a.b", "value": 21.5, "ttl_s": 60}')
    assert (w.args, w.ttl_s, w.ref) == ({"point": "a.b", "value": 21.5}, 60, "r2")


def test_reconnection_waits_are_full_jitter_under_an_exponential_ceiling() -> None:
    b = Backoff(1.0, 60.0)
    assert b.delay(0, lambda: 1.0) == 1.0 and b.delay(3, lambda: 1.0) == 8.0 and b.delay(10, lambda: 1.0) == 60.0
    assert b.delay(10, lambda: 0.0) == 0.0 and b.delay(10, lambda: 0.5) == 30.0


def _mqtt(store: Store) -> int:
    cid = store.add_connector(1, "m", "mqtt", service_account_id=1, config={}, sealed="")
    store.update_connector(cid, state="enabled")
    return cid


def test_the_queue_keeps_its_byte_cap_by_dropping_its_oldest_and_counts_them(store: Store) -> None:
    cid = _mqtt(store)
    msgs = [(f"t/{i}", b"x" * 96) for i in range(100)]  # 99..100 bytes each
    ok, evicted = store.mqtt_queue(cid, 0, 5, msgs, cap=5000)
    assert ok and evicted == 50
    s = store.mqtt_state(cid)
    assert s is not None and (s.queued, s.evicted) == (50, 50) and s.bytes <= 5000
    assert [m.topic for m in store.mqtt_next(cid, 0, 1000)] == [f"t/{i}" for i in range(50, 100)]
    assert store.mqtt_queue(cid, 0, 6, msgs, cap=5000) == (False, 0)  # its place moved already: nothing written


def test_a_message_goes_only_on_its_puback_and_is_counted_once(store: Store) -> None:
    cid = _mqtt(store)
    store.mqtt_queue(cid, 0, 1, [("a", b"1"), ("b", b"2"), ("c", b"3")], cap=10**6)
    first = store.mqtt_next(cid, 0, 2)
    assert store.mqtt_acked(cid, [first[0].id]) == 1
    assert store.mqtt_acked(cid, [first[0].id]) == 0  # acknowledged twice (a duplicate): counted once
    assert [m.topic for m in store.mqtt_next(cid, 0, 10)] == ["b", "c"]  # the unacknowledged stay, in order
    row, s = store.connector(cid), store.mqtt_state(cid)
    assert row is not None and row.delivered == 1 and s is not None and (s.queued, s.bytes) == (2, 4)
    store.mqtt_forget(cid)
    assert store.mqtt_next(cid, 0, 10) == [] and store.mqtt_state(cid) is None


def test_an_id_is_never_given_again_even_after_the_queue_was_empty(store: Store) -> None:
    cid = _mqtt(store)
    store.mqtt_queue(cid, 0, 1, [("a", b"1")], cap=10**6)
    first = store.mqtt_next(cid, 0, 10)[0].id
    store.mqtt_acked(cid, [first])
    store.mqtt_queue(cid, 1, 2, [("b", b"2")], cap=10**6)
    assert [m.topic for m in store.mqtt_next(cid, first, 10)] == ["b"]  # a link sends "after the last id it sent"


@both_engines
def test_a_link_and_the_error_that_took_it_down_are_read_together(store: Store) -> None:
    """What GET /v1/connectors/<id> shows: a link "down" with the error that took it down, never with the
    error of a moment before (stop 27's CI: "down" with no error, the row and the state read apart)."""
    cid = _mqtt(store)
    store.mqtt_link(cid, "connected", "")
    stop = threading.Event()

    def flip() -> None:  # the link thread: down with its reason, connected again (which clears it)
        i = 0
        while not stop.is_set():
            i += 1
            store.mqtt_link(cid, "down", f"broker.customer.example: gone {i}")
            store.mqtt_link(cid, "connected", "")

    writer = threading.Thread(target=flip, daemon=True)
    writer.start()
    try:
        seen = {"down": 0, "connected": 0}
        deadline = time.monotonic() + 60
        while min(seen.values()) < 200 and time.monotonic() < deadline:
            got = store.mqtt_connector(cid)
            assert got is not None
            row, state = got
            assert state is not None
            assert (state.link == "down") == (row.last_error != ""), (state.link, row.last_error)
            seen[state.link] += 1
        assert min(seen.values()) >= 200, seen  # both states were read, many times
    finally:
        stop.set()
        writer.join(10)
    assert store.mqtt_connector(cid + 1) is None
