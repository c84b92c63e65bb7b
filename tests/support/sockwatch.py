"""Watch a Box's process tree for sockets that accept connections or datagrams, continuously, from outside.

`SockWatch(root_pid)` runs a thread that, every `interval` seconds until stopped, finds the root and
every process descended from it (the launcher, the daemon, the OTA download child: a new process is
seen by its parent pid in /proc/<pid>/stat), reads the socket inodes of their file descriptors, and
looks them up in /proc/<pid>/net/{tcp,tcp6,udp,udp6,unix} of their network namespace: a TCP socket
in LISTEN, an unconnected UDP socket with a local port, or a listening Unix socket is a finding
(with the time, the process and its command line). It records every process of the tree it saw, so
a test can show that the watch covered them.

A poll every 20 ms can miss a socket that lives less than that (paho's TCP wake-up pair lived
microseconds); the tripwire (`tests/support/tripwire`) catches those: `env()` gives the variables
that load it into every Python process of the tree, and `check()` reads both.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

_TRIPWIRE = Path(__file__).resolve().parent / "tripwire"


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


class SockWatch:
    """Poll a process tree for listening sockets (see the module docstring)."""

    def __init__(self, root_pid: int, interval: float = 0.02) -> None:
        self.root = root_pid
        self.interval = interval
        self.findings: list[str] = []
        self.seen: dict[int, str] = {}  # pid -> command line, of every process of the tree
        self.polls = 0
        self._parents: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sockwatch", daemon=True)
        self._log = Path(tempfile.mkstemp(prefix="boxd-binds-")[1])

    def env(self) -> dict[str, str]:
        """Environment variables that load the bind tripwire into the tree's Python processes."""
        path = os.pathsep.join(filter(None, [str(_TRIPWIRE), os.environ.get("PYTHONPATH")]))
        return {"PYTHONPATH": path, "BOXD_TEST_SOCKET_LOG": str(self._log)}

    def start(self, root_pid: int | None = None) -> SockWatch:
        if root_pid is not None:
            self.root = root_pid
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def __enter__(self) -> SockWatch:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def binds(self) -> list[str]:
        """What the tripwire saw: every bind of an IP or named Unix socket."""
        return _read(str(self._log)).splitlines()

    def check(self) -> None:
        """Stop, then fail if anything was found by either eye."""
        self.stop()
        problems = self.findings + [f"tripwire: {b}" for b in self.binds()]
        assert not problems, f"sockets that accept from others: {problems[:10]}"
        self._log.unlink(missing_ok=True)

    def commands(self) -> list[str]:
        """The command lines of every process of the tree the watch saw."""
        return list(self.seen.values())

    # -- the thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._poll()
            self.polls += 1
            self._stop.wait(self.interval)
        self._poll()  # a last look

    def _tree(self) -> list[int]:
        for name in os.listdir("/proc"):
            if name.isdigit() and int(name) not in self._parents:
                stat = _read(f"/proc/{name}/stat")
                if stat:
                    self._parents[int(name)] = int(stat.rpartition(")")[2].split()[1])
        tree, frontier = {self.root}, [self.root]
        children: dict[int, list[int]] = {}
        for pid, ppid in self._parents.items():
            children.setdefault(ppid, []).append(pid)
        while frontier:
            for child in children.get(frontier.pop(), ()):
                if child not in tree:
                    tree.add(child)
                    frontier.append(child)
        return [p for p in tree if os.path.exists(f"/proc/{p}")]

    def _poll(self) -> None:
        owners: dict[str, int] = {}  # socket inode -> pid
        namespaces: dict[str, int] = {}  # network namespace -> a pid in it
        for pid in self._tree():
            # read again at each poll: a child first seen between its fork and its exec still shows
            # its parent's command line (a download child would then be counted as a daemon)
            cmdline = _read(f"/proc/{pid}/cmdline").replace("\0", " ").strip()
            if cmdline:
                self.seen[pid] = cmdline
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
                namespaces.setdefault(os.readlink(f"/proc/{pid}/ns/net"), pid)
            except OSError:
                continue  # gone meanwhile
            for fd in fds:
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    owners[target[8:-1]] = pid
        if owners:
            for pid in namespaces.values():
                self._look(pid, owners)

    def _look(self, pid: int, owners: dict[str, int]) -> None:
        found = []
        for proto in ("tcp", "tcp6", "udp", "udp6"):
            for line in _read(f"/proc/{pid}/net/{proto}").splitlines()[1:]:
                f = line.split()
                if f[9] not in owners:
                    continue
                if proto.startswith("tcp") and f[3] == "0A":  # TCP_LISTEN
                    found.append((owners[f[9]], f"{proto} LISTEN {f[1]}"))
                elif proto.startswith("udp") and set(f[2].split(":")[1]) == {"0"}:  # bound, no peer
                    found.append((owners[f[9]], f"{proto} bound {f[1]}, receives from anyone"))
        for line in _read(f"/proc/{pid}/net/unix").splitlines()[1:]:
            f = line.split()
            if f[6] in owners and int(f[3], 16) & 0x10000:  # __SO_ACCEPTCON
                found.append((owners[f[6]], f"unix LISTEN {f[7] if len(f) > 7 else '(unnamed)'}"))
        for owner, what in found:
            self.findings.append(f"{time.strftime('%H:%M:%S')} pid {owner} ({self.seen.get(owner, '?')[:120]}): {what}")
