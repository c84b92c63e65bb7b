"""Untrusted values rendered short and safe for error messages and replies (pure).

Every message this package raises about a peer's data quotes it through `show` (never long,
never fails) and cuts text with `clip` (UTF-8 bytes, on a character boundary), so a hostile
payload cannot make an error message, a log line or a reply large.
"""

from __future__ import annotations


def show(value: object) -> str:
    """A short rendering of an untrusted value (never fails, never long)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"a {value.bit_length()}-bit integer"
    if isinstance(value, str | bytes | bytearray) and len(value) > 60:
        return repr(value[:37]) + "..."
    if isinstance(value, list | dict | tuple) or not isinstance(value, str | bytes | int | float | None):
        return kind(value)
    return clip(repr(value), 60)


def kind(value: object) -> str:
    """What an untrusted value is, in words ("a map", "text", "an integer"...)."""
    names = {dict: "a map", list: "a list", str: "text", bytes: "bytes", bool: "a boolean", int: "an integer",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` bytes of UTF-8, on a character boundary."""
    data = text.encode("utf-8", "replace")  # a lone surrogate becomes "?"
    if len(data) <= limit:
        return data.decode("utf-8")
    return data[: limit - 3].decode("utf-8", "ignore") + "..."
