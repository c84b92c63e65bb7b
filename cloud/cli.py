"""The `boxcloud` command: the reference cloud and its administration.

    boxcloud init [--host NAME] [--broker-port N] [--enroll-port N] [--bind ADDR] [--name NAME ...]
                  [--webhook-allow-network CIDR ...] [--webhook-port N ...] [--webhook-ca PEM]
                  [--mqtt-allow-network CIDR ...] [--mqtt-port N ...]
    boxcloud run [--receivers N]      broker + receiver(s) + enrollment, until Ctrl-C
    boxcloud receive --member N [--group G]   one receiver of a shared subscription group (cloud._receive_cli)
    boxcloud box add|list|show|revoke|decommission|tag|untag ...      (cloud._box_cli)
    boxcloud token list|cancel ...  /  boxcloud pki reissue broker|enroll  (cloud._security_cli)
    boxcloud alerts [list] [--all] [--box ID] | alerts ack ID ...       (cloud._box_cli)
    boxcloud config push|show|get|diff ...  /  boxcloud cmd ...          (cloud._config_cli)
    boxcloud release build|publish|list|rotate-key  /  deploy create|list|show|watch|stop  (cloud._deploy_cli)
    boxcloud account create|list|assign / user list|password|reset-2fa / key create / audit verify|list
                                                                          (cloud._users_cli: the users' API)

`config push` and `cmd` queue what they send in the cloud's database; the running
`boxcloud run` publishes it (a configuration retained, so a Box that is offline gets the
latest one when it comes back) and stores the Box's answer, which they wait for and show.
Deployments are recorded the same way; the running cloud sends them wave by wave
(see `cloud.deploy`) and keeps the TUF metadata from expiring.

Every command takes `--home DIR` (default $BOXCLOUD_HOME or /var/lib/boxcloud) and, but
`init`, refuses a home where no cloud was created. Errors are one line on stderr and a
non-zero exit (`EXITS`), never a traceback; list and show commands take `--json`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import re
import signal
import sys
import threading
from pathlib import Path

from boxkit import clikit
from boxkit.errors import AlreadyRunningError
from boxkit.files import pid_lock
from cloud import _box_cli, _config_cli, _deploy_cli, _receive_cli, _security_cli, _users_cli
from cloud import _out as out
from cloud.errors import CloudError, NothingChangedError
from cloud.platform import Cloud, Settings

DEFAULT_HOME = Path(os.environ.get("BOXCLOUD_HOME", "/var/lib/boxcloud"))
EXITS = """  0   done (or nothing needed changing: then it says so)
  1   refused: the message says why (no cloud in --home, unknown id, not valid, port in use, ...)
  2   bad arguments
  3   no answer within --wait or --timeout (what was sent stays queued until it expires)
  4   the Box or the rollout said no: rejected, rolled back, failed; a deployment halted or stopped
  5   config diff: the file differs from the configuration the Box runs
  70  an unexpected error (a bug: please report it)"""


def duration(text: str) -> float:
    """'90', '30s', '5m', '72h', '7d' -> seconds (argparse type)."""
    m = re.fullmatch(r"(\d{1,9})\s*([smhd]?)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30s, 5m, 72h, 7d)")
    return int(m[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]]


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r} (1..65535)")
    return int(text)


def _version() -> str:
    """The installed release's version (the cloud never imports the Box's `boxd`, whose it is)."""
    try:
        return importlib.metadata.version("boxd")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    p = clikit.Parser(prog="boxcloud", description="The Box reference cloud: CA and enrollment, a Mosquitto broker "
                                                   "with per-Box ACL and CRL, receiver and storage, configurations, "
                                                   "commands and software deployments.",
                      epilog=clikit.epilog(["boxcloud --home /srv/cloud init --host cloud.example.com",
                                            "boxcloud --home /srv/cloud run",
                                            "boxcloud --home demo-data/cloud box list"], EXITS))
    p.add_argument("--version", action="version", version=f"boxcloud {_version()}")
    p.add_argument("--home", type=Path, default=DEFAULT_HOME,
                   help="the cloud's state directory (default $BOXCLOUD_HOME or /var/lib/boxcloud; now %(default)s)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    i = clikit.subcommand(sub, "init", "create the platform CA, server certificates, TUF repository, settings "
                                       "and database",
                          ["boxcloud --home /srv/cloud init --host cloud.example.com",
                           "boxcloud --home /tmp/c init --broker-port 18883 --enroll-port 18443 --bind 127.0.0.1",
                           "boxcloud --home /srv/cloud init --database 'postgresql+psycopg:///boxcloud?"
                           "host=/run/postgresql'",
                           "boxcloud --home /srv/cloud init --webhook-allow-network 10.20.0.0/16 --webhook-ca ca.pem"],
                          exits=EXITS)
    i.add_argument("--host", default="localhost", help="the name Boxes use to reach the cloud (default %(default)s)")
    i.add_argument("--broker-port", type=_port, default=8883, help="MQTT over TLS (default %(default)s)")
    i.add_argument("--enroll-port", type=_port, default=8443, help="HTTPS enrollment and updates (default %(default)s)")
    i.add_argument("--api-port", type=_port, default=9443,
                   help="the users' API, HTTPS with Basic or API keys (default %(default)s)")
    i.add_argument("--bind", default="", help="the IP address to listen on (default: all)")
    i.add_argument("--name", action="append", default=[], help="another DNS name or IP for the server certificates")
    i.add_argument("--database", default="", metavar="URL",
                   help="a PostgreSQL database instead of SQLite's <home>/cloud.db, on this host's Unix socket "
                        "(postgresql+psycopg:///boxcloud?host=/run/postgresql), no user or password in it: each "
                        "service connects as its own role (README, 'PostgreSQL')")
    i.add_argument("--database-role-prefix", default="boxcloud", metavar="NAME",
                   help="the services' roles are NAME_owner, NAME_admin, NAME_receiver, NAME_api (default %(default)s)")
    i.add_argument("--webhook-allow-network", action="append", default=[], metavar="CIDR",
                   help="a private network of yours that webhooks may be sent to (e.g. 10.20.0.0/16; repeat for "
                        "more; default none: public addresses only). A risk: anyone with connector.manage can "
                        "then make the platform POST there (docs/integrations.md); metadata and link-local "
                        "addresses stay refused")
    i.add_argument("--webhook-port", action="append", type=_port, default=[], metavar="N",
                   help="a port webhooks may be sent to (repeat; default 443 and 8443)")
    i.add_argument("--webhook-ca", default="", metavar="PEM",
                   help="trust anchors for endpoints' certificates besides the system's (a private CA)")
    i.add_argument("--webhook-outbox-mb", type=int, default=256, metavar="MIB",
                   help="each connector's outbox cap: past it the oldest items go, counted and alerted "
                        "(default %(default)s)")
    i.add_argument("--mqtt-allow-network", action="append", default=[], metavar="CIDR",
                   help="a private network of yours where MQTT connectors' brokers may be (as --webhook-allow-network, "
                        "for MQTT connectors only; default none: public addresses only)")
    i.add_argument("--mqtt-port", action="append", type=_port, default=[], metavar="N",
                   help="a port MQTT connectors may connect to (repeat; default 8883 and 8884)")
    run = clikit.subcommand(sub, "run", "upgrade the database if it is older, then run the broker, the "
                                       "receiver(s) and the enrollment endpoint until Ctrl-C",
                            ["boxcloud --home /srv/cloud run", "boxcloud --home /srv/cloud run --receivers 3"],
                            exits=EXITS)
    _receive_cli.add_run_options(run)
    _receive_cli.add_parsers(sub, EXITS)
    _box_cli.add_parsers(sub, duration, EXITS)
    _config_cli.add_parsers(sub, duration, EXITS)
    _deploy_cli.add_parsers(sub, duration, EXITS)
    _security_cli.add_parsers(sub, EXITS)
    _users_cli.add_parsers(sub, EXITS)
    return p


def cmd_init(cloud: Cloud, args: argparse.Namespace) -> int:
    """Create a cloud in --home."""
    cloud.init(Settings(args.host, args.broker_port, args.enroll_port, args.bind, args.api_port, args.database,
                        args.database_role_prefix, tuple(args.webhook_allow_network),
                        tuple(args.webhook_port or (443, 8443)),
                        str(Path(args.webhook_ca).resolve()) if args.webhook_ca else "", args.webhook_outbox_mb,
                        tuple(args.mqtt_allow_network), tuple(args.mqtt_port or (8883, 8884))),
               args.name)
    out.line(f"Cloud created in {args.home}.")
    out.line(f"Ship this platform CA with every Box: {cloud.pki.root_cert}")
    out.line(f"Move {cloud.pki.root_key} and {cloud.ota_keys / 'offline'} offline (needed only to sign a new "
             "issuing CA or rotate a TUF key).")
    out.line(f"Start it with: boxcloud --home {args.home} run")
    return 0


def cmd_run(cloud: Cloud, receivers: int = 1) -> int:
    """Run the services until SIGINT/SIGTERM; one `run` per home."""
    try:
        lock = pid_lock(cloud.home / "run.lock")  # noqa: F841 - held for the process's life
    except AlreadyRunningError as e:
        raise CloudError(f"boxcloud is already running on {cloud.home} (pid {e.pid or '?'})") from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    cloud.start(receiver=receivers == 1)
    group = _receive_cli.Receivers(cloud.home, receivers if receivers > 1 else 0)
    s = cloud.settings
    print(f"boxcloud: broker on {s.host}:{s.broker_port} (mTLS), enrollment on https://{s.host}:{s.enroll_port}",
          flush=True)
    print(f"boxcloud: platform CA for Boxes: {cloud.pki.root_cert}", flush=True)
    print(f"boxcloud: users' API on https://{s.host}:{s.api_port}/v1 (docs: /v1/docs; its certificate is signed by "
          f"the platform CA {cloud.pki.root_cert}: give it to API clients, e.g. curl --cacert)", flush=True)
    try:
        group.supervise()
        while not stop.wait(1.0):
            cloud.supervise()
            group.supervise()
    finally:
        group.stop()
        cloud.stop()
    return 0


def _dispatch(cloud: Cloud, args: argparse.Namespace) -> int:
    if args.cmd == "init":
        return cmd_init(cloud, args)
    cloud.require()
    if args.cmd == "run":
        return cmd_run(cloud, args.receivers)
    if args.cmd == "receive":
        return _receive_cli.cmd_receive(cloud, args)
    if args.cmd in ("box", "alerts"):
        return _box_cli.run(cloud, args)
    if args.cmd in ("config", "cmd"):
        return _config_cli.run(cloud, args)
    if args.cmd == "token":
        return _security_cli.cmd_token(cloud, args)
    if args.cmd == "pki":
        return _security_cli.cmd_pki(cloud, args)
    if args.cmd in ("account", "user", "key", "audit"):
        return _users_cli.run(cloud, args)
    if args.cmd == "release":
        return _deploy_cli.cmd_release(cloud, args)
    return _deploy_cli.cmd_deploy(cloud, args)


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    # logs go to stderr, and only `run` (a service) speaks at INFO: a command's output is its own
    logging.basicConfig(level=logging.INFO if args.cmd in ("run", "receive") else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cloud = Cloud(args.home)
    try:
        return _dispatch(cloud, args)
    except NothingChangedError as e:
        out.line(str(e))
        return 0
    except CloudError as e:
        reasons = getattr(e, "reasons", None)
        print(f"boxcloud: {e}" + (":" if reasons else ""), file=sys.stderr)
        for r in reasons or []:
            print(f"  - {r}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        raise  # clikit.run_main: the reader went away
    except OSError as e:
        where = f" {e.filename}" if e.filename else ""
        print(f"boxcloud: {e.strerror or e}:{where}".rstrip(":"), file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `boxcloud` command."""
    return clikit.run_main("boxcloud", lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
