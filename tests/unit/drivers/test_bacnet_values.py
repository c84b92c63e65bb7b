"""BACnet values to and from Box values, kinds and unit symbols (pure)."""

from __future__ import annotations

import pytest
from bacpypes3.basetypes import BinaryPV, EngineeringUnits, StatusFlags
from bacpypes3.primitivedata import (
    Boolean,
    CharacterString,
    Double,
    Integer,
    Null,
    ObjectIdentifier,
    Real,
    Unsigned,
)

from drivers.bacnet._names import unit_symbol, units_name, value_kind
from drivers.bacnet._values import ValueTypeError, from_value, shortest_float32, to_value


def test_decoded_values() -> None:
    assert to_value(Real(20.8)) == 20.8  # not 20.799999237060547
    assert to_value(Double(20.8)) == 20.8
    assert to_value(BinaryPV("active")) is True and to_value(BinaryPV("inactive")) is False
    assert to_value(Boolean(True)) is True
    assert to_value(Unsigned(3)) == 3 and to_value(Integer(-4)) == -4
    assert to_value(EngineeringUnits("degrees-celsius")) == 62
    assert to_value(StatusFlags([0, 1, 0, 1])) == 0b1010
    assert to_value(CharacterString("AHU-2")) == "AHU-2"
    assert to_value(ObjectIdentifier("analog-input,1")) == "analog-input,1"
    assert to_value(Null(())) is None
    with pytest.raises(ValueTypeError):
        to_value([1, 2])


def test_shortest_float32() -> None:
    assert shortest_float32(0.10000000149011612) == 0.1
    assert shortest_float32(1e39) == 1e39  # not a float32: left alone


def test_values_to_write() -> None:
    assert from_value(21.5, "analog-value", "present-value") == Real(21.5)
    assert isinstance(from_value(21, "analog-value", "present-value"), Real)
    assert from_value(True, "binary-value", "present-value") == BinaryPV("active")
    assert from_value(3, "multi-state-value", "present-value") == Unsigned(3)
    assert from_value(3.0, "multi-state-value", "present-value") == Unsigned(3)
    assert from_value(-5, "integer-value", "present-value") == Integer(-5)
    assert isinstance(from_value(None, "analog-value", "present-value"), Null)
    assert from_value(True, "analog-input", "out-of-service") == Boolean(True)


@pytest.mark.parametrize(("value", "obj", "why"), [
    ("warm", "analog-value", "takes a number"),
    (True, "analog-value", "takes a number"),
    (1e39, "analog-value", "does not fit a REAL"),
    (1, "binary-value", "takes true or false"),
    (0, "multi-state-value", "start at 1"),
    (2.5, "multi-state-value", "takes an integer"),
    (-1, "positive-integer-value", "out of range"),
    (5, "characterstring-value", "takes a string"),
])
def test_values_refused(value: object, obj: str, why: str) -> None:
    with pytest.raises(ValueTypeError, match=why):
        from_value(value, obj, "present-value")  # type: ignore[arg-type]


def test_kinds_and_units() -> None:
    assert value_kind("analog-input", "present-value") == "float32"
    assert value_kind("large-analog-value", "present-value") == "float64"
    assert value_kind("binary-output", "present-value") == "bool"
    assert value_kind("multi-state-input", "present-value") == "uint32"
    assert value_kind("integer-value", "present-value") == "int32"
    assert value_kind("device", "object-name") == "string"
    assert value_kind("analog-value", "priority-array") is None
    assert value_kind("analog-input", "no-such-thing") is None
    assert unit_symbol(units_name(62)) == "degC" and unit_symbol("cubic-feet-per-minute") == "cubic-feet-per-minute"
    assert units_name(99999) == "units-99999"
