"""Reading fields of an untrusted configuration table (pure helpers of `_config`).

Does: fetch required and optional keys with their type checks (TOML integers for
integers, booleans for booleans, finite numbers for floats), reject unknown keys,
and render untrusted values short and printable for error messages. Does not: know
what a BACnet network is (`_config`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Final, TypeVar

from drivers.errors import ConfigError, show

NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")

T = TypeVar("T")
D = TypeVar("D")


def label(what: str, name: object, index: int | None = None) -> str:
    if isinstance(name, str) and NAME_RE.fullmatch(name):
        return f'{what} "{name}"'
    return f"{what} #{index}" if index is not None else what


def table_list(raw: Mapping[str, object], key: str, where: str, limit: int) -> list[object]:
    value = raw.get(key)
    if not isinstance(value, list):
        raise ConfigError(f"{where}: {key} must be a list of tables, not {kind_of(value)}")
    if not value:
        raise ConfigError(f"{where}: has no {key}")
    if len(value) > limit:
        raise ConfigError(f"{where}: {len(value)} {key}, more than {limit}")
    return value


def req(raw: Mapping[str, object], key: str, where: str, conv: Callable[[object, str], T]) -> T:
    if key not in raw:
        raise ConfigError(f'{where}: missing key "{key}"')
    return conv(raw[key], f"{where}: {key}")


def opt(
    raw: Mapping[str, object], key: str, where: str, conv: Callable[[object, str], T], default: D
) -> T | D:
    if key not in raw:
        return default
    return conv(raw[key], f"{where}: {key}")


def reject_unknown(raw: Mapping[str, object], known: frozenset[str], where: str) -> None:
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


def as_cov(value: object, what: str) -> str:
    if value not in ("auto", "off"):
        raise ConfigError(f"{what} must be one of auto | off, not {show(value)}")
    return str(value)


def kind_of(value: object) -> str:
    return f"{show(value)} ({type(value).__name__})"
