"""LazyFS really loses what was not fsync'ed at a power cut, and keeps what was (files, renames, SQLite WAL)."""

from __future__ import annotations

import ctypes.util
import importlib.util
import os
import select
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.lazyfs import LazyFS, is_mounted


@pytest.fixture(scope="module", autouse=True)
def _fuse_available() -> None:
    if not Path("/dev/fuse").exists():
        pytest.skip("this kernel offers no /dev/fuse")
    if os.geteuid() != 0 and shutil.which("fusermount") is None:
        pytest.skip("mounting with libfuse 2 needs root or fusermount")
    if ctypes.util.find_library("fuse") is None or importlib.util.find_spec("fuse") is None:
        pytest.fail("libfuse2 or fusepy is missing: run scripts/bootstrap.sh (make test installs them)")


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[LazyFS]:
    """A mounted LazyFS over tmp_path/backing; torn down (power-cut style) even when the test fails."""
    backing = tmp_path / "backing"
    backing.mkdir()
    lazy = LazyFS(backing)
    lazy.mount()
    try:
        yield lazy
    finally:
        mnt = lazy.mountpoint
        lazy.crash()
        assert mnt is not None and not is_mounted(mnt)


def _mnt(fs: LazyFS) -> Path:
    assert fs.mountpoint is not None
    return fs.mountpoint


def _write(path: Path, data: bytes, fsync: bool, flags: int = os.O_CREAT | os.O_WRONLY) -> None:
    fd = os.open(path, flags, 0o644)
    try:
        os.write(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def test_fsynced_data_survives_and_the_unsynced_tail_is_lost(fs: LazyFS) -> None:
    path = _mnt(fs) / "data"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"durable")
    os.fsync(fd)
    os.write(fd, b"+volatile")
    os.close(fd)
    assert path.read_bytes() == b"durable+volatile"  # reads see the cache, like a page cache
    assert (fs.backing / "data").read_bytes() == b"durable"

    fs.crash()
    assert (fs.backing / "data").read_bytes() == b"durable"


def test_truncate_and_sparse_write_are_synced_as_a_whole(fs: LazyFS) -> None:
    path = _mnt(fs) / "f"
    _write(path, b"a" * 10_000, fsync=True)
    fd = os.open(path, os.O_WRONLY)
    os.ftruncate(fd, 100)
    os.pwrite(fd, b"x", 5000)
    os.fsync(fd)
    os.pwrite(fd, b"lost", 0)
    os.close(fd)

    fs.crash()
    assert (fs.backing / "f").read_bytes() == b"a" * 100 + bytes(4900) + b"x"


def test_a_file_created_and_never_synced_does_not_exist_after_the_crash(fs: LazyFS) -> None:
    mnt = _mnt(fs)
    _write(mnt / "kept", b"k", fsync=True)
    _write(mnt / "new", b"never synced", fsync=False)
    (mnt / "newdir").mkdir()
    assert (mnt / "new").read_bytes() == b"never synced"
    assert sorted(os.listdir(mnt)) == ["kept", "new", "newdir"]

    fs.crash()
    assert sorted(os.listdir(fs.backing)) == ["kept"]


def test_a_rename_is_durable_only_once_its_directory_is_synced(tmp_path: Path) -> None:
    backing = tmp_path / "backing"
    backing.mkdir()
    (backing / "config").write_bytes(b"old")
    for sync_dir in (False, True):
        fs = LazyFS(backing)
        with fs as mnt:
            _write(mnt / "config.tmp", b"new", fsync=True)  # the atomic-replace idiom
            (mnt / "config.tmp").rename(mnt / "config")
            if sync_dir:
                _fsync_dir(mnt)
            assert (mnt / "config").read_bytes() == b"new"
            fs.crash()
        if sync_dir:
            assert sorted(os.listdir(backing)) == ["config"]
            assert (backing / "config").read_bytes() == b"new"
        else:  # the fsync of config.tmp made its creation durable, not the rename that came after
            assert (backing / "config").read_bytes() == b"old"
            assert (backing / "config.tmp").read_bytes() == b"new"
            (backing / "config.tmp").unlink()


