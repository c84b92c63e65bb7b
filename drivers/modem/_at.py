"""The AT command protocol's pure core, in the shape of h11: bytes in, events out, no I/O.

`AtConnection.send(command)` returns the bytes to write; `receive_data(data)` takes what the port
gave; `next_event()` returns the next event or `NEED_DATA`:

- `Echo`: the modem repeating the command (echo on; harmless, skipped by callers);
- `Line`: an information line of the answer to the command in progress (``+CSQ: 20,99``, or a bare
  ``867698041234567`` for AT+CGSN);
- `Final`: the final result code ending the command (``OK``, ``ERROR``, ``NO CARRIER``, ...);
- `CmeError`: ``+CME ERROR: <n|text>`` (or ``+CMS ERROR``), which also ends the command;
- `Urc`: an unsolicited result code (``+CEREG: 5``, ``RDY``, ``+QIND: ...``), at any time, also in
  the middle of an answer;
- `Garbage`: bytes that are no line of the protocol (noise on the line, binary, a line over
  `MAX_LINE`): reported, never raised, so a noisy modem cannot stop the parser.

Telling a URC from an answer line (3GPP TS 27.007 §5.7): while a command is in progress, a line
with the command's own prefix (``+CEREG:`` for ``AT+CEREG?``), or a bare line, belongs to the
answer; a line with another ``+XXX:`` prefix or a known URC word is unsolicited. With no command in
progress every line is unsolicited. The core holds at most `MAX_BUFFER` bytes: a modem that sends
endless bytes without a line end costs `Garbage` events, not memory.

Does not: time anything out (the shell's job), open a port, or interpret answers (`_at_parse`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final as _Final

MAX_LINE = 1024  # the longest line taken as a line (27.007 answers are far shorter)
MAX_BUFFER = 4096
MAX_COMMAND = 512

FINAL_CODES = frozenset({"OK", "ERROR", "NO CARRIER", "NO DIALTONE", "BUSY", "NO ANSWER", "ABORTED"})
# unsolicited words without a "+XXX:" prefix (27.007 and Quectel's)
URC_WORDS = frozenset({"RING", "RDY", "POWERED DOWN", "NORMAL POWER DOWN", "UNDER_VOLTAGE POWER DOWN",
                       "OVER_VOLTAGE POWER DOWN", "+CPIN: NOT READY", "SMS DONE", "PB DONE", "+CFUN: 1"})
_COMMAND_RE = re.compile(rf"AT[\x20-\x7e]{{0,{MAX_COMMAND - 2}}}", re.IGNORECASE)
_PREFIX_RE = re.compile(r"AT([+$%^#][A-Z0-9]+).*", re.IGNORECASE | re.DOTALL)  # the command's name, then anything
_ERROR_RE = re.compile(r"\+CM[ES] ERROR:\s*(.*)")


@dataclass(frozen=True, slots=True)
class Echo:
    """The modem echoed the command."""

    text: str


@dataclass(frozen=True, slots=True)
class Line:
    """One information line of the answer to the command in progress."""

    text: str


@dataclass(frozen=True, slots=True)
class Final:
    """The final result code: the command is over."""

    code: str

    @property
    def ok(self) -> bool:
        """Whether the command succeeded."""
        return self.code == "OK"


@dataclass(frozen=True, slots=True)
class CmeError:
    """``+CME ERROR`` (or ``+CMS ERROR``): the command is over, with this error."""

    code: int | None  # numeric form (AT+CMEE=1), else None
    text: str  # the verbose text (AT+CMEE=2), or the number as text


@dataclass(frozen=True, slots=True)
class Urc:
    """An unsolicited result code: `name` is its prefix ("+CEREG") or its word ("RDY")."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class Garbage:
    """Bytes that are no line of the protocol."""

    data: bytes
    reason: str


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: _Final = _NeedData()
Event = Echo | Line | Final | CmeError | Urc | Garbage


class AtCommandError(ValueError):
    """A command that must not be sent (ours): not AT, too long, not printable, or a line end in it."""


