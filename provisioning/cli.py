"""The `boxctl` command: the installer's tool on the Box.

    boxctl provision --server https://HOST:PORT --token TOKEN [--ca FILE] [--serial S] [--force]
    boxctl status

Both take `--state-dir` (default /var/lib/boxd). Every failure is one line in an
installer's words and a non-zero exit; never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from boxd import identity
from boxd.errors import IdentityError
from provisioning._enroll import enroll
from provisioning._status import status
from provisioning.errors import ProvisionError

DEFAULT_STATE = Path("/var/lib/boxd")
DEFAULT_CA = Path("/usr/share/boxd/platform-ca.crt")  # shipped in the Box image


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="boxctl", description="Install and check a Box.")
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE, help="the Box's state (default %(default)s)")
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("provision", help="give this Box its identity: key, certificate, platform address")
    pr.add_argument("--server", required=True, help="the enrollment address, e.g. https://platform.example:8443")
    pr.add_argument("--token", required=True, help="the enrollment token from 'boxcloud box add'")
    pr.add_argument("--ca", type=Path, default=DEFAULT_CA, help="the platform CA (default %(default)s)")
    pr.add_argument("--serial", help="this Box's serial; the platform checks it matches the token")
    pr.add_argument("--force", action="store_true", help="replace an existing identity")
    sub.add_parser("status", help="identity, certificate expiry, daemon and live connectivity")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `boxctl` command."""
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "provision":
            box_id = enroll(args.state_dir, args.server, args.token, args.ca, args.serial, force=args.force)
            ident = identity.load(args.state_dir)
            print(f"Provisioned: this Box is {box_id}; certificate valid until "
                  f"{ident.not_after():%Y-%m-%d}; platform {ident.broker_host}:{ident.broker_port}.")
            return 0
        report = status(args.state_dir, identity.load(args.state_dir))
        print("\n".join(report.lines))
        return 0 if report.ok else 1
    except (ProvisionError, IdentityError) as e:
        print(f"boxctl: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("boxctl: interrupted; nothing was changed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
