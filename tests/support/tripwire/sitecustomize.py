"""A tripwire for sockets that accept from others, loaded into every Python process of a watched Box
(its directory is put first on PYTHONPATH by `tests.support.sockwatch.SockWatch.env`; the launcher,
the daemon and the OTA download child pass PYTHONPATH on).

It writes a line to $BOXD_TEST_SOCKET_LOG for every ``listen()`` on a Python socket (the method is
wrapped) and, through an audit hook (PEP 578), for every ``bind()`` of a datagram socket (IPv4, IPv6
or a named Unix socket: it then receives from anyone who can reach it), however briefly the socket
lived: polling /proc can miss one that lives microseconds. A client's TCP socket bound to port 0
before it connects (paho does that) accepts nothing and is not reported. It does not see sockets
made in C without Python's socket module. This shadows Debian's own sitecustomize, which only
installs apport's hook (apport is not installed here).
"""

import os
import socket
import sys

_LOG = os.environ.get("BOXD_TEST_SOCKET_LOG", "")


def _note(what: str) -> None:
    line = f"{os.getpid()} {' '.join(sys.argv)[:200]!r}: {what}\n"
    fd = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _hook(event: str, args: tuple[object, ...]) -> None:
    if event != "socket.bind":
        return
    sock, address = args
    family, kind = getattr(sock, "family", None), getattr(sock, "type", None)
    named = family in (socket.AF_INET, socket.AF_INET6) or (family == socket.AF_UNIX and address)
    if named and kind == socket.SOCK_DGRAM:
        _note(f"bind {family!s} {kind!s} {address!r}")


_listen = socket.socket.listen


def _listening(self: socket.socket, *args: int) -> None:
    _note(f"listen {self.family!s} {self.type!s} on {self.getsockname()!r}")
    _listen(self, *args)


if _LOG:
    sys.addaudithook(_hook)
    socket.socket.listen = _listening  # type: ignore[assignment]  # the tripwire wraps the stdlib's own method
