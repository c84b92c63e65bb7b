"""The `boxcloud` command: the reference cloud and its administration.

    boxcloud init [--host NAME] [--broker-port N] [--enroll-port N] [--name NAME ...]
    boxcloud run                      broker + receiver + enrollment, until Ctrl-C
    boxcloud box add SERIAL [--ttl 72h] [--replace]
    boxcloud box list
    boxcloud box show BOX_ID [--history N]
    boxcloud box revoke BOX_ID
    boxcloud box tag BOX_ID TAG ...   /   boxcloud box untag BOX_ID TAG ...
    boxcloud token list [--json]  /  boxcloud token cancel SERIAL
    boxcloud pki reissue broker|enroll
    boxcloud alerts [--all] [--box BOX_ID]
    boxcloud config push BOX_ID FILE [--no-check] [--wait 30s]
    boxcloud config show BOX_ID [--history N]
    boxcloud cmd BOX_ID NAME [KEY=VALUE ...] [--ttl 5m] [--wait 30s]
    boxcloud cmd list BOX_ID
    boxcloud release build --version V [--hardware H ...] [-o FILE]
    boxcloud release publish BUNDLE
    boxcloud release list
    boxcloud deploy create TARGET (--box ID ... | --tag T) [--waves 1,10%,50%,100%]
                   [--max-failures N|P%] [--health-s S] [--box-timeout-s S] [--version V]
    boxcloud deploy list | show ID | watch ID [--timeout 30m] | stop ID [--reason TEXT]

`config push` and `cmd` queue what they send in the cloud's database; the running
`boxcloud run` publishes it (a configuration retained, so a Box that is offline gets the
latest one when it comes back) and stores the Box's answer, which they wait for and show.
Deployments are recorded the same way; the running cloud sends them wave by wave
(see `cloud.deploy`) and keeps the TUF metadata from expiring.

Every command takes `--home DIR` (default $BOXCLOUD_HOME or /var/lib/boxcloud).
Errors end with one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cloud import _deploy_cli, _security_cli
from cloud.errors import CloudError
from cloud.platform import Cloud, Settings
from cloud.store import CommandRow, ConfigRow
from drivers import Quality

DEFAULT_HOME = Path(os.environ.get("BOXCLOUD_HOME", "/var/lib/boxcloud"))


def _duration(text: str) -> float:
    m = re.fullmatch(r"(\d+)\s*([smhd]?)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30m, 72h, 7d)")
    return int(m[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]]


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r}")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="boxcloud", description="The Box reference cloud.")
    p.add_argument("--home", type=Path, default=DEFAULT_HOME, help="cloud state directory (default %(default)s)")
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("init", help="create the platform CA, server certificates and settings")
    i.add_argument("--host", default="localhost", help="name Boxes use to reach the cloud (default %(default)s)")
    i.add_argument("--broker-port", type=_port, default=8883)
    i.add_argument("--enroll-port", type=_port, default=8443)
    i.add_argument("--bind", default="", help="address to listen on (default: all)")
    i.add_argument("--name", action="append", default=[], help="another DNS name or IP for the server certificates")
    sub.add_parser("run", help="run the broker, the receiver and the enrollment endpoint until Ctrl-C")
    box = sub.add_parser("box", help="manage Boxes").add_subparsers(dest="box_cmd", required=True)
    a = box.add_parser("add", help="issue a single-use enrollment token for a Box serial")
    a.add_argument("serial")
    a.add_argument("--ttl", type=_duration, default=72 * 3600, help="token lifetime (default 72h)")
    a.add_argument("--replace", action="store_true",
                   help="the Box is enrolled: issue a token anyway (using it ends every certificate the Box has)")
    box.add_parser("list", help="list Boxes with their status")
    s = box.add_parser("show", help="show a Box: identity, status, history and latest values")
    s.add_argument("box_id")
    s.add_argument("--history", type=int, default=5, help="status changes to show (default %(default)s)")
    r = box.add_parser("revoke", help="revoke a Box's certificate and cut its session")
    r.add_argument("box_id")
    _deploy_cli.add_tag_parsers(box)
    al = sub.add_parser("alerts", help="list alerts: Boxes offline, silent, gaps, clocks, devices")
    al.add_argument("--all", action="store_true", help="closed alerts too")
    al.add_argument("--box", help="only this Box")
    cf = sub.add_parser("config", help="push a configuration to a Box, show what it answered")
    cf_sub = cf.add_subparsers(dest="config_cmd", required=True)
    cp = cf_sub.add_parser("push", help="send a whole Box configuration (TOML, as boxd's file)")
    cp.add_argument("box_id")
    cp.add_argument("file", type=Path)
    cp.add_argument("--no-check", action="store_true", help="send it even if it does not validate here")
    cp.add_argument("--wait", type=_duration, default=30, help="wait this long for the Box's answer (0: don't)")
    cs = cf_sub.add_parser("show", help="the configurations sent to a Box and its answers")
    cs.add_argument("box_id")
    cs.add_argument("--history", type=int, default=5)
    c = sub.add_parser("cmd", help="send a command to a Box (write, read, restart, reboot, logs, renew_cert)",
                       description="Send a command to a Box: write point=NAME value=V [priority=N relinquish=true], "
                                   "read points=A,B, restart, reboot, logs [lines=N], renew_cert; "
                                   "or 'cmd list BOX_ID' for the recent ones.")
    c.add_argument("box_id", help="the Box (or 'list')")
    c.add_argument("name", help="the command (or, after 'list', the Box)")
    c.add_argument("args", nargs="*", metavar="KEY=VALUE", help="arguments; values are JSON or text")
    c.add_argument("--ttl", type=_duration, default=300, help="the command expires after this (default 5m)")
    c.add_argument("--wait", type=_duration, default=30, help="wait this long for the Box's answer (0: don't)")
    _deploy_cli.add_parsers(sub, _duration)
    _security_cli.add_parsers(sub)
    return p


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(ts: float | None) -> str:
    if ts is None:
        return "never"
    s = max(0, int(time.time() - ts))
    return f"{s} s ago" if s < 120 else f"{s // 60} min ago" if s < 7200 else f"{s // 3600} h ago"


def cmd_run(cloud: Cloud) -> int:
    """Run the services until SIGINT/SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    cloud.start()
    s = cloud.settings
    print(f"boxcloud: broker on {s.host}:{s.broker_port} (mTLS), enrollment on https://{s.host}:{s.enroll_port}")
    print(f"boxcloud: platform CA for Boxes: {cloud.pki.root_cert}")
    try:
        while not stop.wait(1.0):
            cloud.supervise()
    finally:
        cloud.stop()
    return 0


