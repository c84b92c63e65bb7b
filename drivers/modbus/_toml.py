"""Modbus configuration values back to TOML text (pure), for simulators and scan exports.

Does: write a `ModbusPoint` as an array-of-tables entry under any header
(``modbus_tcp.points``, ``modbus_rtu.devices.points``), leaving out keys at their
defaults, so that `_parse` reads back the same value. Does not: write whole files or
validate (the text is only as valid as the values given).
"""

from __future__ import annotations

import json
from typing import Final

from drivers.modbus._config import ModbusPoint

_OPTIONAL: Final = (
    "unit", "scale", "offset", "byte_order", "word_order", "bit", "length", "poll_interval_s",
    "writable", "min", "max", "urgent",
)
_DEFAULTS: Final = ModbusPoint(name="x", address=0)


def toml_value(value: object) -> str:
    """One TOML value: a string, a boolean, an integer or a float."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    raise TypeError(f"no TOML for {value!r}")


def point_lines(point: ModbusPoint, header: str) -> list[str]:
    """The lines of one ``[[header]]`` table for `point`."""
    lines = [
        f"[[{header}]]",
        f"name = {toml_value(point.name)}",
        f"table = {toml_value(point.table)}",
        f"address = {point.address}",
        f"type = {toml_value(point.type)}",
    ]
    for key in _OPTIONAL:
        value = getattr(point, key)
        if value != getattr(_DEFAULTS, key):
            lines.append(f"{key} = {toml_value(value)}")
    return lines
