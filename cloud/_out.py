"""How `boxcloud` shows things: tables that fit the terminal, local times with their zone, human
sizes and durations, progress while it waits (rich); and `--json` for scripts.

Tables and progress go through rich (a well-kept library; the cloud side only: `boxctl` and
`boxd` stay lean). Output for people goes to stdout, progress and logs to stderr, so that
`boxcloud box list | head` holds only the table. With `--json` a command prints one JSON
document (an object or a list of objects; field names are stable and listed in the README),
times as ISO 8601 in UTC ("2026-01-31T12:00:00Z", null when never).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

from rich import box as rich_box
from rich.console import Console
from rich.filesize import decimal
from rich.table import Table

_out = Console(highlight=False, soft_wrap=False)
if not _out.is_terminal:  # into a file or a pipe: no terminal to fit, so no folding (grep finds whole rows)
    _out = Console(highlight=False, soft_wrap=False, width=100_000)
_err = Console(stderr=True, highlight=False)


def when(ts: float | None) -> str:
    """A moment in local time with its zone, e.g. '2026-01-31 13:00:00 CET' ('never' for None)."""
    if ts is None:
        return "never"
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def iso(ts: float | None) -> str | None:
    """A moment for scripts: ISO 8601 in UTC, or None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def duration(seconds: float) -> str:
    """'45 s', '3 min 20 s', '2 h 5 min', '3 days 4 h'."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min" + (f" {s % 60} s" if s % 60 else "")
    if s < 86400:
        return f"{s // 3600} h" + (f" {s % 3600 // 60} min" if s % 3600 // 60 else "")
    days = s // 86400
    return f"{days} day{'s' if days > 1 else ''}" + (f" {s % 86400 // 3600} h" if s % 86400 // 3600 else "")


def ago(ts: float | None, now: float | None = None) -> str:
    """'12 s ago', '3 min ago' ('never' for None)."""
    if ts is None:
        return "never"
    return f"{duration((now or time.time()) - ts)} ago"


def size(n: int) -> str:
    """Bytes in human units ('1.2 MB')."""
    return str(decimal(n))


def table(columns: Sequence[str], rows: Sequence[Sequence[object]], *, title: str | None = None) -> None:
    """A table on stdout that fits the terminal (long cells fold rather than push columns off)."""
    t = Table(box=rich_box.SIMPLE_HEAD, show_edge=False, pad_edge=False, title=title, title_justify="left",
              header_style="bold")
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r))
    _out.print(t)


def line(text: str = "") -> None:
    """A line for people on stdout (no markup, no wrapping of its own)."""
    sys.stdout.write(text + "\n")


def emit_json(doc: object) -> None:
    """One JSON document on stdout."""
    sys.stdout.write(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def waiting(what: str) -> Iterator[None]:
    """A spinner with the elapsed time on stderr while something takes a while (only on a terminal)."""
    if not _err.is_terminal:
        yield
        return
    with _err.status(what, spinner="dots"):
        yield
