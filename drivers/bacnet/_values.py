"""BACnet values to and from the Box's values (pure; bacpypes3 data types only).

Does: turn a decoded bacpypes3 value into a `Value` of the point's kind (REAL to the
shortest float that reads back as the same float32, BinaryPV and Boolean to bool,
enumerations and unsigned to int, strings to str, bit strings to an int with bit 0
first), and a value to write into the bacpypes3 value of the property's type, with
the type and range checks a write needs. Does not: decode bytes (bacpypes3 does,
in `_stack`) or check configured write bounds (`_source`).
"""

from __future__ import annotations

import struct

from bacpypes3.basetypes import BinaryPV
from bacpypes3.primitivedata import (
    BitString,
    Boolean,
    CharacterString,
    Date,
    Double,
    Enumerated,
    Integer,
    Null,
    ObjectIdentifier,
    OctetString,
    Real,
    Time,
    Unsigned,
)

from drivers._types import Value
from drivers.bacnet._names import property_type


class ValueTypeError(ValueError):
    """A value does not fit the property's type (message says why)."""


def shortest_float32(value: float) -> float:
    """The shortest decimal float that rounds to the same float32 (20.799999237 -> 20.8)."""
    try:
        target = struct.pack("<f", value)
    except OverflowError:
        return value
    for digits in range(6, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.pack("<f", candidate) == target:
            return candidate
    return value


def to_value(decoded: object) -> Value:
    """A decoded bacpypes3 value as a Box value.

    Raises:
        ValueTypeError: a value of a type the Box does not carry (a list, a record).
    """
    result: Value
    if decoded is None or isinstance(decoded, Null):
        result = None
    elif isinstance(decoded, BinaryPV):
        result = decoded == BinaryPV.active
    elif isinstance(decoded, Boolean):
        result = bool(decoded)
    elif isinstance(decoded, Double):
        result = float(decoded)
    elif isinstance(decoded, Real):
        result = shortest_float32(float(decoded))
    elif isinstance(decoded, Enumerated | Unsigned | Integer):
        result = int(decoded)
    elif isinstance(decoded, BitString):
        result = sum(1 << i for i, bit in enumerate(decoded) if bit)
    elif isinstance(decoded, CharacterString | Date | Time | ObjectIdentifier):
        result = str(decoded)
    elif isinstance(decoded, OctetString):
        result = bytes(decoded).hex()
    else:
        raise ValueTypeError(f"a {type(decoded).__name__}, not a single value")
    return result


def from_value(value: Value, object_type: str, prop: str) -> object:
    """The bacpypes3 value to write into a property; `None` is NULL (relinquish).

    Raises:
        ValueTypeError: the value does not fit the property's type or range.
    """
    if value is None:
        return Null(())
    cls = property_type(object_type, prop)
    if cls is None:
        raise ValueTypeError(f"{object_type} has no property {prop}")
    if issubclass(cls, BinaryPV) or issubclass(cls, Boolean):
        if not isinstance(value, bool):
            raise ValueTypeError(f"{prop} of {object_type} takes true or false, not {value!r}")
        return BinaryPV("active" if value else "inactive") if issubclass(cls, BinaryPV) else Boolean(value)
    if issubclass(cls, Real):  # Double too
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueTypeError(f"{prop} of {object_type} takes a number, not {value!r}")
        if not issubclass(cls, Double) and abs(value) > 3.4028234e38:
            raise ValueTypeError(f"{value!r} does not fit a REAL")
        return cls(float(value))
    if issubclass(cls, Unsigned | Integer | Enumerated):
        return _integer(cls, value, object_type, prop)
    if issubclass(cls, CharacterString):
        if not isinstance(value, str):
            raise ValueTypeError(f"{prop} of {object_type} takes a string, not {value!r}")
        return CharacterString(value)
    raise ValueTypeError(f"{prop} of {object_type} ({cls.__name__}) cannot be written by the Box")


def _integer(cls: type, value: Value, object_type: str, prop: str) -> object:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueTypeError(f"{prop} of {object_type} takes an integer, not {value!r}")
    lo, hi = (-(1 << 31), (1 << 31) - 1) if issubclass(cls, Integer) else (0, (1 << 32) - 1)
    if not lo <= value <= hi:
        raise ValueTypeError(f"{value} is out of range {lo}..{hi} for {prop} of {object_type}")
    if object_type.startswith("multi-state") and prop in ("present-value", "relinquish-default") and value < 1:
        raise ValueTypeError(f"multi-state values start at 1, not {value}")
    return cls(value)
