"""First-boot enrollment of a Box image from the `boxd.enroll` system credential (boxd-enroll.service).

The credential (an SMBIOS type 11 string, imported by systemd into the system's credential
store, handed to this service in $CREDENTIALS_DIRECTORY) is a JSON object:
``{"server": "https://HOST:PORT", "token": "...", "serial": "..."}`` (serial optional).

It runs `boxctl provision`'s code in this process, so the one-time token is never on a command
line (where /proc/*/cmdline would show it) nor in the journal. It does not retry: a Box whose
enrollment failed stays unprovisioned and says so; the next boot tries again, or an installer
runs `boxctl provision`. Exit status: boxctl's (0 done, non-zero with one line saying why).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

MAX_BYTES = 4096


def _arguments(raw: bytes) -> list[str]:
    """The `boxctl provision` arguments from the credential's bytes; ValueError says what is wrong."""
    if len(raw) > MAX_BYTES:
        raise ValueError(f"over {MAX_BYTES} bytes")
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")  # noqa: TRY004 - one error type for every bad credential
    unknown = sorted(set(doc) - {"server", "token", "serial"})
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(unknown)}")
    server, token, serial = doc.get("server"), doc.get("token"), doc.get("serial")
    if not isinstance(server, str) or not server.startswith("https://"):
        raise ValueError("'server' must be an https:// address")
    if not isinstance(token, str) or not token:
        raise ValueError("'token' must be a non-empty string")
    args = ["--state-dir", "/var/lib/boxd", "provision", "--server", server, "--token", token]
    if serial is not None:
        if not isinstance(serial, str):
            raise ValueError("'serial' must be a string")
        args += ["--serial", serial]
    return args


def main() -> int:
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if not creds:
        print("boxd-enroll: no credentials directory (run by boxd-enroll.service)", file=sys.stderr)
        return 2
    try:
        args = _arguments((Path(creds) / "boxd.enroll").read_bytes())
    except (OSError, ValueError) as e:  # JSONDecodeError is a ValueError; its text quotes no content
        print(f"boxd-enroll: the boxd.enroll credential is unusable: {e}", file=sys.stderr)
        return 2
    from provisioning import cli

    return cli.main(args)


if __name__ == "__main__":
    sys.exit(main())
