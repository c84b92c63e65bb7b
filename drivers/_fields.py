"""Reading fields of an untrusted configuration table: the helpers both drivers' parsers share (pure).

Does: fetch required and optional keys with their type checks (TOML integers for integers,
booleans for booleans, finite numbers for floats, one of a set of words), reject unknown keys,
check a value's range and a name (`proto.names.NAME`, matched whole), and say where a table is
(`label`) with untrusted values shown short and printable. Does not: know what a Modbus device
or a BACnet network is (`drivers.modbus._parse`, `drivers.bacnet._config`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TypeVar

from drivers.errors import ConfigError, show
from proto.names import NAME

T = TypeVar("T")
D = TypeVar("D")


def label(what: str, name: object, index: int | None = None) -> str:
    """How to say which table: by its name when it has a valid one, else by its place."""
    if NAME.fullmatch(name):
        return f'{what} "{name}"'
    return f"{what} #{index}" if index is not None else what


def table_list(raw: Mapping[str, object], key: str, where: str, limit: int) -> list[object]:
    """A non-empty list of at most `limit` tables under `key`."""
    value = raw.get(key)
    if not isinstance(value, list):
        raise ConfigError(f"{where}: {key} must be a list of tables, not {kind_of(value)}")
    if not value:
        raise ConfigError(f"{where}: has no {key}")
    if len(value) > limit:
        raise ConfigError(f"{where}: {len(value)} {key}, more than {limit}")
    return value


def req(raw: Mapping[str, object], key: str, where: str, conv: Callable[[object, str], T]) -> T:
    """A required key, converted (and checked) by `conv`."""
    if key not in raw:
        raise ConfigError(f'{where}: missing key "{key}"')
    return conv(raw[key], f"{where}: {key}")


def opt(
    raw: Mapping[str, object], key: str, where: str, conv: Callable[[object, str], T], default: D
) -> T | D:
    """An optional key, converted by `conv`, or `default`."""
    if key not in raw:
        return default
    return conv(raw[key], f"{where}: {key}")


def reject_unknown(raw: Mapping[str, object], known: frozenset[str], where: str) -> None:
    """A typo must not silently do nothing: unknown keys are errors."""
    unknown = [k for k in raw if k not in known]
    if unknown:
        shown = ", ".join(show(k) for k in unknown[:5])
        raise ConfigError(f"{where}: unknown key(s) {shown} (known: {', '.join(sorted(known))})")


def as_str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string, not {kind_of(value)}")
    return value


def as_bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{what} must be true or false, not {kind_of(value)}")
    return value


def as_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{what} must be an integer, not {kind_of(value)}")
    return value


def as_float(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{what} must be a number, not {kind_of(value)}")
    if isinstance(value, int) and value.bit_length() > 1000:  # float() would overflow
        raise ConfigError(f"{what} must be a finite number, not {kind_of(value)}")
    if not math.isfinite(value):
        raise ConfigError(f"{what} must be finite, not {value!r}")
    return float(value)


def choice(value: object, what: str, choices: tuple[str, ...]) -> str:
    """One of `choices`."""
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{what} must be one of {' | '.join(choices)}, not {show(value)}")
    return value


def check_range(where: str, key: str, value: float, lo: float, hi: float) -> None:
    """`value` within `lo`..`hi`."""
    if not lo <= value <= hi:
        raise ConfigError(f"{where}: {key} {show(value)} is out of range {lo}..{hi}")


def check_name(name: object, what: str) -> None:
    """A device's or a point's own name (`proto.names.NAME`)."""
    if not NAME.fullmatch(name):
        raise ConfigError(f"{what} name {show(name)} must match {NAME.pattern}")


def kind_of(value: object) -> str:
    """An untrusted value and its type, short."""
    return f"{show(value)} ({type(value).__name__})"
