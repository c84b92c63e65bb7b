"""The `boxctl` command: the installer's tool on the Box.

    boxctl provision --server https://HOST:PORT (--token - | --token-file F | --token T) [--ca FILE]
                     [--serial S] [--force]
    boxctl status
    boxctl scan modbus-tcp HOST[:PORT] [--units 1-247] [--table holding] [--addresses 0-99] [--export F]
    boxctl scan modbus-rtu PORT [--baud 9600] [--parity N] [--stopbits 1] [--bytesize 8] [...same]
    boxctl discover bacnet --interface IF [--timeout 3] [--objects] [--export F]
    boxctl read POINT [--config /etc/boxd/boxd.toml]
    boxctl import-points FILE [--config /etc/boxd/boxd.toml]

`provision` and `status` take `--state-dir` (default /var/lib/boxd). Every failure is one line in an
installer's words and a non-zero exit; never a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from boxd import identity
from boxd.errors import IdentityError
from provisioning._enroll import enroll
from provisioning._status import status
from provisioning.errors import ProvisionError

DEFAULT_STATE = Path("/var/lib/boxd")
DEFAULT_CA = Path("/usr/share/boxd/platform-ca.crt")  # shipped in the Box image
DEFAULT_CONFIG = Path("/etc/boxd/boxd.toml")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="boxctl", description="Install and check a Box.")
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE, help="the Box's state (default %(default)s)")
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("provision", help="give this Box its identity: key, certificate, platform address")
    pr.add_argument("--server", required=True, help="the enrollment address, e.g. https://platform.example:8443")
    tok = pr.add_mutually_exclusive_group(required=True)
    tok.add_argument("--token", help="the enrollment token from 'boxcloud box add'; '-' reads it from standard "
                                     "input (asked for on a terminal), so that it never shows in the process list")
    tok.add_argument("--token-file", type=Path, help="read the enrollment token from this file")
    pr.add_argument("--ca", type=Path, default=DEFAULT_CA, help="the platform CA (default %(default)s)")
    pr.add_argument("--serial", help="this Box's serial; the platform checks it matches the token")
    pr.add_argument("--force", action="store_true", help="replace an existing identity")
    sub.add_parser("status", help="identity, certificate expiry, daemon and live connectivity")
    scan = sub.add_parser("scan", help="find Modbus units and registers").add_subparsers(dest="bus", required=True)
    tcp = scan.add_parser("modbus-tcp", help="scan a Modbus TCP device or gateway")
    tcp.add_argument("host", help="HOST or HOST:PORT (default port 502)")
    rtu = scan.add_parser("modbus-rtu", help="scan a Modbus RTU serial line (stop boxd first: it owns the port)")
    rtu.add_argument("port", help="the serial device, e.g. /dev/ttyUSB0")
    rtu.add_argument("--baud", type=int, default=9600)
    rtu.add_argument("--parity", choices=["N", "E", "O"], default="N")
    rtu.add_argument("--stopbits", type=int, choices=[1, 2], default=1)
    rtu.add_argument("--bytesize", type=int, choices=[8], default=8, help="always 8 for Modbus RTU")
    for s in (tcp, rtu):
        s.add_argument("--units", default="1-247" if s is rtu else "1", help="unit ids to probe, e.g. 1-10,17")
        s.add_argument("--table", choices=["holding", "input", "coil", "discrete"], default="holding")
        s.add_argument("--addresses", default="0-99", help="address range to scan (default %(default)s)")
        s.add_argument("--export", type=Path, help="write what was found as an editable point list (TOML)")
        s.add_argument("--device", default="dev", help="device name in the export (default %(default)s)")
    disc = sub.add_parser("discover", help="find BACnet/IP devices and objects")
    bac = disc.add_subparsers(dest="bus", required=True).add_parser("bacnet", help="Who-Is on the field-bus interface")
    bac.add_argument("--interface", required=True, help="the field-bus network interface, e.g. eth1")
    bac.add_argument("--timeout", type=float, default=3.0, help="seconds to collect I-Am answers")
    bac.add_argument("--objects", action="store_true", help="also read each device's objects")
    bac.add_argument("--export", type=Path, help="write devices and objects as an editable point list (TOML)")
    rd = sub.add_parser("read", help="read one configured point now (check wiring and addressing)")
    rd.add_argument("point", help="<device>.<point>, as in the configuration")
    rd.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    imp = sub.add_parser("import-points", help="append an exported point list to the configuration")
    imp.add_argument("file", type=Path)
    imp.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    return p


def _field(args: argparse.Namespace) -> int:
    from provisioning import _fieldtools as ft

    if args.cmd == "read":
        return ft.read_point(args.config, args.point)
    if args.cmd == "import-points":
        return ft.import_points(args.config, args.file)
    if args.cmd == "discover":
        return ft.discover_bacnet(args.interface, args.timeout, args.objects, args.export)
    from drivers.modbus.scan import RtuTarget, TcpTarget

    units = ft.parse_range(args.units, 0, 247, "unit ids")
    addresses = ft.parse_range(args.addresses, 0, 65535, "addresses")
    if args.bus == "modbus-tcp":
        host, _, port = args.host.partition(":")
        target: TcpTarget | RtuTarget = TcpTarget(host, int(ft.parse_range(port or "502", 1, 65535, "port")[0]))
    else:
        target = RtuTarget(args.port, args.baud, args.parity, args.stopbits, args.bytesize)
    return ft.scan_modbus(target, units, args.table, addresses, export=args.export, device=args.device,
                          rtu=args.bus == "modbus-rtu")


def _token(args: argparse.Namespace) -> str:
    """The enrollment token: from --token-file, standard input (--token -), or --token itself."""
    text: str
    if args.token_file is not None:
        try:
            text = args.token_file.read_text(encoding="utf-8", errors="replace")[:1024]
        except OSError as e:
            raise ProvisionError(f"cannot read the token file {args.token_file}: {e.strerror or e}") from None
    elif args.token == "-":  # noqa: S105 - "read it from standard input", not a secret
        text = getpass.getpass("Enrollment token: ") if sys.stdin.isatty() else sys.stdin.readline(1024)
    else:
        text = args.token
    token = text.strip()
    if not token:
        raise ProvisionError("no enrollment token was given")
    return token


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `boxctl` command."""
    args = _parser().parse_args(argv)
    try:
        if args.cmd in ("scan", "discover", "read", "import-points"):
            return _field(args)
        if args.cmd == "provision":
            box_id = enroll(args.state_dir, args.server, _token(args), args.ca, args.serial, force=args.force)
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
