"""The last lines of the daemon's log, in memory, for the `logs` command.

A bounded ring (`MAX_LINES`): the oldest lines go first. It holds what the log
handlers get, formatted; nothing secret is ever logged by boxd (no key, token or
certificate body), so nothing secret is in it.
"""

from __future__ import annotations

import logging
from collections import deque

MAX_LINES = 1000
MAX_LINE = 1024  # characters of one line (a traceback is cut)


class LogRing(logging.Handler):
    """A logging handler that keeps the last `limit` formatted lines."""

    def __init__(self, limit: int = MAX_LINES, level: int = logging.INFO) -> None:
        super().__init__(level)
        self._lines: deque[str] = deque(maxlen=limit)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - a handler never raises (logging's own rule)
            self.handleError(record)
            return
        self._lines.append(line if len(line) <= MAX_LINE else line[: MAX_LINE - 3] + "...")

    def tail(self, n: int) -> list[str]:
        """The last `n` lines, oldest first."""
        if n <= 0:
            return []
        lines = list(self._lines)
        return lines[-n:]
