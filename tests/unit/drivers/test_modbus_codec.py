"""The value codec: golden byte/word-order examples, scaling, errors, and round trips."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.client import ModbusTcpClient

from drivers.errors import DecodeError, EncodeError
from drivers.modbus import PointCodec, RegisterWindow, decode, encode, register_count
from drivers.modbus._codec import DataType, Order

ORDERS: list[Order] = ["big", "little"]
INT_RANGES: dict[DataType, tuple[int, int]] = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}

# (type, byte order, word order, value, registers): pinned, never to be "fixed" to match a library.
GOLDEN: list[tuple[DataType, Order, Order, object, list[int]]] = [
    ("float32", "big", "big", 1.5, [0x3FC0, 0x0000]),
    ("float32", "big", "little", 1.5, [0x0000, 0x3FC0]),
    ("float32", "little", "big", 1.5, [0xC03F, 0x0000]),
    ("float32", "little", "little", 1.5, [0x0000, 0xC03F]),
    ("float32", "big", "big", -21.3, [0xC1AA, 0x6666]),
    ("int32", "big", "big", 0x12345678, [0x1234, 0x5678]),
    ("int32", "big", "little", 0x12345678, [0x5678, 0x1234]),
    ("int32", "little", "big", 0x12345678, [0x3412, 0x7856]),
    ("int32", "little", "little", 0x12345678, [0x7856, 0x3412]),
    ("int32", "big", "big", -2, [0xFFFF, 0xFFFE]),
    ("uint32", "big", "big", 4_000_000_000, [0xEE6B, 0x2800]),
    ("uint32", "big", "little", 4_000_000_000, [0x2800, 0xEE6B]),
    ("int16", "big", "big", -2, [0xFFFE]),
    ("int16", "little", "big", -2, [0xFEFF]),
    ("int16", "little", "little", 0x0102, [0x0201]),
    ("uint16", "big", "little", 0xABCD, [0xABCD]),
    ("uint16", "little", "big", 0xABCD, [0xCDAB]),
    ("uint64", "big", "big", 0x0102030405060708, [0x0102, 0x0304, 0x0506, 0x0708]),
    ("uint64", "big", "little", 0x0102030405060708, [0x0708, 0x0506, 0x0304, 0x0102]),
    ("uint64", "little", "big", 0x0102030405060708, [0x0201, 0x0403, 0x0605, 0x0807]),
    ("uint64", "little", "little", 0x0102030405060708, [0x0807, 0x0605, 0x0403, 0x0201]),
    ("int64", "big", "big", -1, [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF]),
    ("float64", "big", "big", 1.0, [0x3FF0, 0x0000, 0x0000, 0x0000]),
    ("float64", "big", "little", 1.0, [0x0000, 0x0000, 0x0000, 0x3FF0]),
    ("float64", "little", "big", 1.0, [0xF03F, 0x0000, 0x0000, 0x0000]),
    ("float64", "little", "little", 1.0, [0x0000, 0x0000, 0x0000, 0xF03F]),
]


@pytest.mark.parametrize(("kind", "byte_order", "word_order", "value", "registers"), GOLDEN)
def test_golden_decode_and_encode(
    kind: DataType, byte_order: Order, word_order: Order, value: object, registers: list[int]
) -> None:
    assert decode(registers, kind, byte_order=byte_order, word_order=word_order) == value
    assert encode(value, kind, byte_order=byte_order, word_order=word_order) == registers


def test_golden_strings() -> None:
    assert decode([0x4142, 0x4300], "string", length=2) == "ABC"
    assert decode([0x4241, 0x0043], "string", length=2, byte_order="little") == "ABC"
    # word order does not apply to strings
    assert decode([0x4142, 0x4300], "string", length=2, word_order="little") == "ABC"
    assert decode([0x2041, 0x4220, 0x0000], "string", length=3) == "AB"
    assert encode("ABC", "string", length=3) == [0x4142, 0x4300, 0x0000]
    assert encode("ABC", "string", length=2, byte_order="little") == [0x4241, 0x0043]


def test_golden_bits_of_a_register() -> None:
    assert decode([0x0008], "bool", bit=3) is True
    assert decode([0x0008], "bool", bit=2) is False
    assert decode([0x8000], "bool", bit=15) is True
    assert decode([0x0800], "bool", bit=3, byte_order="little") is True
    assert encode(True, "bool", bit=3) == [0x0008]
    assert encode(True, "bool", bit=3, byte_order="little") == [0x0800]
    assert encode(False, "bool", bit=3) == [0]


def test_scaling() -> None:
    assert decode([215], "int16", scale=0.1) == 21.5
    assert decode([3], "uint16", scale=0.1) == 0.3  # divides by 10: not 0.30000000000000004
    assert decode([0xFFFF], "int16", scale=0.1) == -0.1
    assert decode([1000], "uint16", scale=0.1, offset=-40) == 60.0
    assert decode([7], "uint16", scale=2, offset=1) == 15.0
    assert encode(21.5, "int16", scale=0.1) == [215]
    assert encode(60.0, "uint16", scale=0.1, offset=-40) == [1000]


def test_ints_stay_ints_unscaled_and_become_floats_scaled() -> None:
    unscaled = decode([5], "uint16")
    assert unscaled == 5 and type(unscaled) is int
    scaled = decode([5], "uint16", scale=2)
    assert scaled == 10.0 and type(scaled) is float
    assert type(decode([0, 5], "uint32")) is int


def test_float32_reads_as_its_shortest_decimal() -> None:
    assert decode([0x41AA, 0x6666], "float32") == 21.3
    assert decode([0x3DCC, 0xCCCD], "float32") == 0.1
    assert math.isnan(decode([0x7FC0, 0x0000], "float32"))  # type: ignore[arg-type]
    assert decode([0x7F80, 0x0000], "float32") == math.inf
    negative_zero = decode([0x8000, 0x0000], "float32")
    assert negative_zero == 0.0 and math.copysign(1, negative_zero) == -1


def test_register_count() -> None:
    assert [register_count(k) for k in ("bool", "int16", "uint32", "float32", "int64")] == [
        1, 1, 2, 2, 4,
    ]
    assert register_count("string", 7) == 7
    with pytest.raises(ValueError, match="length"):
        register_count("string")
    with pytest.raises(ValueError, match="unknown type"):
        register_count("int8")


@pytest.mark.parametrize(
    ("registers", "kind", "length", "match"),
    [
        ([0x3FC0], "float32", None, "needs 2 register"),
        ([0x3FC0, 0, 0], "float32", None, "needs 2 register"),
        ([0xC3A9], "string", 1, "not ASCII"),
        ([70000], "uint16", None, "16-bit"),
        ([-1, 0], "int32", None, "16-bit"),
    ],
)
def test_decode_errors(registers: list[int], kind: DataType, length: int | None, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        decode(registers, kind, length=length)


@pytest.mark.parametrize(
    ("value", "kind", "length", "match"),
    [
        (70000, "uint16", None, "out of range"),
        (-1, "uint32", None, "out of range"),
        (2**63, "int64", None, "out of range"),
        (1e39, "float32", None, "out of range"),
        ("12", "int16", None, "not a number"),
        (True, "int16", None, "not a number"),
        (math.nan, "int32", None, "not finite"),
        (1, "bool", None, "not a bool"),
        ("ABCDE", "string", 2, "overflow"),
        ("é", "string", 2, "not ASCII"),
        (12, "string", 2, "not a str"),
    ],
)
def test_encode_errors(value: object, kind: DataType, length: int | None, match: str) -> None:
    with pytest.raises(EncodeError, match=match):
        encode(value, kind, length=length)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [{"byte_order": "middle"}, {"bit": 16}, {"scale": 0}, {"scale": math.inf}, {"offset": math.nan}],
)
def test_invalid_layouts(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        PointCodec("uint16", **kwargs)  # type: ignore[arg-type]


def test_window_decodes_at_offsets_and_reports_short_windows() -> None:
    window = RegisterWindow([0x0001, 0x3FC0, 0x0000, 0x4142])
    assert PointCodec("uint16").decode_window(window, 0) == 1
    assert PointCodec("float32").decode_window(window, 1) == 1.5
    assert PointCodec("string", length=1).decode_window(window, 3) == "AB"
    with pytest.raises(DecodeError):
        PointCodec("float32").decode_window(window, 3)
    with pytest.raises(DecodeError):
        PointCodec("string", length=2).decode_window(window, 3)
    with pytest.raises(DecodeError):
        PointCodec("bool", bit=0).decode_window(window, 4)
    assert PointCodec("bool").decode_bit([False, True], 1) is True
    with pytest.raises(DecodeError):
        PointCodec("bool").decode_bit([False, True], 2)


# -- properties -------------------------------------------------------------------------

orders = st.sampled_from(ORDERS)
register = st.integers(0, 0xFFFF)


@given(kind=st.sampled_from(list(INT_RANGES)), byte_order=orders, word_order=orders, data=st.data())
def test_int_registers_round_trip(
    kind: DataType, byte_order: Order, word_order: Order, data: st.DataObject
) -> None:
    codec = PointCodec(kind, byte_order=byte_order, word_order=word_order)
    registers = data.draw(st.lists(register, min_size=codec.size, max_size=codec.size))
    value = codec.decode_registers(registers)
    lo, hi = INT_RANGES[kind]
    assert isinstance(value, int) and lo <= value <= hi
    assert codec.encode(value) == registers


@given(kind=st.sampled_from(list(INT_RANGES)), byte_order=orders, word_order=orders, data=st.data())
def test_int_values_round_trip(
    kind: DataType, byte_order: Order, word_order: Order, data: st.DataObject
) -> None:
    codec = PointCodec(kind, byte_order=byte_order, word_order=word_order)
    value = data.draw(st.integers(*INT_RANGES[kind]))
    registers = codec.encode(value)
    assert len(registers) == codec.size and all(0 <= r <= 0xFFFF for r in registers)
    assert codec.decode_registers(registers) == value


@given(byte_order=orders, word_order=orders, value=st.floats(allow_nan=False))
def test_float64_values_round_trip(byte_order: Order, word_order: Order, value: float) -> None:
    codec = PointCodec("float64", byte_order=byte_order, word_order=word_order)
    decoded = codec.decode_registers(codec.encode(value))
    assert decoded == value and math.copysign(1, decoded) == math.copysign(1, value)


@given(byte_order=orders, word_order=orders, value=st.floats(width=32, allow_nan=False))
def test_float32_values_round_trip_to_the_same_float32(
    byte_order: Order, word_order: Order, value: float
) -> None:
    codec = PointCodec("float32", byte_order=byte_order, word_order=word_order)
    registers = codec.encode(value)
    decoded = codec.decode_registers(registers)
    assert isinstance(decoded, float)
    assert struct.pack(">f", decoded) == struct.pack(">f", value)
    assert codec.encode(decoded) == registers


@given(
    byte_order=orders,
    length=st.integers(1, 8),
    text=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=16),
)
def test_strings_round_trip(byte_order: Order, length: int, text: str) -> None:
    text = text[: length * 2]
    codec = PointCodec("string", byte_order=byte_order, length=length)
    assert codec.decode_registers(codec.encode(text)) == text


@given(bit=st.integers(0, 15), byte_order=orders, registers=st.lists(register, min_size=1, max_size=1))
def test_bits_read_the_register_value(bit: int, byte_order: Order, registers: list[int]) -> None:
    value = registers[0] if byte_order == "big" else ((registers[0] & 0xFF) << 8) | (registers[0] >> 8)
    assert decode(registers, "bool", bit=bit, byte_order=byte_order) == bool(value >> bit & 1)


@given(k=st.integers(-(2**15), 2**15 - 1))
def test_decimal_scales_round_trip(k: int) -> None:
    codec = PointCodec("int16", scale=0.1)
    value = codec.decode_registers(codec.encode(k / 10))
    assert value == k / 10


# -- pymodbus as an independent oracle (byte order big: pymodbus has no byte swap) ------

_PYMODBUS_TYPE = {
    "int16": ModbusTcpClient.DATATYPE.INT16, "uint16": ModbusTcpClient.DATATYPE.UINT16,
    "int32": ModbusTcpClient.DATATYPE.INT32, "uint32": ModbusTcpClient.DATATYPE.UINT32,
    "int64": ModbusTcpClient.DATATYPE.INT64, "uint64": ModbusTcpClient.DATATYPE.UINT64,
    "float64": ModbusTcpClient.DATATYPE.FLOAT64,
}


@given(kind=st.sampled_from(list(_PYMODBUS_TYPE)), word_order=orders, data=st.data())
def test_agrees_with_pymodbus(kind: DataType, word_order: Order, data: st.DataObject) -> None:
    size = register_count(kind)
    registers = data.draw(st.lists(register, min_size=size, max_size=size))
    ours = decode(registers, kind, word_order=word_order)
    theirs = ModbusTcpClient.convert_from_registers(registers, _PYMODBUS_TYPE[kind], word_order)
    assert ours == theirs or (isinstance(ours, float) and math.isnan(ours))
