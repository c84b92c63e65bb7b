"""Small file helpers: secrets, atomic writes, and the one-process lock of a state directory
(used by boxd, boxctl and the cloud)."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` via a temporary file, fsync and rename: all or nothing."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)
    fsync_dir(path.parent)


def write_secret(path: Path, data: bytes) -> None:
    """Write a private key: mode 0600 from the first byte on."""
    write_atomic(path, data, 0o600)


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AlreadyRunning(Exception):
    """Another process holds the lock; `pid` is the one it recorded (0 if unknown)."""

    def __init__(self, path: Path, pid: int) -> None:
        super().__init__(f"{path} is held by pid {pid or '?'}")
        self.path, self.pid = path, pid


def lock_holder(path: Path) -> int:
    """The pid recorded in a lock file (0 when none can be read)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0


def pid_lock(path: Path) -> int:
    """Take an exclusive lock for this process's life (flock on `path`, which records our pid).

    The lock goes with the process (the kernel drops it at exit, even on SIGKILL): a stale
    file never blocks anyone. Returns the open descriptor (keep it; closing drops the lock).

    Raises:
        AlreadyRunning: another process holds it.
        OSError: the file cannot be opened (a read-only or missing directory).
    """
    import fcntl  # not on every platform; only those that lock need it

    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AlreadyRunning(path, lock_holder(path)) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd
