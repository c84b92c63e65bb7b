"""A real, throwaway PostgreSQL server for the store's tests and benches (Debian's postgresql-15,
installed by scripts/bootstrap.sh).

`PgServer` makes a cluster with ``initdb`` in a new private directory under /tmp and runs
``postgres`` on it, listening on a Unix socket in that directory only (``listen_addresses=''``:
no TCP port, nothing another helper or host can reach, no port to pick). PostgreSQL refuses to
run as root: when the suite runs as root the cluster belongs to, and the server runs as, the
unprivileged ``nobody``. Local connections are trusted (the socket's directory is 0700, its
owner's and root's only); the bootstrap superuser is ``postgres``.

Not a production server: with ``durable=False`` (the tests) ``fsync``, ``full_page_writes`` and
``synchronous_commit`` are off, since a test's database is thrown away and its durability is
not what the store's tests check (the acknowledgement's durability is SQLite's test,
`test_receiver_ack.py`, and PostgreSQL's default settings keep it). The benches run with the
defaults (``durable=True``): fsync at every commit, as in production.

Stopped with SIGQUIT (immediate shutdown), its directory then removed; a test run that is killed
takes its server with it (the parent-death signal).
"""

from __future__ import annotations

import ctypes
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

VERSIONS = ("15", "16", "17")  # Debian 12's first
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: the child after fork only calls it


class PgServerError(Exception):
    """The test server could not be made or started (the message says why)."""


def bindir() -> Path:
    """Where Debian's PostgreSQL programs are (the newest of `VERSIONS` installed)."""
    for v in VERSIONS:
        d = Path(f"/usr/lib/postgresql/{v}/bin")
        if (d / "postgres").exists():
            return d
    raise PgServerError("PostgreSQL is not installed (/usr/lib/postgresql/15/bin): run 'make bootstrap'")


class PgServer:
    """One cluster in a private temporary directory. The constructor does no I/O."""

    SUPERUSER = "postgres"

    def __init__(self, *, durable: bool = False, settings: dict[str, str] | None = None) -> None:
        self.durable = durable
        self.settings = dict(settings or {})
        self.dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_dir(self) -> Path:
        assert self.dir is not None, "not started"
        return self.dir / "run"

    @property
    def pid(self) -> int:
        """The postmaster's process id (its children are the server's other processes)."""
        assert self._proc is not None, "not started"
        return self._proc.pid

    def url(self, database: str = "postgres", user: str = SUPERUSER) -> str:
        """A SQLAlchemy URL to `database` as `user`, over the Unix socket (no password)."""
        return f"postgresql+psycopg://{user}@/{database}?host={self.socket_dir}"

    def start(self, timeout: float = 60.0) -> None:
        """initdb, then start the server and wait until it accepts connections."""
        bins = bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="boxcloud-pg-"))
        data, run = self.dir / "data", self.dir / "run"
        data.mkdir(mode=0o700)
        run.mkdir(mode=0o700)
        user = _unprivileged()
        if user is not None:
            for p in (self.dir, data, run):
                os.chown(p, user.pw_uid, user.pw_gid)
        log = self.dir / "server.log"
        uid, gid = (user.pw_uid, user.pw_gid) if user is not None else (None, None)
        groups: list[int] | None = [] if user is not None else None
        init = subprocess.run([str(bins / "initdb"), "-D", str(data), "-U", self.SUPERUSER, "-A", "trust",
                               "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"],
                              capture_output=True, check=False, user=uid, group=gid, extra_groups=groups)
        if init.returncode != 0:
            raise PgServerError(f"initdb failed: {init.stderr.decode(errors='replace').strip()[-500:]}")
        conf = {"listen_addresses": "''", "unix_socket_directories": f"'{run}'", "unix_socket_permissions": "0700",
                "max_connections": "200", "logging_collector": "off"}
        if not self.durable:
            conf |= {"fsync": "off", "full_page_writes": "off", "synchronous_commit": "off"}
        conf |= self.settings
        with (data / "postgresql.conf").open("a") as f:
            f.writelines(f"{k} = {v}\n" for k, v in conf.items())
        with log.open("wb") as out:
            self._proc = subprocess.Popen([str(bins / "postgres"), "-D", str(data)], stdout=out,
                                          stderr=subprocess.STDOUT, start_new_session=True, user=uid, group=gid,
                                          extra_groups=groups,
                                          preexec_fn=_die_with_parent)  # noqa: PLW1509 - one prctl, no lock
        deadline = time.monotonic() + timeout
        while not (run / ".s.PGSQL.5432").exists() or not self._ready():
            if self._proc.poll() is not None:
                raise PgServerError(f"postgres exited: {log.read_text(errors='replace').strip()[-800:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise PgServerError(f"postgres did not accept connections within {timeout:.0f} s")
            time.sleep(0.05)

    def _ready(self) -> bool:
        engine = sa.create_engine(self.url(), poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as c:
                c.exec_driver_sql("SELECT 1")
            return True
        except sa.exc.OperationalError:
            return False
        finally:
            engine.dispose()

    def admin(self) -> sa.Engine:
        """An engine as the superuser on the database ``postgres`` (autocommit: CREATE DATABASE)."""
        return sa.create_engine(self.url(), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)

    @contextmanager
    def database(self, prefix: str = "store_test") -> Iterator[str]:
        """A new, empty database (its URL, as the superuser), dropped afterwards."""
        name = f"{prefix}_{secrets.token_hex(4)}"
        admin = self.admin()
        with admin.connect() as c:
            c.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE template0')
        try:
            yield self.url(name)
        finally:
            with admin.connect() as c:
                c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()

    def stop(self) -> None:
        """Stop the server at once (SIGQUIT) and remove its directory."""
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGQUIT)
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(10)
        self._proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> PgServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the server's process, after its user is set: an immediate shutdown (SIGQUIT) when the
    test process that started it dies, so that a killed run leaves no server behind."""
    _LIBC.prctl(1, signal.SIGQUIT, 0, 0, 0)  # PR_SET_PDEATHSIG


def _unprivileged() -> pwd.struct_passwd | None:
    """The user the cluster runs as when we are root (PostgreSQL refuses root), else None (ourselves)."""
    return pwd.getpwnam("nobody") if os.geteuid() == 0 else None
