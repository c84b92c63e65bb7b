"""Errors of `boxkit`: what its helpers raise beside the operating system's own `OSError`."""

from __future__ import annotations

from pathlib import Path


class BoxkitError(Exception):
    """Base of the errors of `boxkit`."""


class AlreadyRunningError(BoxkitError):
    """Another process holds the lock of a state directory; `pid` is the one it recorded (0 if unknown)."""

    def __init__(self, path: Path, pid: int) -> None:
        super().__init__(f"{path} is held by pid {pid or '?'}")
        self.path, self.pid = path, pid
