"""RTU frames: CRC golden values (and pymodbus agreeing), lengths, t3.5, screening answers;
the simulator's slave side and fault decisions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.framer.rtu import FramerRTU

from drivers.modbus import crc16, encode, silent_interval_s
from drivers.modbus._rtu_frame import (
    Screen,
    char_time_s,
    crc_ok,
    request_length,
    response_length,
    screen_answer,
    with_crc,
)
from drivers.sim._building import RTU_UNITS, BuildingState
from drivers.sim._faults import Action, FaultInjection
from drivers.sim._rtu_slave import Request, answer, exception_frame, garble, parse_request

READ_7 = bytes.fromhex("070300000001846c")  # unit 7, read one holding register at 0 (seen on the wire)


def test_crc_golden_values() -> None:
    assert with_crc(bytes.fromhex("070300000001")) == READ_7
    assert crc16(b"123456789") == 0x4B37  # CRC-16/MODBUS check value
    assert crc_ok(READ_7) and not crc_ok(READ_7[:-1] + b"\x00") and not crc_ok(b"\x01")


@given(st.binary(min_size=1, max_size=64))
def test_crc_agrees_with_pymodbus(data: bytes) -> None:
    assert crc16(data) == int.from_bytes(FramerRTU.compute_CRC(data).to_bytes(2, "big"), "little")


def test_timing() -> None:
    assert char_time_s(9600) == pytest.approx(10 / 9600)
    assert char_time_s(9600, 8, "E", 1) == pytest.approx(11 / 9600)
    assert silent_interval_s(9600) == pytest.approx(3.5 * 10 / 9600)  # 3.65 ms
    assert silent_interval_s(19200, 8, "E", 2) == pytest.approx(3.5 * 12 / 19200)
    assert silent_interval_s(38400) == silent_interval_s(115200) == 0.00175


def test_lengths() -> None:
    assert request_length(READ_7) == 8 and request_length(b"\x07") is None
    assert request_length(bytes.fromhex("0710000a0002")) is None  # FC 16 needs its byte count
    assert request_length(bytes.fromhex("0710000a000204")) == 13
    assert request_length(bytes.fromhex("0711")) == 0
    assert response_length(bytes.fromhex("0703")) is None and response_length(bytes.fromhex("070304")) == 9
    assert response_length(bytes.fromhex("0783")) == 5 and response_length(bytes.fromhex("0706")) == 8
    assert response_length(bytes.fromhex("070300")) == 0 and response_length(bytes.fromhex("0799")) == 0


ANSWER_7 = with_crc(bytes.fromhex("0703021234"))
ANSWER_8 = with_crc(bytes.fromhex("0803020001"))


@pytest.mark.parametrize(
    ("data", "verdict", "frame", "skipped"),
    [
        (b"", Screen.WAIT, b"", 0),
        (ANSWER_7[:4], Screen.WAIT, b"", 0),
        (ANSWER_7, Screen.ANSWER, ANSWER_7, 0),
        (ANSWER_8 + ANSWER_7, Screen.ANSWER, ANSWER_7, 1),  # a late answer of unit 8 first
        (ANSWER_8, Screen.WAIT, b"", 1),
        (garble(ANSWER_7), Screen.GARBLED, b"", 0),
        (bytes.fromhex("ff00f080"), Screen.GARBLED, b"", 0),
        (exception_frame(7, 3, 2), Screen.ANSWER, exception_frame(7, 3, 2), 0),
    ],
    ids=["empty", "partial", "answer", "late-other-unit", "other-unit-only", "bad-crc", "noise", "exception"],
)
def test_screen_answer(data: bytes, verdict: Screen, frame: bytes, skipped: int) -> None:
    assert screen_answer(data, 7) == (verdict, frame, skipped)


# -- the simulator's slave side ------------------------------------------------------------


def state() -> BuildingState:
    return BuildingState(0, RTU_UNITS)


def test_reads_and_exceptions() -> None:
    s = state()
    no_inputs = parse_request(with_crc(bytes.fromhex("090400000004")))
    assert no_inputs == Request(9, 4, 0, 4)
    assert answer(no_inputs, s) == exception_frame(9, 4, 2)  # room2 has no input registers
    request = parse_request(with_crc(bytes.fromhex("090300000004")))
    assert request == Request(9, 3, 0, 4)
    reply = answer(request, s)
    assert reply[:3] == bytes([9, 3, 8]) and crc_ok(reply)
    assert answer(Request(9, 3, 0, 200), s) == exception_frame(9, 3, 3)  # more than 125
    assert answer(Request(9, 3, 500, 1), s) == exception_frame(9, 3, 2)  # outside the image
    bits = answer(Request(9, 2, 0, 1), s)
    assert bits[:3] == bytes([9, 2, 1]) and crc_ok(bits)


def test_writes_reach_only_writable_points() -> None:
    s = state()
    frame = with_crc(bytes([9, 6]) + (2).to_bytes(2, "big") + (235).to_bytes(2, "big"))
    request = parse_request(frame)
    assert request is not None and answer(request, s) == frame  # FC 6 echoes the request
    assert s.value("room2.setpoint") == 23.5
    assert answer(Request(9, 6, 0, 1, (5,)), s) == exception_frame(9, 6, 2)  # room_temp is not writable
    many = with_crc(bytes([9, 16, 0, 2, 0, 1, 2, 0, 200]))
    reply = answer(parse_request(many) or Request(0, 0, 0, 0), s)
    assert reply == with_crc(bytes([9, 16, 0, 2, 0, 1])) and s.value("room2.setpoint") == 20.0
    s.reset(9)
    assert s.value("room2.setpoint") == 21.0


def test_coil_writes_on_the_tcp_building() -> None:
    s = BuildingState()
    assert answer(Request(1, 5, 0, 1, (0x0000,)), s) == with_crc(bytes([1, 5, 0, 0, 0, 0]))
    assert s.value("ahu1.fan_running") is False
    assert answer(Request(1, 5, 0, 1, (0x1234,)), s) == exception_frame(1, 5, 3)
    assert answer(Request(1, 15, 0, 1, (1,)), s) == with_crc(bytes([1, 15, 0, 0, 0, 1]))
    assert s.value("ahu1.fan_running") is True
    assert answer(Request(1, 16, 8, 2, tuple(encode(19.5, "float32"))), s)[1] == 16
    assert s.value("ahu1.supply_setpoint") == 19.5
    parsed = parse_request(with_crc(bytes([1, 15, 0, 0, 0, 3, 1, 0b101])))
    assert parsed == Request(1, 15, 0, 3, (1, 0, 1))


def test_frames_that_are_not_requests_are_ignored() -> None:
    assert parse_request(garble(READ_7)) is None
    assert parse_request(READ_7 + b"\x00") is None
    assert parse_request(with_crc(bytes([7, 0x2B, 0x0E, 1, 0]))) is None


def test_fault_decisions() -> None:
    faults = FaultInjection()
    assert faults.decide(7, 3, 125).action is Action.ANSWER
    faults.set_read_limit(7, 10)
    assert (faults.decide(7, 3, 11).action, faults.decide(7, 3, 11).exception_code) == (Action.EXCEPTION, 3)
    assert faults.decide(7, 3, 10).action is Action.ANSWER
    assert faults.decide(7, 1, 100).action is Action.ANSWER  # coils are not registers
    faults.set_read_limit(7, 10, silent=True)
    assert faults.decide(7, 4, 11).action is Action.SILENT
    faults.set_garbled(7)
    faults.set_delay(7, 0.3)
    assert faults.decide(7, 3, 1) == faults.decide(7, 6, 1)
    assert (faults.decide(7, 3, 1).action, faults.decide(7, 3, 1).delay_s) == (Action.GARBLE, 0.3)
    faults.set_offline(7)
    assert faults.decide(7, 3, 1).action is Action.SILENT
    assert faults.decide(8, 3, 1).action is Action.ANSWER
    faults.clear_faults(7)
    assert faults.decide(7, 3, 1).action is Action.ANSWER
