"""Checks made before the cloud creates or starts anything: the settings `init` writes, and the
ports `run` listens on (so a mistake is said at once, naming what is wrong, and nothing is left
half made or half running). No state: pure checks and a bind test."""

from __future__ import annotations

import ipaddress
import socket
from typing import TYPE_CHECKING

from cloud.errors import CloudError
from proto import names

if TYPE_CHECKING:
    from cloud.platform import Settings


def check_settings(s: Settings, extra_names: list[str]) -> None:
    """Refuse at `init` what would only fail at `run` (or at the Boxes).

    Raises:
        CloudError: every problem, in one message.
    """
    problems = []
    if s.broker_port == s.enroll_port:
        problems.append(f"the broker and the enrollment endpoint cannot share port {s.broker_port}")
    if s.bind:
        try:
            ipaddress.ip_address(s.bind)
        except ValueError:
            problems.append(f"--bind {s.bind!r} is not an IP address of this machine (e.g. 0.0.0.0, 127.0.0.1)")
    for what, name in [("--host", s.host), *(("--name", n) for n in extra_names)]:
        if not names.is_host(name):
            problems.append(f"{what} {name!r} is not a DNS name or an IP address")
    if problems:
        raise CloudError("; ".join(problems))


def check_port_free(bind: str, port: int, what: str) -> None:
    """Raise CloudError naming the port when something already listens on it."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no conflict
        try:
            sock.bind((bind, port))
        except OSError as e:
            raise CloudError(f"cannot listen for the {what} on {bind or '*'}:{port}: {e.strerror or e} "
                             "(another program, or another 'boxcloud run', uses it)") from None