def cmd_box(cloud: Cloud, args: argparse.Namespace) -> int:
    """The `box` subcommands."""
    if args.box_cmd == "add":
        cloud.settings  # noqa: B018 - fail early when there is no cloud here
        earlier = [t for t in cloud.store.pending_tokens() if t.serial == args.serial]
        token, expires = cloud.add_box(args.serial, args.ttl, replace=args.replace)
        s = cloud.settings
        if earlier:
            print(f"The earlier token for {args.serial} is cancelled (a Box has one live token at most).")
        print(f"Enrollment token for Box {args.serial} (single use, valid until {_when(expires)}):\n\n    {token}\n")
        print("On the Box, run (and paste the token when asked; it never goes on a command line):")
        print(f"    boxctl provision --server https://{s.host}:{s.enroll_port} --token -")
        return 0
    if args.box_cmd == "list":
        boxes = cloud.store.boxes()
        if not boxes:
            print("No Boxes yet: 'boxcloud box add SERIAL' issues an enrollment token.")
            return 0
        tags = cloud.store.tags()
        print(f"{'BOX':<24} {'STATUS':<9} {'SINCE':<16} {'LAST DATA':<16} {'CERT EXPIRES':<12} {'SOFTWARE':<10} TAGS")
        for b in boxes:
            state = "revoked" if b.revoked else "online" if b.online else "offline"
            print(f"{b.box_id:<24} {state:<9} {_ago(b.status_ts):<16} {_ago(b.last_seen):<16} "
                  f"{datetime.fromtimestamp(b.cert_not_after, UTC):%Y-%m-%d}   {b.version or '-':<10} "
                  f"{','.join(tags.get(b.box_id, []))}")
        return 0
    if args.box_cmd in ("tag", "untag"):
        return _deploy_cli.cmd_tags(cloud, args)
    if args.box_cmd == "show":
        return _show(cloud, args.box_id, args.history)
    if args.box_cmd == "revoke":
        cut = cloud.revoke(args.box_id)
        after = "its live session was ended." if cut else "the broker is not running; it will refuse the Box."
        print(f"Box {args.box_id}: certificate revoked; {after}")
        return 0
    return 2


