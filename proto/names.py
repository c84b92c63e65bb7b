"""The names of the contract: ONE pattern each, always matched whole (pure).

- `BOX_ID`: a letter or digit, then letters, digits, ``._-``; 1..64 (the certificate's CN, the
  MQTT username, the topic's second level);
- `NAME`: ``[a-z0-9][a-z0-9_-]{0,31}``: a device's or a point's own name in a configuration;
- `POINT`: ``<device>.<point>``, two `NAME` (the point table, commands that name points);
- `COMMAND_ID`: letters, digits, ``._:-``; 1..64;
- `DEPLOYMENT`: as `BOX_ID` (``update``, ``update_abort``, ``ota`` events);
- `TARGET`: a plain file name: a letter or digit, then letters, digits, ``._+-``; 1..128 (a TUF
  target, a bundle);
- `VERSION`: a semantic version ``MAJOR.MINOR.PATCH[-PRE]``, no leading zeros, at most 64;
- `HARDWARE`: ``[a-z0-9][a-z0-9-]{0,31}``: what a release fits, what a Box is;
- `HOST`: a DNS name (labels of 1..63, at most 253 in all, a final dot allowed).

A `Name` offers `fullmatch` only: a prefix match (``re.match``) or a search can never be used
by mistake. Versions compare with `version_greater` (a release after its pre-releases).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final, TypeGuard


class Name:
    """A name pattern of the contract; `fullmatch` tells whether a value is such a name."""

    __slots__ = ("_re", "what")

    def __init__(self, what: str, pattern: str) -> None:
        self.what = what
        self._re = re.compile(pattern)

    @property
    def pattern(self) -> str:
        """The regular expression (matched whole), for messages and generated code."""
        return self._re.pattern

    def fullmatch(self, value: object) -> TypeGuard[str]:
        """Whether `value` is text that is such a name, whole."""
        return isinstance(value, str) and self._re.fullmatch(value) is not None

    def __repr__(self) -> str:
        return f"Name({self.what!r}, {self.pattern!r})"


MAX_BOX_ID: Final = 64
_PART: Final = r"[a-z0-9][a-z0-9_-]{0,31}"
_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_NUMBER: Final = r"(0|[1-9][0-9]*)"

BOX_ID: Final = Name("a Box id", rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_BOX_ID - 1}}}")
NAME: Final = Name("a device or point name", _PART)
POINT: Final = Name("a point name (<device>.<point>)", rf"{_PART}\.{_PART}")
COMMAND_ID: Final = Name("a command id", r"[A-Za-z0-9._:-]{1,64}")
DEPLOYMENT: Final = Name("a deployment id (letters, digits, ._-)", r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
TARGET: Final = Name("a plain file name", r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
VERSION: Final = Name("a version like 1.2.3",
                      rf"(?=.{{5,64}}\Z){_NUMBER}\.{_NUMBER}\.{_NUMBER}(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?")
HARDWARE: Final = Name("a hardware id", r"[a-z0-9][a-z0-9-]{0,31}")
HOST: Final = Name("a host name", rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*\.?")


def is_host(name: object) -> TypeGuard[str]:
    """Whether `name` is an IP address or a DNS name (what a person or the platform may give as a host)."""
    if not isinstance(name, str):
        return False
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return HOST.fullmatch(name)
    return True


VersionKey = tuple[tuple[int, int, int], tuple[tuple[int, int | str], ...] | None]


def version_key(version: str) -> VersionKey:
    """A version as a sortable key (semantic versioning's precedence).

    Raises:
        ValueError: `version` is not a `VERSION`.
    """
    m = VERSION._re.fullmatch(version) if isinstance(version, str) else None
    if m is None:
        raise ValueError(f"{version!r} is not a semantic version (MAJOR.MINOR.PATCH[-PRE])")
    core = (int(m[1]), int(m[2]), int(m[3]))
    if m[4] is None:
        return core, None
    return core, tuple((0, int(p)) if p.isdigit() else (1, p) for p in m[4].split("."))


def version_greater(a: str, b: str) -> bool:
    """Whether version `a` comes after `b` (a release after its pre-releases).

    Raises:
        ValueError: either is not a `VERSION`.
    """
    (ca, pa), (cb, pb) = version_key(a), version_key(b)
    if ca != cb:
        return ca > cb
    if pa is None or pb is None:
        return pa is None and pb is not None
    return pa > pb
