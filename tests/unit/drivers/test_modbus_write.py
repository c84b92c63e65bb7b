"""Writes: function code by table, size and device; refusals that name the point and the reason;
scale and offset inverted; read-modify-write of a bit."""

from __future__ import annotations

from typing import Any

import pytest

from drivers._types import Value
from drivers.errors import WriteError
from drivers.modbus import ModbusPoint, PointCodec, decode
from drivers.modbus._write import WritePlan, plan_write


def point(**kw: Any) -> ModbusPoint:
    fields: dict[str, Any] = {"name": "p", "address": 10, "writable": True}
    fields.update(kw)
    return ModbusPoint(**fields)


def plan(p: ModbusPoint, value: Value, *, multiple: bool = False, codec: PointCodec | None = None) -> WritePlan:
    codec = codec or PointCodec(p.type, bit=p.bit, length=p.length, scale=p.scale, offset=p.offset)
    return plan_write("dev.p", p, codec, value, write_multiple=multiple)


@pytest.mark.parametrize(
    ("p", "value", "multiple", "code", "values"),
    [
        (point(table="coil", type="bool"), True, False, 5, (1,)),
        (point(table="coil", type="bool"), False, True, 15, (0,)),
        (point(type="uint16"), 7, False, 6, (7,)),
        (point(type="int16"), -2, True, 16, (0xFFFE,)),
        (point(type="float32"), 1.5, False, 16, (0x3FC0, 0x0000)),
        (point(type="uint32"), 70000, False, 16, (0x0001, 0x1170)),
        (point(type="string", length=2), "AB", False, 16, (0x4142, 0x0000)),
    ],
    ids=["fc5", "fc15", "fc6", "fc16-forced", "fc16-float", "fc16-uint32", "fc16-string"],
)
def test_function_codes(p: ModbusPoint, value: Value, multiple: bool, code: int, values: tuple[int, ...]) -> None:
    got = plan(p, value, multiple=multiple)
    assert (got.function_code, got.address, got.values, got.mask) == (code, 10, values, None)
    assert got.merge(0xFFFF) == values


def test_scale_and_offset_are_inverted() -> None:
    p = point(type="int16", scale=0.1, offset=-5.0, writable=True, min=-10, max=30)
    got = plan(p, 21.5)
    assert got.values == (265,)
    assert decode(list(got.values), "int16", scale=0.1, offset=-5.0) == 21.5
    assert plan(point(type="uint16", scale=0.01), 2.35).values == (235,)


def test_a_bit_of_a_register_is_merged_into_the_register_read_before() -> None:
    got = plan(point(type="bool", bit=3), True)
    assert (got.function_code, got.mask, got.values) == (6, 0x0008, (0x0008,))
    assert got.merge(0x0101) == (0x0109,)
    cleared = plan(point(type="bool", bit=3), False)
    assert cleared.merge(0xFFFF) == (0xFFF7,)
    little = plan(point(type="bool", bit=0), True, codec=PointCodec("bool", bit=0, byte_order="little"))
    assert (little.mask, little.merge(0x0000)) == (0x0100, (0x0100,))
    assert plan(point(type="bool", bit=15), True, multiple=True).function_code == 16


REFUSED: list[tuple[str, ModbusPoint, Value, str]] = [
    ("not writable", point(writable=False), 1, 'point "dev.p" is not writable'),
    ("none", point(), None, 'point "dev.p": no value given'),
    ("coil int", point(table="coil", type="bool"), 1, 'point "dev.p" is a coil: 1 is not true or false'),
    ("bool str", point(type="bool", bit=0), "on", "is a bool: 'on' is not one"),
    ("string int", point(type="string", length=1), 5, "is a string: 5 is not one"),
    ("number bool", point(), True, "is a uint16: True is not a number"),
    ("number str", point(), "5", "is a uint16: '5' is not a number"),
    ("below min", point(type="float32", min=12.0, max=28.0), 11.9, 'point "dev.p": 11.9 is below its min 12.0'),
    ("above max", point(type="float32", min=12.0, max=28.0), 28.5, "28.5 is above its max 28.0"),
    ("type range", point(type="uint16"), 70000, "uint16 point: 70000 is out of range"),
    ("negative unsigned", point(type="uint16"), -1, "out of range"),
    ("not whole", point(type="uint16"), 3.7, "is a uint16 in whole numbers: 3.7 is not one of them"),
    ("not a step", point(type="int16", scale=0.1), 21.55, "is a int16 in steps of 0.1: 21.55 is not one of them"),
    ("nan int", point(type="int32"), float("nan"), "nan is not a finite number"),
    ("long string", point(type="string", length=1), "abc", "3 characters overflow 1 regs"),
]


@pytest.mark.parametrize(("p", "value", "message"), [(p, v, m) for _, p, v, m in REFUSED],
                         ids=[c for c, _, _, _ in REFUSED])
def test_refusals_name_the_point_and_the_reason(p: ModbusPoint, value: Value, message: str) -> None:
    with pytest.raises(WriteError) as info:
        plan(p, value)
    assert message in str(info.value)


def test_floats_may_be_any_float() -> None:
    assert plan(point(type="float64"), 0.1).function_code == 16
    assert plan(point(type="float32"), float("inf")).values == (0x7F80, 0x0000)
