"""Small file helpers: secrets, private files, atomic writes, and the one-process lock of a state
directory (used by boxd, boxctl and the cloud).

An atomic write goes to a temporary file of a fresh random name in the same directory, created
with O_EXCL and O_NOFOLLOW (a link planted by another user is never followed, nor a name guessed
in advance), then renamed over the destination: a symlink at the destination is replaced, not
written through. Databases and their directories are made private (0600 files, 0700 directories)
before SQLite opens them; SQLite gives its -wal and -shm files the mode of the database.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from boxkit.errors import AlreadyRunningError

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def temp_path(path: Path) -> Path:
    """A fresh, unguessable temporary name beside `path` (for `create_new` then a rename)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def create_new(path: Path, mode: int = 0o644) -> int:
    """Create `path`, which must not exist (no symlink followed); returns a writable descriptor."""
    fd = os.open(path, _CREATE, mode)
    os.fchmod(fd, mode)
    return fd


def write_atomic(path: Path, data: bytes, mode: int = 0o644, *, durable: bool = True) -> None:
    """Write `data` to `path` via a temporary file, fsync and rename: all or nothing.

    `durable=False` skips the fsyncs (a file rewritten every second that need not survive a power
    loss, e.g. a runtime status): still atomic for readers, still no link followed.
    """
    tmp = temp_path(path)
    fd = create_new(tmp, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        fsync_dir(path.parent)


def write_secret(path: Path, data: bytes) -> None:
    """Write a private key: mode 0600 from the first byte on."""
    write_atomic(path, data, 0o600)


def private_dir(path: Path) -> None:
    """Create `path` (and missing parents) and make it 0700: only its owner may enter it."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o777 != 0o700:
        path.chmod(0o700)


def private_db(path: Path) -> None:
    """Make a database file (created empty if missing) and its -wal/-shm companions 0600.

    Called before SQLite opens it: SQLite creates the companions with the database's mode. An
    existing file is changed by name, never opened: closing any descriptor of a file drops every
    POSIX lock this process holds on it, SQLite's included.

    Raises:
        OSError: the path is a symbolic link, or cannot be created or changed.
    """
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
    except FileExistsError:
        for p in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))):
            if p.is_symlink():
                raise OSError(f"{p} is a symbolic link: refusing to use it as a database") from None
            with contextlib.suppress(FileNotFoundError):
                if p.stat().st_mode & 0o077:
                    p.chmod(0o600)


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
        AlreadyRunningError: another process holds it.
        OSError: the file cannot be opened (a read-only or missing directory).
    """
    import fcntl  # not on every platform; only those that lock need it

    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AlreadyRunningError(path, lock_holder(path)) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd
