"""The LazyFS daemon: a FUSE file system (fusepy, libfuse 2) serving `_lazyfs_model.Volume` on a mount point.

Run as ``python -m tests.support._lazyfs_fs BACKING MOUNTPOINT [FSYNC_DELAY_MS]`` by
:class:`tests.support.lazyfs.LazyFS`, which talks to it over stdin/stdout: it prints ``ready`` once mounted, and
answers ``sync`` with ``synced`` once everything is on the backing directory. Killing it is the power cut: its
memory, all that was not synced, is gone. With a delay, every fsync of a file or directory takes that much
longer, as on a slow disk (SD card, eMMC), and the file system serves requests on several threads so that the
thread waiting for its fsync holds up nobody else (the model is still used by one thread at a time).

Mounted with libfuse's defaults for caching (no direct_io, so the kernel's page cache serves reads and a
shared writable mmap works, as SQLite's WAL index needs), ``use_ino`` (stable inode numbers: SQLite keys its
locks on them), ``hard_remove`` (an unlinked open file is reached by its handle, not renamed to a hidden
file). POSIX locks are left to the kernel (no ``lock`` operation): they work between processes of this
machine. What the file system models is described in `_lazyfs_model`. It does not serve hard links,
symlinks, device files or extended attributes.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import update_wrapper
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from fuse import FUSE, FuseOSError, Operations  # type: ignore[import-untyped]

from tests.support._lazyfs_model import Dir, File, Node, Volume

P = ParamSpec("P")
R = TypeVar("R")


def _locked(method: Callable[Concatenate[LazyOps, P], R]) -> Callable[Concatenate[LazyOps, P], R]:
    def wrapper(self: LazyOps, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self._mutex:
            return method(self, *args, **kwargs)

    update_wrapper(wrapper, method)
    return wrapper


class LazyOps(Operations):  # type: ignore[misc]
    """The FUSE operations (fusepy's high-level API), serialised by one lock.

    fusepy registers every attribute named like a FUSE operation (``lock``, ``flush``...): name nothing else so.
    """

    use_ns = True
    flag_nullpath_ok = 1  # with hard_remove, an open unlinked file is reached by its handle alone
    # Not offered: libfuse answers ENOSYS, which the kernel remembers (no getxattr before every write).
    getxattr = setxattr = listxattr = removexattr = None

    def __init__(self, backing: Path, mountpoint: str, fsync_delay_s: float = 0.0) -> None:
        self.vol = Volume(backing)
        self.mountpoint = mountpoint
        self.fsync_delay_s = fsync_delay_s
        self._mutex = threading.RLock()
        self._fhs: dict[int, Node] = {}
        self._next_fh = 1
        self._orphaned = False

    def _node(self, path: str | None, fh: int | None) -> Node:
        if fh is not None and fh in self._fhs:
            return self._fhs[fh]
        if path is None:
            raise FuseOSError(errno.EBADF)
        return self.vol.lookup(path)

    def _file(self, path: str | None, fh: int | None) -> File:
        return self.vol.loaded(self._node(path, fh))

    def _handle(self, node: Node) -> int:
        fh, self._next_fh = self._next_fh, self._next_fh + 1
        self._fhs[fh] = node
        return fh

    # ---- life and control -------------------------------------------------------------------------------
    def init(self, path: str) -> None:
        threading.Thread(target=self._control, name="lazyfs-control", daemon=True).start()
        print("ready", flush=True)

    def destroy(self, path: str) -> None:
        if not self._orphaned:
            self.sync_all()  # a clean unmount; a crash (SIGKILL) never gets here

    def sync_all(self) -> None:
        with self._mutex:
            self.vol.sync_all()

    def _control(self) -> None:
        for line in sys.stdin:
            if line.strip() == "sync":
                self.sync_all()
                print("synced", flush=True)
        # The controller is gone without unmounting us: power-cut semantics, and detach the mount.
        self._orphaned = True
        subprocess.run(["umount", "-l", self.mountpoint], check=False, capture_output=True)
        os._exit(3)

    # ---- attributes and directories ---------------------------------------------------------------------
    @_locked
    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, int]:
        node = self._node(path, fh)
        if isinstance(node, File):
            size, nlink = self.vol.size(node), 1 if node.parent is not None else 0
        else:
            size, nlink = 4096, 2
        return {"st_mode": node.mode, "st_ino": node.ino, "st_nlink": nlink, "st_size": size,
                "st_uid": node.uid, "st_gid": node.gid, "st_blocks": (size + 511) // 512,
                "st_atime": node.atime, "st_mtime": node.mtime, "st_ctime": node.ctime}

    @_locked
    def opendir(self, path: str) -> int:
        return self._handle(self.vol.lookup(path))

    @_locked
    def readdir(self, path: str | None, fh: int) -> list[str]:
        node = self._node(path, fh)
        if not isinstance(node, Dir):
            raise FuseOSError(errno.ENOTDIR)
        return [".", "..", *self.vol.children(node)]

    @_locked
    def releasedir(self, path: str | None, fh: int) -> int:
        self._fhs.pop(fh, None)
        return 0

    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
        self._slow_disk()
        with self._mutex:
            self.vol.fsync(self._node(path, fh))
        return 0

    @_locked
    def mkdir(self, path: str, mode: int) -> int:
        self.vol.create(path, mode, directory=True)
        return 0

    @_locked
    def rmdir(self, path: str) -> int:
        self.vol.remove(path, directory=True)
        return 0

    @_locked
    def unlink(self, path: str) -> int:
        self.vol.remove(path, directory=False)
        return 0

    @_locked
    def rename(self, old: str, new: str) -> int:
        self.vol.rename(old, new)
        return 0

    @_locked
    def chmod(self, path: str, mode: int) -> int:
        self.vol.chmod(self.vol.lookup(path), mode)
        return 0

    @_locked
    def chown(self, path: str, uid: int, gid: int) -> int:
        self.vol.chown(self.vol.lookup(path), uid, gid)
        return 0

    @_locked
    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        node = self.vol.lookup(path)
        if times is not None:
            node.atime, node.mtime = times
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        sv = os.statvfs(self.vol.backing)
        keys = ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree", "f_favail")
        return {k: getattr(sv, k) for k in (*keys, "f_namemax")}

    # ---- files ------------------------------------------------------------------------------------------
    @_locked
    def create(self, path: str, mode: int, fi: Any = None) -> int:
        return self._handle(self.vol.create(path, mode))

    @_locked
    def open(self, path: str, flags: int) -> int:
        return self._handle(self._file(path, None))

    @_locked
    def release(self, path: str | None, fh: int) -> int:
        self._fhs.pop(fh, None)
        return 0

    @_locked
    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        data = self._file(path, fh).data
        assert data is not None
        return bytes(data[offset : offset + size])

    @_locked
    def write(self, path: str | None, buf: bytes, offset: int, fh: int) -> int:
        return self.vol.write(self._file(path, fh), buf, offset)

    @_locked
    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        self.vol.truncate(self._file(path, fh), length)
        return 0

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        self._slow_disk()
        with self._mutex:
            self.vol.fsync(self._file(path, fh))
        return 0

    def _slow_disk(self) -> None:
        """The slow disk's fsync: the caller waits, the other requests go on (outside the lock)."""
        if self.fsync_delay_s > 0:
            time.sleep(self.fsync_delay_s)

    def link(self, target: str, source: str) -> int:
        raise FuseOSError(errno.EPERM)

    def symlink(self, target: str, source: str) -> int:
        raise FuseOSError(errno.EPERM)

    def mknod(self, path: str, mode: int, dev: int) -> int:
        raise FuseOSError(errno.EPERM)


def main(argv: list[str]) -> int:
    backing, mountpoint = Path(argv[1]).resolve(), argv[2]
    delay_s = int(argv[3]) / 1000 if len(argv) > 3 else 0.0
    FUSE(LazyOps(backing, mountpoint, delay_s), mountpoint, foreground=True, nothreads=delay_s == 0, use_ino=True,
         hard_remove=True, big_writes=True, max_write=131072, fsname="lazyfs", subtype="lazyfs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