def prefix_of(command: str) -> str:
    """The answer prefix of a command: ``AT+CEREG?`` -> ``+CEREG``; "" for basic commands (``ATE0``)."""
    m = _PREFIX_RE.fullmatch(command)
    return m.group(1).upper() if m else ""


class AtConnection:
    """The state of one AT link: the command in progress and the bytes not yet parsed."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._command = ""  # the command in progress ("" when none)
        self._prefix = ""
        self._events: list[Event] = []

    @property
    def busy(self) -> bool:
        """Whether a command is in progress (sent, its final result not seen)."""
        return bool(self._command)

    def send(self, command: str) -> bytes:
        """The bytes of `command` (terminated by CR, 27.007 S3); it is in progress from now on.

        Raises:
            AtCommandError: not an AT command, too long, or not printable ASCII.
        """
        if not _COMMAND_RE.fullmatch(command):
            raise AtCommandError(f"not an AT command that may be sent: {command[:40]!r}")
        if self._command:
            raise AtCommandError(f"{self._command.split('=')[0]} is still in progress")
        self._command, self._prefix = command, prefix_of(command)
        return command.encode("ascii") + b"\r"

    def abandon(self) -> None:
        """Forget the command in progress (it timed out): what comes next is unsolicited."""
        self._command = self._prefix = ""

    def receive_data(self, data: bytes) -> None:
        """Take bytes from the port (b"" is allowed and does nothing)."""
        self._buffer += data
        self._split()

    def next_event(self) -> Event | _NeedData:
        """The next event, or `NEED_DATA` when more bytes are needed."""
        if self._events:
            return self._events.pop(0)
        return NEED_DATA

    # -- internals ---------------------------------------------------------------------

    def _split(self) -> None:
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                if len(self._buffer) > MAX_LINE:
                    self._events.append(Garbage(bytes(self._buffer[:MAX_BUFFER]), "a line longer than "
                                                                                  f"{MAX_LINE} bytes"))
                    del self._buffer[:]
                return
            start, end = cut
            raw = bytes(self._buffer[:start])
            del self._buffer[:end]
            if raw.strip(b" \x00"):
                self._events.append(self._classify(raw))

    def _classify(self, raw: bytes) -> Event:
        if len(raw) > MAX_LINE:
            return Garbage(raw[:MAX_BUFFER], f"a line longer than {MAX_LINE} bytes")
        try:
            text = raw.decode("ascii").strip(" \x00")
        except UnicodeDecodeError:
            return Garbage(raw, "bytes that are not ASCII")
        if not text.isprintable():
            return Garbage(raw, "control characters in a line")
        if self._command and text.upper() == self._command.upper():
            return Echo(text)
        if text in FINAL_CODES or text.startswith("CONNECT"):
            if not self._command:
                return Urc(text, "")
            self.abandon()
            return Final(text)
        m = _ERROR_RE.fullmatch(text)
        if m:
            value = m.group(1).strip()
            event = CmeError(int(value) if value.isdigit() and len(value) <= 6 else None, value)
            if not self._command:
                return Urc(text.split(":", 1)[0], value)
            self.abandon()
            return event
        if text in URC_WORDS:
            return Urc(text, "")
        name, colon, value = text.partition(":")
        if not self._command:
            return Urc(name if colon else text, value.strip())
        if colon and name.startswith("+") and name.upper() != self._prefix and " " not in name:
            return Urc(name, value.strip())
        return Line(text)


def _line_end(buffer: bytearray) -> tuple[int, int] | None:
    """Where the first line ends in `buffer`: (end of its text, start of what follows), or None.
    CR, LF and CR LF all end a line (modems differ; S3 and S4 may be changed)."""
    for i, b in enumerate(buffer):
        if b in (13, 10):
            j = i + 1
            if b == 13 and j < len(buffer) and buffer[j] == 10:
                j += 1
            elif b == 13 and j == len(buffer):
                return None  # a CR at the end: its LF may follow in the next read
            return i, j
    return None
