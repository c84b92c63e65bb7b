"""What LazyFS models: a file tree in memory over a backing directory, made durable only by fsync.

The daemon's memory is the page cache and the volatile metadata; the backing directory is the disk. This
module is the model alone (no FUSE: `_lazyfs_fs.py` is the shell around it); errors are raised as OSError
with an errno, which the FUSE shell passes to the caller.

Exactly what is modelled:
- File data: each file's content lives in memory (loaded whole from the backing file on first use); writes
  and truncations change only that copy and mark 4 KiB pages dirty. Reads (and mmap, through the kernel's
  page cache) see the volatile content. ``fsync``/``fdatasync`` of a file writes its dirty pages and its size
  to the backing file.
- Metadata: create, mkdir, unlink, rmdir, rename, chmod and chown change the in-memory tree at once and are
  appended to an ordered journal. An ``fsync`` of a file, or of a directory, commits the journal in order up
  to and including the last entry that touches that file or directory (for a directory: entries created in,
  removed from, renamed into or out of it, and its own creation or rename), replaying it on the backing
  directory. So after a crash the namespace is exactly the one after some prefix of the operations: never a
  reordering, never half a rename. This is stricter than ext4 (which commits its whole journal on any fsync)
  and looser than bare POSIX (which would also let earlier, unrelated entries be lost).
- A file created and never fsync'ed (nor its directory) does not exist after a crash; a file whose name was
  committed by a directory fsync but whose data never was, exists with the data of its last fsync (empty
  when none), as on a delayed-allocation file system.

What it does not model: hard links, symlinks, device files, extended attributes (only regular files and
directories exist; others in the backing directory are not shown); timestamps are kept in memory only; no
torn or reordered writes inside one fsync; it does not fsync the backing directory's own disk (the backing
directory *is* the disk here).
"""

from __future__ import annotations

import errno
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

PAGE = 4096


