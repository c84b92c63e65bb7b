"""systemd notifications (READY, WATCHDOG, STATUS, STOPPING) and journal logging.

Both speak systemd's own socket protocols, which systemd documents as stable interfaces
(sd_notify(3): a datagram of ``KEY=value`` lines to ``$NOTIFY_SOCKET``; the journal's native
protocol, systemd.journal-fields(7) and "Native Journal Protocol": a datagram of fields to
``/run/systemd/journal/socket``), rather than systemd-python: its C module and what it imports
cost the resident daemon about 1 MB (docs/performance.md, "The whole service's memory"). When
not run by systemd (no NOTIFY_SOCKET), a notification is a no-op. Logging goes to the journal
when stderr is connected to it (JOURNAL_STREAM), else to stderr.

Journal records carry boxd's structured fields beside MESSAGE and PRIORITY, so that support
filters with ``journalctl BOX_POINT=ahu1.supply_setpoint`` rather than grep:

- ``BOX_ID``: the Box (its certificate's name), once the daemon has loaded its identity
  (`set_box_id`);
- ``BOX_COMPONENT``: what logged: the supervised task when the call says so
  (``extra={"component": "bus:plant"}``), else the logger's last name (``uplink``,
  ``commands``, ``modbus``, ...; ``daemon`` for boxd's own);
- ``BOX_POINT``: the point a record is about (``extra={"point": name}``), when there is one.

Only these, the message and the code location are sent: never a record's arguments or other
attributes, so nothing reaches the journal that the message did not say.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys
from pathlib import Path

JOURNAL_SOCKET = "/run/systemd/journal/socket"
MAX_MESSAGE = 48 * 1024  # a record is one datagram: a longer message is cut (journald takes ~200 KiB)


def _send(address: str, data: bytes) -> None:
    if address.startswith("@"):  # an abstract socket (sd_notify(3))
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.sendto(data, address)


def notify(state: str) -> None:
    """Send `state` (e.g. "READY=1") to systemd if we were started by it."""
    address = os.environ.get("NOTIFY_SOCKET")
    if address:
        try:
            _send(address, state.encode())
        except OSError:  # systemd went away (shutdown): nothing to tell
            pass


def journal_datagram(fields: dict[str, str | int]) -> bytes:
    """Fields in the journal's native protocol: ``KEY=value`` lines, or for a value with a newline
    ``KEY``, its length (64-bit little endian) and the bytes."""
    out = bytearray()
    for key, value in fields.items():
        data = str(value).encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


def watchdog_interval() -> float | None:
    """Half the watchdog timeout systemd gave us, in seconds, or None when there is none."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(0.5, int(usec) / 2_000_000)
    except ValueError:
        return None


_box_id = ""
_PRIORITY = ((logging.DEBUG, 7), (logging.INFO, 6), (logging.WARNING, 4), (logging.ERROR, 3))


def set_box_id(box_id: str) -> None:
    """Tag every journal record from now on with this Box's id (BOX_ID)."""
    global _box_id  # noqa: PLW0603 - one process, one Box: set once its identity is loaded
    _box_id = box_id


def journal_fields(record: logging.LogRecord) -> dict[str, str | int]:
    """The journal fields of a record besides its message (see the module's docstring)."""
    priority = next((p for level, p in _PRIORITY if record.levelno <= level), 2)
    component = getattr(record, "component", None)
    if not isinstance(component, str) or not component:
        component = "daemon" if record.name == "boxd" else record.name.rsplit(".", 1)[-1]
    fields: dict[str, str | int] = {
        "PRIORITY": str(priority), "SYSLOG_IDENTIFIER": "boxd", "LOGGER": record.name,
        "CODE_FILE": record.pathname, "CODE_LINE": record.lineno, "CODE_FUNC": record.funcName,
        "BOX_COMPONENT": component,
    }
    if _box_id:
        fields["BOX_ID"] = _box_id
    point = getattr(record, "point", None)
    if isinstance(point, str) and point:
        fields["BOX_POINT"] = point
    return fields


class JournalHandler(logging.Handler):
    """Logging records to the journal, with boxd's structured fields."""

    def __init__(self, address: str = JOURNAL_SOCKET) -> None:
        super().__init__()
        self.address = address

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)[:MAX_MESSAGE]
            _send(self.address, journal_datagram({"MESSAGE": message, **journal_fields(record)}))
        except Exception:  # noqa: BLE001 - logging must never take the daemon down
            self.handleError(record)


def setup_logging(level: int = logging.INFO) -> None:
    """Log to the journal under systemd, to stderr elsewhere."""
    root = logging.getLogger()
    root.setLevel(level)
    if os.environ.get("JOURNAL_STREAM") and Path(JOURNAL_SOCKET).exists():
        root.addHandler(JournalHandler())
    else:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(h)
    for noisy in ("pymodbus",):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
