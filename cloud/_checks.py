"""Checks made before the cloud creates or starts anything: the settings `init` writes, and the
ports `run` listens on (so a mistake is said at once, naming what is wrong, and nothing is left
half made or half running). No state: pure checks and a bind test."""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

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
    ports = {"the broker": s.broker_port, "the enrollment endpoint": s.enroll_port, "the users' API": s.api_port}
    if len(set(ports.values())) < len(ports):
        problems.append("the broker, the enrollment endpoint and the users' API need a port each: "
                        + ", ".join(f"{k} {v}" for k, v in ports.items()))
    if s.bind:
        try:
            ipaddress.ip_address(s.bind)
        except ValueError:
            problems.append(f"--bind {s.bind!r} is not an IP address of this machine (e.g. 0.0.0.0, 127.0.0.1)")
    for what, name in [("--host", s.host), *(("--name", n) for n in extra_names)]:
        if not names.is_host(name):
            problems.append(f"{what} {name!r} is not a DNS name or an IP address")
    if s.database:
        try:
            database_url(s.database, f"{s.database_role_prefix}_owner")
        except CloudError as e:
            problems.append(str(e))
    for reach in ("webhook_reach", "mqtt_reach"):
        try:
            getattr(s, reach)  # validated here, used by run
        except ValueError as e:
            problems.append(str(e))
    if s.webhook_ca_file and not Path(s.webhook_ca_file).is_file():
        problems.append(f"--webhook-ca {s.webhook_ca_file}: no such file")
    if not 1 <= s.webhook_outbox_mb <= 1 << 20:
        problems.append(f"--webhook-outbox-mb {s.webhook_outbox_mb}: 1 to 1048576")
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


_ROLE_PREFIX = re.compile(r"[a-z_][a-z0-9_]{0,40}")
_LOOPBACK = ("localhost", "127.0.0.1", "::1")


def database_url(url: str, role: str) -> str:
    """The URL a service connects with: the settings' PostgreSQL URL with the service's `role`.

    The database is reached on this host only: a Unix socket (``?host=/run/postgresql``: peer
    authentication, no password anywhere) or, where an operator insists, loopback (with a
    ``passfile=`` of mode 0600). A password in the URL, a user in it (each service has its own
    role), another host, or a passfile others can read are refused.

    Raises:
        CloudError: what is wrong with the URL, without repeating a password.
    """
    try:
        u = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        raise CloudError("the database setting is not a URL (e.g. postgresql+psycopg:///boxcloud?"
                         "host=/run/postgresql)") from None
    if u.get_backend_name() != "postgresql":
        raise CloudError(f"the database setting names {u.get_backend_name()!r}: only PostgreSQL "
                         "(postgresql+psycopg://...) or nothing (SQLite, <home>/cloud.db)")
    if u.password is not None:
        raise CloudError("the database URL holds a password: it would be in cloud.json and in process lists; use "
                         "peer authentication over the Unix socket, or passfile=<a file of mode 0600>")
    if u.username:
        raise CloudError(f"the database URL names a user ({u.username}): each service connects as its own role "
                         "(<database_role_prefix>_<service>), leave the user out")
    if not _ROLE_PREFIX.fullmatch(role.rsplit("_", 1)[0]):
        raise CloudError(f"the database role prefix of {role!r} is not a plain lower-case name")
    hosts = u.query.get("host", u.host or "")
    for host in [hosts] if isinstance(hosts, str) else list(hosts):
        if host and not host.startswith("/") and host not in _LOOPBACK:
            raise CloudError(f"the database host {host!r} is not this machine: the database listens on a Unix "
                             "socket (host=/run/postgresql) or, if it must, on loopback only")
    passfile = u.query.get("passfile")
    if isinstance(passfile, str):
        try:
            mode = Path(passfile).stat().st_mode
        except OSError as e:
            raise CloudError(f"the database passfile {passfile}: {e.strerror}") from None
        if mode & 0o077:
            raise CloudError(f"the database passfile {passfile} can be read by others (mode {mode & 0o777:o}): "
                             f"chmod 600 {passfile}")
    return u.set(username=role).render_as_string(hide_password=False)
