"""The AT protocol's pure core and its answers' parsers, with literals (no port)."""

from __future__ import annotations

import pytest

from drivers.modem import RegState, SimState
from drivers.modem import _at_parse as parse
from drivers.modem._at import (
    MAX_LINE,
    NEED_DATA,
    AtCommandError,
    AtConnection,
    CmeError,
    Echo,
    Final,
    Garbage,
    Line,
    Urc,
)
from drivers.modem.errors import ModemProtocolError


def events(conn: AtConnection, data: bytes) -> list[object]:
    conn.receive_data(data)
    out: list[object] = []
    while (e := conn.next_event()) is not NEED_DATA:
        out.append(e)
    return out


def test_an_answer_with_echo_information_and_ok() -> None:
    c = AtConnection()
    assert c.send("AT+CSQ") == b"AT+CSQ\r"
    assert events(c, b"AT+CSQ\r\r\n+CSQ: 20,99\r\n\r\nOK\r\n") == [Echo("AT+CSQ"), Line("+CSQ: 20,99"), Final("OK")]
    assert not c.busy


def test_bytes_split_anywhere_give_the_same_events() -> None:
    data = b"\r\n+CEREG: 2,1,\"1A2B\",\"01A2B3C4\",7\r\n\r\nOK\r\n"
    c = AtConnection()
    c.send("AT+CEREG?")
    whole = events(c, data)
    for cut in range(1, len(data)):
        c2 = AtConnection()
        c2.send("AT+CEREG?")
        assert events(c2, data[:cut]) + events(c2, data[cut:]) == whole, cut


def test_cme_error_ends_the_command_with_its_code_or_text() -> None:
    c = AtConnection()
    c.send("AT+CPIN?")
    assert events(c, b"\r\n+CME ERROR: 10\r\n") == [CmeError(10, "10")]
    assert not c.busy
    c.send("AT+CGACT=1,1")
    assert events(c, b"\r\n+CME ERROR: SIM not inserted\r\n") == [CmeError(None, "SIM not inserted")]


def test_urcs_in_the_middle_of_an_answer_and_when_idle() -> None:
    c = AtConnection()
    assert events(c, b"\r\nRDY\r\n\r\n+CPIN: READY\r\n") == [Urc("RDY", ""), Urc("+CPIN", "READY")]
    c.send("AT+COPS?")
    got = events(c, b'\r\n+QIND: "csq",20,99\r\n+COPS: 0,0,"Op",7\r\n+CEREG: 5\r\nOK\r\n')
    assert got == [Urc("+QIND", '"csq",20,99'), Line('+COPS: 0,0,"Op",7'), Urc("+CEREG", "5"), Final("OK")]


def test_garbage_is_reported_never_raised_and_the_answer_still_comes() -> None:
    c = AtConnection()
    c.send("AT")
    got = events(c, b"\r\n\xff\xfe\x00junk\r\n\x1b[0;\r\nOK\r\n")
    assert [type(e) for e in got] == [Garbage, Garbage, Final]
    assert got[-1] == Final("OK")


def test_a_line_without_end_costs_garbage_not_memory() -> None:
    c = AtConnection()
    got = events(c, b"A" * (MAX_LINE * 3))
    assert got and all(isinstance(e, Garbage) for e in got)
    assert len(c._buffer) <= MAX_LINE
    c.send("AT")
    assert events(c, b"\r\nOK\r\n")[-1] == Final("OK")


def test_a_command_that_must_not_be_sent_is_refused() -> None:
    c = AtConnection()
    for bad in ("ATD\r\nATH", "AT" + "X" * 600, "rm -rf", "AT+CPIN=\"\u00e9\""):
        with pytest.raises(AtCommandError):
            c.send(bad)
    c.send("AT")
    with pytest.raises(AtCommandError, match="still in progress"):
        c.send("AT")
    c.abandon()
    assert events(c, b"\r\nOK\r\n") == [Urc("OK", "")]  # a late answer after a timeout is unsolicited


def test_parsers_of_27007_and_quectel_answers() -> None:
    assert parse.sim_state(["+CPIN: SIM PIN"]) == SimState.PIN_REQUIRED
    assert parse.pin_attempts(['+QPINC: "SC",1,10']) == (1, 10)
    assert parse.pin_attempts(["+CPINR: SIM PIN,2,3", "+CPINR: SIM PUK,9,10"]) == (2, 9)
    assert parse.registration(['+CEREG: 2,5,"1A2B","01A2B3C4",7']) == (RegState.ROAMING, "1A2B", "01A2B3C4", "lte")
    assert parse.registration(["+CEREG: 0,3"])[0] == RegState.DENIED
    assert parse.operator(['+COPS: 0,0,"Sim Telecom",7']) == ("Sim Telecom", "lte")
    assert parse.csq(["+CSQ: 20,99"]).rssi_dbm == -73 and parse.csq(["+CSQ: 99,99"]).rssi_dbm is None
    s = parse.cesq(["+CESQ: 99,99,255,255,22,56"])
    assert (s.rsrq_db, s.rsrp_dbm) == (-9.0, -85.0)
    q = parse.qcsq(['+QCSQ: "LTE",-60,-85,175,-9'])
    assert (q.tech, q.rssi_dbm, q.rsrp_dbm, q.sinr_db, q.rsrq_db) == ("lte", -60, -85, 15.0, -9)
    assert parse.qcsq(['+QCSQ: "NOSERVICE"']).rsrp_dbm is None
    assert parse.qnwinfo(['+QNWINFO: "FDD LTE","26201","LTE BAND 3",1300']) == ("LTE BAND 3", "26201")
    assert parse.bearer_active(["+CGACT: 1,1", "+CGACT: 2,0"], 1)
    assert parse.address(['+CGPADDR: 1,"100.64.1.2"']) == "100.64.1.2"
    assert parse.address(['+CGPADDR: 1,"0.0.0.0"']) == ""
    assert parse.imei(["867698041234567"]) == "867698041234567"
    assert parse.iccid(["+QCCID: 89490200001234567890F"]) == "89490200001234567890"
    assert parse.qgdcnt(["+QGDCNT: 500,1000"]).rx == 1000


def test_hostile_answers_are_bounded_or_refused() -> None:
    assert parse.qcsq(['+QCSQ: "LTE",99999,-85,9999,-9']).rssi_dbm is None  # out of range: not a number
    assert len(parse.operator(['+COPS: 0,0,"' + "A" * 500 + '",7'])[0]) == parse.MAX_TEXT
    with pytest.raises(ModemProtocolError):
        parse.registration(["+CEREG: x,y"])
    with pytest.raises(ModemProtocolError):
        parse.imei(["not an imei"])
    assert parse.address(['+CGPADDR: 1,"999.1.1.1"']) == ""


def test_cme_causes_the_daemon_acts_on() -> None:
    assert parse.cause_of(10, "10") == "sim_missing"
    assert parse.cause_of(16, "16") == "pin_wrong"
    assert parse.cause_of(133, "133") == "apn_rejected"
    assert parse.cause_of(None, "missing or unknown APN") == "apn_rejected"
    assert parse.cause_of(30, "30") == ""  # no network service: the network's, not a configuration fault
