"""LazyFS: mount a directory through a file system that loses everything not fsync'ed when the power is cut.

A process crash keeps the kernel's page cache, so it cannot show a missing fsync; a power loss does. This
mounts a backing directory through our FUSE daemon (``_lazyfs_fs``, run as a child process), which keeps
every write and every metadata change in its own memory and puts it on the backing directory only when it is
fsync'ed (``_lazyfs_model``'s docstring says exactly what is modelled). Then:

- :meth:`LazyFS.crash` is the power cut: the daemon is killed (SIGKILL: its memory, the unsynced data, is
  gone) and the mount is detached. The backing directory then holds exactly what was synced.
- :meth:`LazyFS.unmount` is a clean shutdown: everything is written to the backing directory, then detached.

Usage::

    fs = LazyFS(backing_dir)
    with fs as mnt:          # mnt: the mount point (a fresh temporary directory unless one is given)
        ...                  # use files under mnt
        fs.crash()           # or leave the block: clean unmount; on an exception: crash-style teardown

``LazyFS(backing, fsync_delay_ms=20)`` makes every fsync that much slower, as on a slow disk (the loop-stall
benchmark, `bench.loop_stall`).

What it does not: run without root or ``fusermount`` (libfuse 2 mounts directly as root), or model anything
below fsync (torn pages, reordered writes inside one fsync). Needs the Debian package libfuse2 and fusepy.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

_REPO = Path(__file__).resolve().parents[2]


class LazyFSError(RuntimeError):
    """The daemon did not start, answer or stop as expected."""


def is_mounted(path: Path) -> bool:
    """Whether `path` is a mount point now (read from /proc/self/mountinfo)."""
    target = os.path.realpath(path)
    with Path("/proc/self/mountinfo").open() as f:
        for line in f:
            mnt = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split(" ")[4])  # \040: space
            if mnt == target:
                return True
    return False


def detach(path: Path) -> None:
    """Lazily unmount `path` if it is mounted (fusermount -u -z when there is one, else umount -l)."""
    if not is_mounted(path):
        return
    cmd = ["fusermount", "-u", "-z", str(path)] if shutil.which("fusermount") else ["umount", "-l", str(path)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0 and is_mounted(path):
        raise LazyFSError(f"cannot unmount {path}: {res.stderr.strip()}")


class LazyFS:
    """A LazyFS mount of `backing` on `mountpoint` (a fresh temporary directory when None)."""

    def __init__(self, backing: Path, mountpoint: Path | None = None, start_timeout: float = 15.0,
                 fsync_delay_ms: int = 0) -> None:
        self.backing = Path(backing)
        self.fsync_delay_ms = fsync_delay_ms
        self._given_mountpoint = mountpoint
        self.mountpoint: Path | None = None
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._buf = b""

    # ---- lifecycle --------------------------------------------------------------------------------------
    def mount(self) -> Path:
        """Start the daemon and wait until the mount is live; returns the mount point."""
        if self._proc is not None:
            raise LazyFSError("already mounted")
        mnt = self._given_mountpoint or Path(tempfile.mkdtemp(prefix="lazyfs-"))
        mnt.mkdir(parents=True, exist_ok=True)
        self.mountpoint = mnt
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO), os.environ.get("PYTHONPATH")]))}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support._lazyfs_fs", str(self.backing), str(mnt), str(self.fsync_delay_ms)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        try:
            if self._read_line(self.start_timeout) != "ready" or not is_mounted(mnt):
                raise LazyFSError(f"LazyFS did not mount {mnt}")
        except BaseException:
            self._teardown(flush=False)
            raise
        return mnt

    def sync(self, timeout: float = 15.0) -> None:
        """Write everything to the backing directory now (sync(1)); stays mounted."""
        proc = self._running()
        assert proc.stdin is not None
        proc.stdin.write(b"sync\n")
        proc.stdin.flush()
        if self._read_line(timeout) != "synced":
            raise LazyFSError("LazyFS did not confirm the sync")

    def crash(self) -> None:
        """The power cut: drop every unsynced byte and metadata change, then detach the mount."""
        self._teardown(flush=False)

    def unmount(self) -> None:
        """A clean shutdown: write everything to the backing directory, then unmount."""
        self._teardown(flush=True)

    @property
    def mounted(self) -> bool:
        return self._proc is not None

    def __enter__(self) -> Path:
        return self.mount()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._proc is not None:
            self._teardown(flush=exc_type is None)

    # ---- internals --------------------------------------------------------------------------------------
    def _running(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            raise LazyFSError("LazyFS is not running")
        return self._proc

    def _read_line(self, timeout: float) -> str:
        """One line from the daemon, within `timeout` seconds."""
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LazyFSError(f"no answer from LazyFS within {timeout:.0f} s")
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise LazyFSError(f"LazyFS exited (status {proc.wait()})")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode().strip()

    def _teardown(self, flush: bool) -> None:
        proc, mnt = self._proc, self.mountpoint
        if proc is None or mnt is None:
            return
        try:
            if flush and proc.poll() is None:
                self.sync()
        finally:
            try:
                if not flush:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGKILL)  # its memory, the unsynced state, dies with it
                    proc.wait(10)
                detach(mnt)
                try:
                    proc.wait(10)  # after a clean detach the daemon exits once the last file is closed
                except subprocess.TimeoutExpired:
                    proc.kill()  # files still open: later writes are lost, the synced state is kept
                    proc.wait(10)
            finally:
                for pipe in (proc.stdin, proc.stdout):
                    if pipe is not None:
                        with contextlib.suppress(OSError):
                            pipe.close()
                self._proc = None
                self._buf = b""
                if self._given_mountpoint is None:
                    with contextlib.suppress(OSError):
                        mnt.rmdir()