def _err(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class Node:
    """An inode: its volatile place (parent, name) and its durable place (dparent, dname) on the disk."""

    def __init__(self, ino: int, mode: int, parent: Dir | None, name: str, durable: bool) -> None:
        self.ino = ino
        self.mode = mode
        self.parent = parent  # None: unlinked (or the root)
        self.name = name
        self.dparent: Dir | None = parent if durable else None  # None: no name on the disk
        self.dname = name
        self.uid, self.gid = os.getuid(), os.getgid()
        self.atime = self.mtime = self.ctime = time.time_ns()


class File(Node):
    def __init__(self, ino: int, mode: int, parent: Dir | None, name: str, durable: bool) -> None:
        super().__init__(ino, mode, parent, name, durable)
        self.data: bytearray | None = None if durable else bytearray()  # None: not loaded yet
        self.dirty: set[int] = set()  # pages written since the last fsync
        self.low: int | None = None  # smallest size since the last fsync (a truncation to redo)


class Dir(Node):
    def __init__(self, ino: int, mode: int, parent: Dir | None, name: str, durable: bool) -> None:
        super().__init__(ino, mode, parent, name, durable)
        self.children: dict[str, Node] | None = None if durable else {}  # None: not listed yet


@dataclass(eq=False)
class Op:
    """One metadata change waiting in the journal."""

    kind: str  # create, mkdir, unlink, rmdir, rename, chmod, chown
    node: Node
    src: tuple[Dir, str] | None = None
    dst: tuple[Dir, str] | None = None
    victim: Node | None = None  # the node a rename replaced
    mode: int = 0
    owner: tuple[int, int] = (-1, -1)

    def touches(self, node: Node) -> bool:
        return node is self.node or any(p is not None and p[0] is node for p in (self.src, self.dst))


class Volume:
    """The tree, its journal and the backing directory. Not thread-safe: the caller holds a lock."""

    def __init__(self, backing: Path) -> None:
        self.backing = backing
        self._inos = 1
        self.root = Dir(1, stat.S_IFDIR | 0o755, None, "", durable=True)
        self.journal: list[Op] = []
        self._unsynced: dict[int, File] = {}  # files with dirty data, by ino

    # ---- durability -------------------------------------------------------------------------------------
    def dpath(self, node: Node) -> Path | None:
        """Where `node` is on the disk (None: nowhere)."""
        if node is self.root:
            return self.backing
        if node.dparent is None:
            return None
        parent = self.dpath(node.dparent)
        return None if parent is None else parent / node.dname

    def fsync(self, node: Node) -> None:
        """fsync(2) of a file or a directory."""
        self._commit_through(node)
        if isinstance(node, File):
            self._write_back(node)

    def sync_all(self) -> None:
        """Make everything durable, like sync(1) before a clean shutdown."""
        self._commit_through(None)
        for f in list(self._unsynced.values()):
            self._write_back(f)

    def _commit_through(self, node: Node | None) -> None:
        """Commit the journal up to the last entry touching `node` (all of it when `node` is None)."""
        last = max((i for i, op in enumerate(self.journal) if node is None or op.touches(node)), default=-1)
        for op in self.journal[: last + 1]:
            self._apply(op)
        del self.journal[: last + 1]

    def _apply(self, op: Op) -> None:
        """Replay one journal entry on the backing directory."""
        node = op.node
        if op.kind in ("create", "mkdir"):
            assert op.dst is not None
            parent = self.dpath(op.dst[0])
            assert parent is not None, "a directory's creation precedes its entries' in the journal"
            if op.kind == "create":
                os.close(os.open(parent / op.dst[1], os.O_CREAT | os.O_WRONLY | os.O_TRUNC, op.mode))
            else:
                (parent / op.dst[1]).mkdir(op.mode)
            node.dparent, node.dname = op.dst
            return
        path = self.dpath(node)
        assert path is not None, f"{op.kind} of a node that is not on the disk"
        if op.kind in ("unlink", "rmdir"):
            if op.kind == "rmdir":
                path.rmdir()
            else:
                path.unlink()
            node.dparent = None
        elif op.kind == "rename":
            assert op.dst is not None
            target = self.dpath(op.dst[0])
            assert target is not None
            path.rename(target / op.dst[1])
            if op.victim is not None:
                op.victim.dparent = None
            node.dparent, node.dname = op.dst
        elif op.kind == "chmod":
            path.chmod(op.mode)
        elif op.kind == "chown":
            os.chown(path, *op.owner)

    def _write_back(self, f: File) -> None:
        """Write a file's dirty pages and size to the disk (dropped if it has no name there)."""
        path = self.dpath(f)
        if f.data is not None and path is not None and (f.dirty or f.low is not None):
            fd = os.open(path, os.O_WRONLY)
            try:
                if f.low is not None:
                    os.ftruncate(fd, f.low)
                os.ftruncate(fd, len(f.data))
                for page in sorted(f.dirty):
                    if page * PAGE < len(f.data):
                        os.pwrite(fd, f.data[page * PAGE : (page + 1) * PAGE], page * PAGE)
            finally:
                os.close(fd)
        f.dirty.clear()
        f.low = None
        self._unsynced.pop(f.ino, None)

    # ---- the tree ---------------------------------------------------------------------------------------
    def children(self, d: Dir) -> dict[str, Node]:
        """A directory's entries, listed from the disk on first use."""
        if d.children is None:
            path = self.dpath(d)
            assert path is not None, "a directory not listed yet is still on the disk"
            d.children = {}
            with os.scandir(path) as entries:
                for e in entries:
                    st = e.stat(follow_symlinks=False)
                    kind = Dir if stat.S_ISDIR(st.st_mode) else File if stat.S_ISREG(st.st_mode) else None
                    if kind is not None:
                        node = kind(self._new_ino(), st.st_mode, d, e.name, durable=True)
                        node.uid, node.gid = st.st_uid, st.st_gid
                        node.atime, node.mtime, node.ctime = st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns
                        d.children[e.name] = node
        return d.children

    def lookup(self, path: str) -> Node:
        node: Node = self.root
        for part in filter(None, path.split("/")):
            if not isinstance(node, Dir):
                raise _err(errno.ENOTDIR)
            child = self.children(node).get(part)
            if child is None:
                raise _err(errno.ENOENT)
            node = child
        return node

    def loaded(self, node: Node) -> File:
        """`node` as a file whose content is in memory."""
        if not isinstance(node, File):
            raise _err(errno.EISDIR)
        if node.data is None:
            path = self.dpath(node)
            node.data = bytearray(path.read_bytes()) if path is not None else bytearray()
        return node

    def size(self, f: File) -> int:
        path = self.dpath(f)
        return len(f.data) if f.data is not None else path.stat().st_size if path is not None else 0

    def _new_ino(self) -> int:
        self._inos += 1
        return self._inos

    def _split(self, path: str) -> tuple[Dir, str]:
        head, _, name = path.rstrip("/").rpartition("/")
        parent = self.lookup(head)
        if not isinstance(parent, Dir):
            raise _err(errno.ENOTDIR)
        return parent, name

    # ---- changes ----------------------------------------------------------------------------------------
    def create(self, path: str, mode: int, directory: bool = False) -> Node:
        parent, name = self._split(path)
        entries = self.children(parent)
        if name in entries:
            raise _err(errno.EEXIST)
        kind, ftype = (Dir, stat.S_IFDIR) if directory else (File, stat.S_IFREG)
        node = kind(self._new_ino(), ftype | (mode & 0o7777), parent, name, durable=False)
        entries[name] = node
        self.journal.append(Op("mkdir" if directory else "create", node, dst=(parent, name), mode=mode & 0o7777))
        return node

    def remove(self, path: str, directory: bool) -> None:
        parent, name = self._split(path)
        node = self.children(parent).get(name)
        if node is None:
            raise _err(errno.ENOENT)
        if isinstance(node, Dir) != directory:
            raise _err(errno.ENOTDIR if directory else errno.EISDIR)
        if isinstance(node, Dir) and self.children(node):
            raise _err(errno.ENOTEMPTY)
        del self.children(parent)[name]
        node.parent = None
        self.journal.append(Op("rmdir" if directory else "unlink", node, src=(parent, name)))

    def rename(self, old: str, new: str) -> None:
        src, sname = self._split(old)
        dst, dname = self._split(new)
        node = self.children(src).get(sname)
        if node is None:
            raise _err(errno.ENOENT)
        victim = self.children(dst).get(dname)
        if victim is node:
            return
        ancestor: Dir | None = dst
        while ancestor is not None:
            if ancestor is node:
                raise _err(errno.EINVAL)  # a directory into its own subtree
            ancestor = ancestor.parent
        if victim is not None:
            if isinstance(victim, Dir) != isinstance(node, Dir):
                raise _err(errno.EISDIR if isinstance(victim, Dir) else errno.ENOTDIR)
            if isinstance(victim, Dir) and self.children(victim):
                raise _err(errno.ENOTEMPTY)
            victim.parent = None
        del self.children(src)[sname]
        self.children(dst)[dname] = node
        node.parent, node.name = dst, dname
        self.journal.append(Op("rename", node, src=(src, sname), dst=(dst, dname), victim=victim))

    def chmod(self, node: Node, mode: int) -> None:
        node.mode = (node.mode & ~0o7777) | (mode & 0o7777)
        self.journal.append(Op("chmod", node, mode=mode & 0o7777))

    def chown(self, node: Node, uid: int, gid: int) -> None:
        node.uid = uid if uid != -1 else node.uid
        node.gid = gid if gid != -1 else node.gid
        self.journal.append(Op("chown", node, owner=(uid, gid)))

    def write(self, f: File, buf: bytes, offset: int) -> int:
        data = self.loaded(f).data
        assert data is not None
        if offset > len(data):
            data.extend(bytes(offset - len(data)))
        data[offset : offset + len(buf)] = buf
        f.dirty.update(range(offset // PAGE, (offset + len(buf) - 1) // PAGE + 1))
        f.mtime = f.ctime = time.time_ns()
        self._unsynced[f.ino] = f
        return len(buf)

    def truncate(self, f: File, length: int) -> None:
        data = self.loaded(f).data
        assert data is not None
        if length < len(data):
            del data[length:]
            f.low = length if f.low is None else min(f.low, length)
            if length % PAGE:
                f.dirty.add(length // PAGE)
        else:
            data.extend(bytes(length - len(data)))
        f.mtime = f.ctime = time.time_ns()
        self._unsynced[f.ino] = f
