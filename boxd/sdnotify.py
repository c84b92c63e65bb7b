"""systemd notifications (READY, WATCHDOG, STATUS, STOPPING) and journal logging.

Uses systemd-python when it is installed (on a Box); elsewhere, and when not run by
systemd (no NOTIFY_SOCKET), every call is a no-op. Logging goes to the journal when
stderr is connected to it (JOURNAL_STREAM), else to stderr.
"""

from __future__ import annotations

import logging
import os
import sys

try:
    from systemd import daemon as _sd_daemon
    from systemd import journal as _sd_journal
except ImportError:  # not on a Box: no systemd-python
    _sd_daemon = None
    _sd_journal = None


def notify(state: str) -> None:
    """Send `state` (e.g. "READY=1") to systemd if we were started by it."""
    if _sd_daemon is not None and os.environ.get("NOTIFY_SOCKET"):
        _sd_daemon.notify(state)


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


def setup_logging(level: int = logging.INFO) -> None:
    """Log to the journal under systemd, to stderr elsewhere."""
    root = logging.getLogger()
    root.setLevel(level)
    if _sd_journal is not None and os.environ.get("JOURNAL_STREAM"):
        root.addHandler(_sd_journal.JournalHandler(SYSLOG_IDENTIFIER="boxd"))
    else:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(h)
    for noisy in ("pymodbus",):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