def cmd_alerts(cloud: Cloud, box_id: str | None, include_closed: bool) -> int:
    """List alerts, newest first."""
    alerts = cloud.store.alerts(box_id, include_closed)
    if not alerts:
        print("No open alerts." if not include_closed else "No alerts.")
        return 0
    print(f"{'OPENED':<24} {'BOX':<20} {'KIND':<9} {'STATE':<7} MESSAGE")
    for a in alerts:
        state = "open" if a.closed is None else "closed"
        print(f"{_when(a.opened):<24} {a.box_id:<20} {a.kind:<9} {state:<7} {a.message}")
    return 0


def _show_health(cloud: Cloud, box_id: str) -> None:
    h = cloud.store.health(box_id)
    if h is None:
        return
    received, doc = h
    print(f"  heartbeat:    {_ago(received)}; up {doc.get('up_s', '?')} s; clock "
          f"{'ok' if doc.get('clock_ok') else 'NOT TRUSTED'}")
    print(f"  queue:        {doc.get('queue', '?')} sample(s) waiting; {doc.get('evicted', 0)} evicted in all")
    buses = doc.get("buses")
    if isinstance(buses, dict):
        for name, st in sorted(buses.items()):
            if isinstance(st, dict):
                print(f"  bus {name:<10} {st.get('requests', 0)} requests, {st.get('errors', 0)} errors, "
                      f"{st.get('cycles', 0)} cycles")


def _show(cloud: Cloud, box_id: str, history: int) -> int:
    b = cloud.store.box(box_id)
    if b is None:
        raise CloudError(f"no Box {box_id!r} (see 'boxcloud box list')")
    state = "REVOKED" if b.revoked else "online" if b.online else "offline"
    print(f"Box {b.box_id}  (serial {b.serial}, software {b.version or 'unknown'})")
    print(f"  status:       {state}{f' ({b.status_reason})' if b.status_reason else ''}, since {_when(b.status_ts)}")
    print(f"  last data:    {_ago(b.last_seen)}")
    print(f"  certificate:  serial {b.cert_serial:x}, expires {_when(b.cert_not_after)}")
    print(f"  tags:         {', '.join(cloud.tags(box_id)) or '(none)'}")
    _show_health(cloud, box_id)
    for a in cloud.store.alerts(box_id):
        print(f"  ALERT {a.kind}: {a.message} (since {_when(a.opened)})")
    for ts, online, reason in cloud.store.status_history(box_id, history):
        print(f"  {_when(ts)}  {'online ' if online else 'offline'} {reason}")
    latest = cloud.store.latest(box_id)
    if latest:
        print(f"\n  {'POINT':<28} {'VALUE':>14} {'UNIT':<6} {'QUALITY':<16} TIME")
    for point, ts, value, q, unit in latest:
        v = f"{value:.3f}" if isinstance(value, float) else str(value)
        print(f"  {point:<28} {v:>14} {unit:<6} {Quality(q).name.lower():<16} {_ago(ts / 1000)}")
    return 0


