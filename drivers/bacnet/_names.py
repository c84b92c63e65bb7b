"""BACnet names: object types, properties, the value kind of a property, unit symbols (pure).

Does: answer questions about the standard BACnet data model from bacpypes3's tables
(vendor 0, ASHRAE): is "analog-input" an object type, which data type has its
"present-value", which units symbol the Box reports for "degrees-celsius". Does not:
talk to devices, or know vendor-proprietary object types and properties (a point
must name a standard object type and property).

Kinds are the `PointInfo.kind` strings of the Box: REAL -> "float32", Double ->
"float64", Boolean and BinaryPV -> "bool", Unsigned, Enumerated and BitString ->
"uint32", Integer -> "int32", CharacterString, OctetString, Date, Time and
ObjectIdentifier -> "string". Constructed data (lists, arrays, sequences) has no
kind: such a property cannot be a point.
"""

from __future__ import annotations

from functools import cache
from typing import Final

from bacpypes3.basetypes import BinaryPV, EngineeringUnits, PropertyIdentifier
from bacpypes3.primitivedata import (
    Atomic,
    BitString,
    Boolean,
    CharacterString,
    Date,
    Double,
    Enumerated,
    Integer,
    ObjectIdentifier,
    ObjectType,
    OctetString,
    Real,
    Time,
    Unsigned,
)
from bacpypes3.vendor import get_vendor_info

NUMERIC_KINDS: Final = frozenset({"float32", "float64", "uint32", "int32"})

# Object types whose present-value a device may report by COV (Table 13-1 of the standard).
COV_OBJECT_TYPES: Final = frozenset({
    "analog-input", "analog-output", "analog-value", "large-analog-value",
    "binary-input", "binary-output", "binary-value",
    "multi-state-input", "multi-state-output", "multi-state-value",
    "integer-value", "positive-integer-value", "life-safety-point", "life-safety-zone",
    "loop", "lighting-output", "binary-lighting-output", "access-door",
    "characterstring-value",
})

# Order matters: Double is a subclass of Real, BinaryPV of Enumerated.
_KINDS: Final[tuple[tuple[type, str], ...]] = (
    (Double, "float64"),
    (Real, "float32"),
    (Boolean, "bool"),
    (BinaryPV, "bool"),
    (Unsigned, "uint32"),
    (Integer, "int32"),
    (Enumerated, "uint32"),
    (BitString, "uint32"),
    (CharacterString, "string"),
    (OctetString, "string"),
    (Date, "string"),
    (Time, "string"),
    (ObjectIdentifier, "string"),
)

_UNIT_SYMBOLS: Final[dict[str, str]] = {
    "degrees-celsius": "degC", "degrees-fahrenheit": "degF", "degrees-kelvin": "K",
    "delta-degrees-kelvin": "K", "percent": "%", "percent-relative-humidity": "%RH",
    "parts-per-million": "ppm", "parts-per-billion": "ppb", "pascals": "Pa",
    "kilopascals": "kPa", "bars": "bar", "millibars": "mbar", "volts": "V",
    "millivolts": "mV", "kilovolts": "kV", "amperes": "A", "milliamperes": "mA",
    "watts": "W", "kilowatts": "kW", "megawatts": "MW", "watt-hours": "Wh",
    "kilowatt-hours": "kWh", "megawatt-hours": "MWh", "volt-amperes": "VA",
    "kilovolt-amperes": "kVA", "hertz": "Hz", "seconds": "s", "minutes": "min",
    "hours": "h", "days": "d", "cubic-meters-per-hour": "m3/h",
    "cubic-meters-per-second": "m3/s", "liters-per-second": "l/s",
    "liters-per-minute": "l/min", "liters-per-hour": "l/h", "cubic-meters": "m3",
    "liters": "l", "meters-per-second": "m/s", "luxes": "lx",
    "revolutions-per-minute": "rpm", "kilograms": "kg", "meters": "m",
    "millimeters": "mm", "no-units": "",
}


@cache
def object_type_number(name: str) -> int | None:
    """The number of a standard object type ("analog-input" -> 0), None if unknown."""
    try:
        number = int(ObjectType(name))
    except ValueError:
        return None
    return number if get_vendor_info(0).get_object_class(ObjectType(number)) else None


@cache
def property_number(name: str) -> int | None:
    """The number of a standard property ("present-value" -> 85), None if unknown."""
    try:
        return int(PropertyIdentifier(name))
    except ValueError:
        return None


@cache
def property_type(object_type: str, prop: str) -> type | None:
    """The bacpypes3 class of a property's value, None if the object type lacks it."""
    if object_type_number(object_type) is None or property_number(prop) is None:
        return None
    cls = get_vendor_info(0).get_object_class(ObjectType(object_type))
    found = cls.get_property_type(PropertyIdentifier(prop)) if cls else None
    return found if isinstance(found, type) else None


@cache
def value_kind(object_type: str, prop: str) -> str | None:
    """The Box kind of a property's value; None if the property is unknown or not atomic."""
    cls = property_type(object_type, prop)
    if cls is None or not issubclass(cls, Atomic):
        return None
    for base, kind in _KINDS:
        if issubclass(cls, base):
            return kind
    return None


def unit_symbol(units: str) -> str:
    """The symbol the Box reports for a BACnet engineering unit ("degrees-celsius" -> "degC").

    Units without a short symbol keep their BACnet name, e.g. "cubic-feet-per-minute".
    """
    return _UNIT_SYMBOLS.get(units, units)


def units_name(number: int) -> str:
    """The BACnet name of an engineering-units enumeration value (62 -> "degrees-celsius")."""
    try:
        name = str(EngineeringUnits(number))
    except ValueError:
        name = ""
    return name if name and not name.isdigit() else f"units-{number}"
