"""The `boxctl` command: the installer's tool on the Box.

    boxctl provision --server https://HOST:PORT (--token - | --token-file F | --token T) [--ca FILE]
                     [--serial S] [--force]
    boxctl status [--json]
    boxctl scan modbus-tcp HOST[:PORT] [--units 1-247] [--table holding] [--addresses 0-99] [--export F]
    boxctl scan modbus-rtu PORT [--baud 9600] [--parity N] [--stopbits 1] [--bytesize 8] [...same]
    boxctl discover bacnet --interface IF [--timeout 3] [--objects] [--export F]
    boxctl read POINT [--config /etc/boxd/boxd.toml]
    boxctl import-points FILE [--config /etc/boxd/boxd.toml]
    boxctl modem status [--json] [--config /etc/boxd/boxd.toml]
    boxctl modem watch [--count N] [--config /etc/boxd/boxd.toml]

`provision` and `status` take `--state-dir` (default /var/lib/boxd). Every failure is one line in an
installer's words and a non-zero exit (`EXITS`); never a traceback. Only what a subcommand needs
is imported (the cryptography package to enroll, paho for the status check, the drivers for the
field tools): this runs on a small Box.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path

from boxd import __version__
from boxkit import clikit
from proto import names
from provisioning.errors import ProvisionError
from trust import identity
from trust.errors import EnrollError, IdentityError

DEFAULT_STATE = Path("/var/lib/boxd")
DEFAULT_CA = Path("/usr/share/boxd/platform-ca.crt")  # shipped in the Box image
DEFAULT_CONFIG = Path("/etc/boxd/boxd.toml")
EXITS = """  0   done; everything checked is fine
  1   it did not work, or a check found a problem: the message says what and what to do
  2   bad arguments
  130 interrupted (Ctrl-C); nothing was changed
  70  an unexpected error (a bug: please report it)"""


def _parser() -> argparse.ArgumentParser:
    p = clikit.Parser(prog="boxctl", description="Install and check a Box: identity, status, field-bus scans, "
                                                 "point checks.",
                      epilog=clikit.epilog(["boxctl status", "boxctl --state-dir demo-data/box status",
                                            "boxctl scan modbus-tcp 192.168.10.20 --units 1-10"], EXITS))
    p.add_argument("--version", action="version", version=f"boxctl {__version__}")
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE, help="the Box's state (default %(default)s)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    pr = clikit.subcommand(sub, "provision", "give this Box its identity: key, certificate, platform address",
                           ["boxctl provision --server https://platform.example:8443 --token K7QD-3MZP-...",
                            "boxctl provision --server https://10.0.0.5:8443 --token K7QD-... --ca ./platform-ca.crt"],
                           exits=EXITS)
    pr.add_argument("--server", required=True, help="the enrollment address, e.g. https://platform.example:8443")
    tok = pr.add_mutually_exclusive_group(required=True)
    tok.add_argument("--token", help="the enrollment token from 'boxcloud box add'; '-' reads it from standard "
                                     "input (asked for on a terminal), so that it never shows in the process list")
    tok.add_argument("--token-file", type=Path, help="read the enrollment token from this file")
    pr.add_argument("--ca", type=Path, default=DEFAULT_CA, help="the platform CA (default %(default)s)")
    pr.add_argument("--serial", help="this Box's serial; the platform checks it matches the token")
    pr.add_argument("--force", action="store_true", help="replace an existing identity")
    st = clikit.subcommand(sub, "status", "identity, certificate expiry, the daemon's link, configuration and "
                                          "buses, and a live check of the platform",
                           ["boxctl status", "boxctl --state-dir demo-data/box status", "boxctl status --json"],
                           exits=EXITS)
    st.add_argument("--json", action="store_true", help="one JSON object (see the README for the fields)")
    scan = sub.add_parser("scan", help="find Modbus units and registers", description="Find Modbus units and "
                          "registers.", epilog=clikit.epilog(["boxctl scan modbus-tcp 192.168.10.20",
                                                              "boxctl scan modbus-rtu /dev/ttyUSB0 --baud 19200"],
                                                             EXITS)).add_subparsers(dest="bus", required=True,
                                                                                    metavar="BUS")
    tcp = clikit.subcommand(scan, "modbus-tcp", "scan a Modbus TCP device or gateway",
                            ["boxctl scan modbus-tcp 192.168.10.20", "boxctl scan modbus-tcp 10.0.0.7:1502 --units "
                             "1-10 --addresses 0-199 --export found.toml --device ahu1"], exits=EXITS)
    tcp.add_argument("host", help="HOST or HOST:PORT (default port 502)")
    rtu = clikit.subcommand(scan, "modbus-rtu", "scan a Modbus RTU serial line (stop boxd first: it owns the port)",
                            ["boxctl scan modbus-rtu /dev/ttyUSB0", "boxctl scan modbus-rtu /dev/ttyUSB0 --baud 19200 "
                             "--parity E --units 1-20 --export line1.toml"], exits=EXITS)
    rtu.add_argument("port", help="the serial device, e.g. /dev/ttyUSB0")
    rtu.add_argument("--baud", type=int, default=9600, choices=[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200],
                     metavar="BAUD", help="1200..115200 (default %(default)s)")
    rtu.add_argument("--parity", choices=["N", "E", "O"], default="N")
    rtu.add_argument("--stopbits", type=int, choices=[1, 2], default=1)
    rtu.add_argument("--bytesize", type=int, choices=[8], default=8, help="always 8 for Modbus RTU")
    for s in (tcp, rtu):
        s.add_argument("--units", default="1-247" if s is rtu else "1", help="unit ids to probe, e.g. 1-10,17")
        s.add_argument("--table", choices=["holding", "input", "coil", "discrete"], default="holding")
        s.add_argument("--addresses", default="0-99", help="address range to scan (default %(default)s)")
        s.add_argument("--export", type=Path, help="write what was found as an editable point list (TOML)")
        s.add_argument("--device", default="dev", help="device name in the export (default %(default)s)")
    disc = sub.add_parser("discover", help="find BACnet/IP devices and objects",
                          description="Find BACnet/IP devices and objects.",
                          epilog=clikit.epilog(["boxctl discover bacnet --interface fieldbus0 --objects"], EXITS))
    bac = clikit.subcommand(disc.add_subparsers(dest="bus", required=True, metavar="BUS"), "bacnet",
                            "Who-Is on the field-bus interface",
                            ["boxctl discover bacnet --interface fieldbus0",
                             "boxctl discover bacnet --interface eth1 --timeout 5 --objects --export bacnet.toml"],
                            exits=EXITS)
    bac.add_argument("--interface", required=True, help="the field-bus network interface, e.g. eth1")
    bac.add_argument("--timeout", type=_seconds, default=3.0, help="seconds to collect I-Am answers, 0.1..600")
    bac.add_argument("--objects", action="store_true", help="also read each device's objects")
    bac.add_argument("--export", type=Path, help="write devices and objects as an editable point list (TOML)")
    rd = clikit.subcommand(sub, "read", "read one configured point now (check wiring and addressing)",
                           ["boxctl read ahu1.supply_temp", "boxctl read meter1.energy --config ./boxd.toml"],
                           exits=EXITS)
    rd.add_argument("point", help="<device>.<point>, as in the configuration")
    rd.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the configuration (default %(default)s)")
    imp = clikit.subcommand(sub, "import-points", "append an exported point list to the configuration, only if "
                                                  "the result is valid",
                            ["boxctl import-points found.toml", "boxctl import-points found.toml --config ./boxd.toml"],
                            exits=EXITS)
    modem = sub.add_parser("modem", help="the 4G modem: status, and the signal for placing the antenna",
                           description="The 4G modem: status, and the signal for placing the antenna.",
                           epilog=clikit.epilog(["boxctl modem status", "boxctl modem watch"], EXITS))
    msub = modem.add_subparsers(dest="modem_cmd", required=True, metavar="ACTION")
    ms = clikit.subcommand(msub, "status", "SIM, registration, operator, signal with its grade, data used, the last "
                                          "recovery and why",
                           ["boxctl modem status", "boxctl --state-dir demo-data/box modem status --json"],
                           exits=EXITS.replace("done; everything checked is fine", "the modem carries data")
                           .replace("it did not work, or a check found a problem", "the modem carries no data, or a "
                                    "problem"))
    ms.add_argument("--json", action="store_true", help="one JSON object")
    mw = clikit.subcommand(msub, "watch", "the signal once a second with a grade (excellent, good, fair, poor), "
                                         "for placing the antenna; Ctrl-C ends",
                           ["boxctl modem watch", "boxctl modem watch --count 10"], exits=EXITS)
    mw.add_argument("--count", type=clikit.count(1, 86400), help="stop after this many lines, 1..86400")
    for m in (ms, mw):
        m.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                       help="the configuration, when boxd is not running (default %(default)s)")
    imp.add_argument("file", type=Path)
    imp.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                     help="the configuration to add to; it must exist (default %(default)s)")
    return p


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.1 <= value <= 600:
        raise argparse.ArgumentTypeError(f"not a number of seconds from 0.1 to 600: {text!r}")
    return value


def _field(args: argparse.Namespace) -> int:
    from provisioning import _fieldtools as ft

    if args.cmd == "read":
        return ft.read_point(args.config, args.point)
    if args.cmd == "import-points":
        return ft.import_points(args.config, args.file)
    if args.export is not None:
        ft.check_writable(args.export)  # before the scan: its result must not be lost to a typo
    if args.cmd == "discover":
        return ft.discover_bacnet(args.interface, args.timeout, args.objects, args.export)
    from drivers.modbus.scan import RtuTarget, TcpTarget

    units = ft.parse_range(args.units, 0, 247, "unit ids")
    addresses = ft.parse_range(args.addresses, 0, 65535, "addresses")
    if args.bus == "modbus-tcp":
        host, _, port = args.host.partition(":")
        if not names.is_host(host):
            raise ProvisionError(f"{args.host!r} is not a host: give an IP address or a name, e.g. 192.168.10.20 "
                                 "or 192.168.10.20:502")
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


def _status(args: argparse.Namespace) -> int:
    from provisioning._status import status  # paho: only for the status check

    report = status(args.state_dir, identity.load(args.state_dir))
    if args.json:
        print(json.dumps(report.doc, indent=1))
    else:
        print("\n".join(report.lines))
    return 0 if report.ok else 1


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd in ("scan", "discover", "read", "import-points"):
            return _field(args)
        if args.cmd == "modem":
            from provisioning import _modem  # the drivers: only for the modem commands

            if args.modem_cmd == "watch":
                return _modem.watch(args.state_dir, args.config, args.count)
            return _modem.status(args.state_dir, args.config, args.json)
        if args.cmd == "provision":
            from trust.enroll import enroll  # the cryptography package: only to enroll

            box_id = enroll(args.state_dir, args.server, _token(args), args.ca, args.serial, force=args.force)
            ident = identity.load(args.state_dir)
            print(f"Provisioned: this Box is {box_id}; certificate valid until "
                  f"{ident.not_after():%Y-%m-%d}; platform {ident.broker_host}:{ident.broker_port}.")
            return 0
        return _status(args)
    except (ProvisionError, EnrollError, IdentityError) as e:
        print(f"boxctl: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("boxctl: interrupted; nothing was changed", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `boxctl` command."""
    return clikit.run_main("boxctl", lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