def test_unlink_is_lost_without_a_directory_sync(fs: LazyFS) -> None:
    (fs.backing / "old").write_bytes(b"still here")
    (_mnt(fs) / "old").unlink()
    assert not (_mnt(fs) / "old").exists()
    fs.crash()
    assert (fs.backing / "old").read_bytes() == b"still here"


def test_a_clean_unmount_writes_everything(tmp_path: Path) -> None:
    backing = tmp_path / "backing"
    backing.mkdir()
    with LazyFS(backing) as mnt:
        (mnt / "sub").mkdir()
        _write(mnt / "sub" / "f", b"unsynced but cleanly unmounted", fsync=False)
    assert not is_mounted(mnt)
    assert (backing / "sub" / "f").read_bytes() == b"unsynced but cleanly unmounted"


def test_the_mount_is_detached_when_the_block_raises(tmp_path: Path) -> None:
    backing = tmp_path / "backing"
    backing.mkdir()
    fs = LazyFS(backing)
    with pytest.raises(RuntimeError, match="test failed"), fs as mnt:
        _write(mnt / "f", b"x", fsync=False)
        raise RuntimeError("test failed")
    assert not is_mounted(mnt)
    assert not fs.mounted
    assert os.listdir(backing) == []  # torn down like a power cut: nothing was synced


# ---- SQLite in WAL mode -------------------------------------------------------------------------------------
# The writer is its own process, killed at the power cut like everything else on the Box. It commits one row
# per transaction and prints the number of rows committed after each commit.
WRITER = textwrap.dedent("""
    import sqlite3, sys
    path, sync, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    db = sqlite3.connect(path, isolation_level=None)
    assert db.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS q (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
    db.execute(f"PRAGMA synchronous={sync}")
    for i in range(n):
        db.execute("INSERT INTO q (body) VALUES (?)", (bytes(500),))
        print(i + 1, flush=True)
    sys.stdin.read()  # keep the connection (and the WAL) open until the power cut
""")
ROWS = 60


def _committed(writer: subprocess.Popen[bytes], n: int, timeout: float = 20.0) -> None:
    """Wait until the writer reports `n` committed transactions."""
    assert writer.stdout is not None
    fd, buf, deadline = writer.stdout.fileno(), b"", time.monotonic() + timeout
    while not buf.endswith(f"{n}\n".encode()):
        left = deadline - time.monotonic()
        assert left > 0, f"the writer committed only {buf.split()[-1:]} of {n} in time"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 4096)
            assert chunk, f"the writer exited with {writer.wait()}"
            buf += chunk


def _write_then_cut_power(fs: LazyFS, sync: str) -> None:
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(_mnt(fs) / "queue.db"), sync, str(ROWS)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        _committed(writer, ROWS)
        # Another process reads through the mount while the writer holds the WAL: the -shm mmap is shared.
        with sqlite3.connect(_mnt(fs) / "queue.db") as reader:
            assert reader.execute("SELECT count(*) FROM q").fetchone()[0] == ROWS
        reader.close()
    finally:
        writer.kill()
        writer.wait(10)
    fs.crash()


def _rows_on_disk(backing: Path) -> int:
    db = sqlite3.connect(backing / "queue.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return int(db.execute("SELECT count(*) FROM q").fetchone()[0])
    finally:
        db.close()


def test_sqlite_wal_with_synchronous_full_keeps_every_commit(fs: LazyFS) -> None:
    _write_then_cut_power(fs, "FULL")
    assert _rows_on_disk(fs.backing) == ROWS


def test_sqlite_wal_with_synchronous_off_loses_recent_commits(fs: LazyFS) -> None:
    """The control experiment: the file system does drop what was not synced, so the proof above can fail."""
    _write_then_cut_power(fs, "OFF")
    assert _rows_on_disk(fs.backing) < ROWS
