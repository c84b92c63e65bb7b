"""A customer's own Mosquitto, as `make demo` and the MQTT connector's tests run one: its password file
and its configuration. Files only; the process is the caller's (`cloud.demo_broker`,
`tests.support.mqttkit`).

What it knows: the password file is written in plain text (0600) and hashed in place by
`mosquitto_passwd -U`, so no password is ever on a command line; a TLS listener takes the
certificate chain of the customer's CA and TLS >= 1.2 only; one password file for the whole broker
(`per_listener_settings` would lose restored sessions' subscriptions across a restart in Mosquitto
2.0.11), anonymous clients refused. Not here: the CA (`cloud.pki.Pki`), the platform's own broker
(`cloud.broker`, dynamic security and mutual TLS).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from boxkit.files import write_secret


def mosquitto() -> str:
    """The Mosquitto executable (Debian's package puts it in /usr/sbin)."""
    return shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def write_passwords(path: Path, users: Mapping[str, str]) -> None:
    """Mosquitto's password file at `path` (0600) for `users` (name -> password), hashed.

    Raises:
        OSError: the file cannot be written, or mosquitto_passwd failed (its message said).
    """
    write_secret(path, "".join(f"{u}:{p}\n" for u, p in users.items()).encode())
    r = subprocess.run(["mosquitto_passwd", "-U", str(path)], capture_output=True, text=True, timeout=30,
                       check=False)
    if r.returncode:
        raise OSError(f"mosquitto_passwd -U {path}: {(r.stderr or r.stdout).strip()}")


def tls(ca_file: Path, cert: Path, key: Path) -> str:
    """The lines of a TLS listener: the server's chain, its key, clients checked against `ca_file`."""
    return f"cafile {ca_file}\ncertfile {cert}\nkeyfile {key}\ntls_version tlsv1.2\n"


def config(passwords: Path, listeners: Sequence[str], *, persistence: Path | None = None) -> str:
    """mosquitto.conf: `listeners` (each a "listener ..." line and its options), the password file, no
    anonymous client, logs on stderr; sessions saved every second in `persistence` when given."""
    head = "user root\n" if os.geteuid() == 0 else ""  # our files are 0600: as root, stay root to read them
    if persistence is not None:
        head += (f"persistence true\npersistence_location {persistence}/\nautosave_interval 1\n"
                 "max_queued_messages 1000000\nmax_inflight_messages 100\n")
    return (head + f"log_dest stderr\npassword_file {passwords}\nallow_anonymous false\n"
            + "".join(block if block.endswith("\n") else block + "\n" for block in listeners))