def _cmd_args(name: str, pairs: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise CloudError(f"argument {pair!r} is not KEY=VALUE")
        try:
            value: object = json.loads(text)
        except ValueError:
            value = text
        if name == "read" and key == "points" and isinstance(value, str):
            value = [v for v in value.split(",") if v]
        out[key] = value
    return out


def _wait(what: str, wait_s: float, done: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if done():
            return True
        time.sleep(0.2)
    print(f"No answer from the Box within {wait_s:.0f} s to {what}; it stays queued until it expires. "
          "Is 'boxcloud run' running, and the Box online ('boxcloud box list')?")
    return False


def cmd_config(cloud: Cloud, args: argparse.Namespace) -> int:
    """The `config` subcommands."""
    if args.config_cmd == "show":
        rows = cloud.store.configs(args.box_id, args.history)
        if not rows:
            print(f"No configuration was pushed to {args.box_id}.")
        for r in rows:
            state = r.status or ("sent, no answer yet" if r.published else "queued")
            print(f"version {r.version}: {state} (created {_when(r.created)}, answered {_when(r.answered)})")
            for reason in r.reasons:
                print(f"    {reason}")
        return 0
    try:
        text = args.file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CloudError(f"{args.file} is not UTF-8 text") from None
    version = cloud.push_config(args.box_id, text, check=not args.no_check)
    print(f"Configuration version {version} for {args.box_id} queued.")
    if args.wait <= 0:
        return 0
    def answer() -> ConfigRow | None:
        row = next((r for r in cloud.store.configs(args.box_id, 3) if r.version == version), None)
        return row if row is not None and row.status is not None else None

    if not _wait(f"configuration version {version}", args.wait, lambda: answer() is not None):
        return 3
    row = answer()
    assert row is not None and row.status is not None
    print(f"Box {args.box_id}: configuration version {version} {row.status.replace('_', ' ')}"
          + (":" if row.reasons else "."))
    for reason in row.reasons:
        print(f"    {reason}")
    return 0 if row.status == "applied" else 4


def cmd_command(cloud: Cloud, args: argparse.Namespace) -> int:
    """`cmd BOX NAME ...` and `cmd list BOX`."""
    if args.box_id == "list":
        rows = cloud.store.commands(args.name)
        if not rows:
            print(f"No commands were sent to {args.name}.")
        for r in rows:
            state = r.status or ("expired unsent" if not r.published and r.expires < time.time()
                                 else "sent, no answer yet" if r.published else "queued")
            print(f"{_when(r.created)}  {r.id}  {r.name} {json.dumps(r.args)}: {state}"
                  + (f" ({r.detail})" if r.detail else ""))
        return 0
    cmd_id = cloud.send_command(args.box_id, args.name, _cmd_args(args.name, args.args), args.ttl)
    print(f"Command {cmd_id} ({args.name}) for {args.box_id} queued.")
    if args.wait <= 0:
        return 0
    def answer() -> CommandRow | None:
        row = cloud.store.command(cmd_id)
        return row if row is not None and row.status is not None else None

    if not _wait(f"command {cmd_id}", args.wait, lambda: answer() is not None):
        return 3
    row = answer()
    assert row is not None
    print(f"Box {args.box_id}: {args.name} {row.status}" + (f": {row.detail}" if row.detail else ""))
    for point, value in row.result.items():
        print(f"    {point} = {value}")
    faults = row.reply.get("faults")
    if isinstance(faults, dict):
        for point, code in faults.items():
            why = Quality(code).name.lower() if code in Quality._value2member_map_ else code
            print(f"    {point}: no value ({why})")
    for line in row.lines:
        print(f"    {line}")
    return 0 if row.status == "ok" else 4


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `boxcloud` command."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cloud = Cloud(args.home)
    try:
        if args.cmd == "init":
            cloud.init(Settings(args.host, args.broker_port, args.enroll_port, args.bind), args.name)
            print(f"boxcloud: cloud created in {args.home}")
            print(f"boxcloud: ship this platform CA with every Box: {cloud.pki.root_cert}")
            print(f"boxcloud: move {cloud.pki.root_key} offline (it is only needed to sign a new issuing CA)")
            return 0
        if args.cmd == "run":
            return cmd_run(cloud)
        if args.cmd == "alerts":
            return cmd_alerts(cloud, args.box, args.all)
        if args.cmd == "config":
            return cmd_config(cloud, args)
        if args.cmd == "cmd":
            return cmd_command(cloud, args)
        if args.cmd == "release":
            return _deploy_cli.cmd_release(cloud, args)
        if args.cmd == "deploy":
            return _deploy_cli.cmd_deploy(cloud, args)
        if args.cmd == "token":
            return _security_cli.cmd_token(cloud, args)
        if args.cmd == "pki":
            return _security_cli.cmd_pki(cloud, args)
        return cmd_box(cloud, args)
    except CloudError as e:
        print(f"boxcloud: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"boxcloud: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
