"""`boxcloud box ...` and `boxcloud alerts ...`: parsers and commands (part of `cloud.cli`).

Boxes: add (an enrollment token), enroll-bulk (certificates from public keys), list, show, revoke,
decommission, tag, untag. Alerts: list
(with how long each has lasted) and ack. Every list and show takes `--json` (field names in the
README, "Output for scripts"). An unknown id is refused in one wording (`cloud._admin.no_box`);
an action that changes nothing says so and exits 0.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from boxkit import clikit
from boxkit.files import write_atomic
from cloud import _out as out
from cloud.deploy import OPERATOR
from cloud.errors import CloudError, NothingChangedError, UnknownError
from cloud.platform import Cloud
from cloud.store import Alert, BoxRow
from proto.points import Quality

# alerts whose cause does not go away by itself: an acknowledgement closes them
CLOSED_BY_OPERATOR = frozenset({"sequence", "evicted", "config"})


def add_parsers(sub: argparse._SubParsersAction[clikit.Parser], duration: Callable[[str], float], exits: str) -> None:
    """The `box` and `alerts` subcommands."""
    box = sub.add_parser("box", help="enroll, list, show, revoke, decommission and tag Boxes",
                         description="Enroll, list, show, revoke, decommission and tag Boxes.",
                         epilog=clikit.epilog(["boxcloud box add SN-0042", "boxcloud box list --json"], exits))
    bs = box.add_subparsers(dest="box_cmd", required=True, metavar="COMMAND")
    a = clikit.subcommand(bs, "add", "issue a single-use enrollment token for a Box serial",
                          ["boxcloud box add SN-0042", "boxcloud box add SN-0042 --ttl 7d",
                           "boxcloud box add SN-0042 --replace   # a replaced or compromised Box"], exits=exits)
    a.add_argument("serial", help="the Box's serial (it becomes its id): A-Z a-z 0-9 . _ -")
    a.add_argument("--ttl", type=duration, default=72 * 3600, help="how long the token is valid (default 72h)")
    a.add_argument("--replace", action="store_true",
                   help="the Box is enrolled: issue a token anyway (using it ends every certificate the Box has)")
    eb = clikit.subcommand(bs, "enroll-bulk", "enroll many Boxes at once from their public keys (a factory's batch): "
                                              "DIR/<BOX-ID>.pub.pem in, <BOX-ID>.crt out",
                           ["boxcloud box enroll-bulk /srv/factory/batch-17",
                            "boxcloud box enroll-bulk keys/ --out certs/"], exits=exits)
    eb.add_argument("keys", type=Path, metavar="DIR",
                    help="a directory of <BOX-ID>.pub.pem files (EC P-256 or stronger)")
    eb.add_argument("--out", type=Path, metavar="DIR", help="where the certificates go (default: DIR)")
    ls = clikit.subcommand(bs, "list", "list Boxes with their status, last data, certificate expiry and software",
                           ["boxcloud box list", "boxcloud box list --json | jq -r '.[].box_id'"], exits=exits)
    ls.add_argument("--json", action="store_true", help="one JSON list (see the README for the fields)")
    s = clikit.subcommand(bs, "show", "show a Box: identity, status and its history, health, alerts, latest values",
                          ["boxcloud box show SN-0042", "boxcloud box show SN-0042 --history 20",
                           "boxcloud box show SN-0042 --json"], exits=exits)
    s.add_argument("box_id")
    s.add_argument("--history", type=clikit.count(0, 1000), default=5, metavar="N",
                   help="status changes to show, 0..1000 (default %(default)s)")
    s.add_argument("--json", action="store_true", help="one JSON object")
    r = clikit.subcommand(bs, "revoke", "revoke a Box's certificate and end its live session",
                          ["boxcloud box revoke SN-0042"], exits=exits)
    r.add_argument("box_id")
    d = clikit.subcommand(bs, "decommission", "take a Box out of the fleet: revoke it, clear its retained "
                                              "configuration, untag it; keep its data unless --delete-data",
                          ["boxcloud box decommission SN-0042", "boxcloud box decommission SN-0042 --delete-data"],
                          exits=exits)
    d.add_argument("box_id")
    d.add_argument("--delete-data", action="store_true",
                   help="also delete everything stored about it (samples, history, alerts); cannot be undone")
    for name, verb in (("tag", "give a Box tags (a deployment can target a tag)"), ("untag", "take tags off a Box")):
        t = clikit.subcommand(bs, name, verb, [f"boxcloud box {name} SN-0042 floor3 pilot"], exits=exits)
        t.add_argument("box_id")
        t.add_argument("tags", nargs="+", metavar="TAG")

    al = sub.add_parser("alerts", help="list alerts (Boxes offline, silent, gaps, clocks, devices), acknowledge one",
                        description="List alerts, newest first, with how long each has lasted; 'alerts ack ID' "
                                    "acknowledges one (and closes those only an operator can close: sequence, "
                                    "evicted, config).",
                        epilog=clikit.epilog(["boxcloud alerts", "boxcloud alerts --all --box SN-0042",
                                              "boxcloud alerts ack 12", "boxcloud alerts --json"], exits))
    _alert_list_args(al)
    als = al.add_subparsers(dest="alerts_cmd", metavar="COMMAND")
    _alert_list_args(clikit.subcommand(als, "list", "list alerts (the default)", ["boxcloud alerts list --all"],
                                       exits=exits))
    ack = clikit.subcommand(als, "ack", "acknowledge alerts by number (closes sequence, evicted and config alerts)",
                            ["boxcloud alerts ack 12", "boxcloud alerts ack 12 13 --note 'fibre cut, ISP ticket 4411'"],
                            exits=exits)
    ack.add_argument("ids", nargs="+", type=int, metavar="ID", help="the alert's number ('boxcloud alerts')")
    ack.add_argument("--note", type=_note, help="what was seen or done, kept with the alert (at most 500 characters)")


def _note(text: str) -> str:
    """An acknowledgement's note: 1 to 500 printable characters."""
    if not 1 <= len(text) <= 500 or not text.isprintable():
        raise argparse.ArgumentTypeError("a note is 1 to 500 printable characters (no line breaks)")
    return text


def _alert_list_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--all", action="store_true", help="closed alerts too")
    p.add_argument("--box", help="only this Box")
    p.add_argument("--json", action="store_true", help="one JSON list")


def run(cloud: Cloud, args: argparse.Namespace) -> int:
    """Run a `box` or `alerts` subcommand."""
    if args.cmd == "alerts":
        if getattr(args, "alerts_cmd", None) == "ack":
            return _ack(cloud, args.ids, args.note)
        return _alerts(cloud, args.box, args.all, args.json)
    handler = {"add": _add, "enroll-bulk": _enroll_bulk, "list": _list, "show": _show, "revoke": _revoke,
               "decommission": _decommission,
               "tag": _tags, "untag": _tags}[args.box_cmd]
    return handler(cloud, args)


def _add(cloud: Cloud, args: argparse.Namespace) -> int:
    earlier = [t for t in cloud.store.pending_tokens() if t.serial == args.serial]
    token, expires = cloud.add_box(args.serial, args.ttl, replace=args.replace)
    s = cloud.settings
    if earlier:
        out.line(f"The earlier token for {args.serial} is cancelled (a Box has one live token at most).")
    out.line(f"Enrollment token for Box {args.serial} (single use, valid until {out.when(expires)}):\n\n    {token}\n")
    out.line("On the Box, run (and paste the token when asked; it never goes on a command line):")
    out.line(f"    boxctl provision --server https://{s.host}:{s.enroll_port} --token -")
    return 0


MAX_BULK = 100_000  # public keys one enroll-bulk takes


def _enroll_bulk(cloud: Cloud, args: argparse.Namespace) -> int:
    """Certificates for every <BOX-ID>.pub.pem in a directory; nothing is enrolled if one is bad."""
    files = sorted(args.keys.glob("*.pub.pem")) if args.keys.is_dir() else []
    if not files or len(files) > MAX_BULK:
        raise CloudError(f"{args.keys} holds no <BOX-ID>.pub.pem files" if not files else
                         f"{args.keys} holds {len(files)} public keys: at most {MAX_BULK:,} at once")
    keys: list[tuple[str, ec.EllipticCurvePublicKey]] = []
    for f in files:
        try:
            key = serialization.load_pem_public_key(f.read_bytes()[:16384])
        except (OSError, ValueError, UnsupportedAlgorithm) as e:
            raise CloudError(f"{f.name} is not a PEM public key ({e}): nothing enrolled") from None
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise CloudError(f"{f.name} is not an EC key (P-256 or stronger): nothing enrolled")
        keys.append((f.name.removesuffix(".pub.pem"), key))
    chains = cloud.enroll_keys(keys)
    out_dir = args.out or args.keys
    out_dir.mkdir(parents=True, exist_ok=True)
    for (box_id, _), chain in zip(keys, chains, strict=True):
        write_atomic(out_dir / f"{box_id}.crt", chain)
    out.line(f"{len(keys)} Boxes enrolled; their certificates are in {out_dir} (<BOX-ID>.crt, with the issuing CA). "
             f"Each Box also needs the platform CA {cloud.pki.root_cert} and the broker "
             f"{cloud.settings.host}:{cloud.settings.broker_port}.")
    return 0


def _state(b: BoxRow) -> str:
    return "revoked" if b.revoked else "online" if b.online else "offline"


def box_doc(b: BoxRow, tags: list[str]) -> dict[str, object]:
    """A Box for scripts (`box list --json`, `box show --json`)."""
    return {"box_id": b.box_id, "serial": b.serial, "status": _state(b), "status_reason": b.status_reason,
            "status_since": out.iso(b.status_ts), "last_data": out.iso(b.last_seen), "enrolled": out.iso(b.enrolled),
            "cert_serial": f"{b.cert_serial:x}", "cert_expires": out.iso(b.cert_not_after),
            "revoked": out.iso(b.revoked), "software": b.version, "tags": tags}


def _list(cloud: Cloud, args: argparse.Namespace) -> int:
    boxes, tags = cloud.store.boxes(), cloud.store.tags()
    if args.json:
        out.emit_json([box_doc(b, tags.get(b.box_id, [])) for b in boxes])
        return 0
    if not boxes:
        out.line("No Boxes yet: 'boxcloud box add SERIAL' issues an enrollment token.")
        return 0
    out.table(["BOX", "STATUS", "SINCE", "LAST DATA", "CERT EXPIRES", "SOFTWARE", "TAGS"],
              [[b.box_id, _state(b), out.ago(b.status_ts), out.ago(b.last_seen),
                out.when(b.cert_not_after)[:10], b.version or "-", ",".join(tags.get(b.box_id, []))] for b in boxes])
    return 0


def _show(cloud: Cloud, args: argparse.Namespace) -> int:
    b = cloud.box(args.box_id)
    health = cloud.store.health(b.box_id)
    alerts = cloud.store.alerts(b.box_id)
    history = cloud.store.status_history(b.box_id, args.history)
    latest = cloud.store.latest(b.box_id)
    modem = cloud.store.modem(b.box_id)
    if args.json:
        doc = box_doc(b, cloud.tags(b.box_id))
        doc["health"] = {"received": out.iso(health[0]), **health[1]} if health else None
        doc["modem"] = {"received": out.iso(modem[0]), **modem[1]} if modem else None
        doc["alerts"] = [alert_doc(a) for a in alerts]
        doc["history"] = [{"time": out.iso(ts), "online": online, "reason": why} for ts, online, why in history]
        doc["points"] = [{"point": p, "value": v, "unit": u, "quality": Quality(q).name.lower(),
                          "time": out.iso(t / 1000)} for p, t, v, q, u in latest]
        out.emit_json(doc)
        return 0
    out.line(f"Box {b.box_id}  (serial {b.serial}, software {b.version or 'unknown'})")
    reason = f" ({b.status_reason})" if b.status_reason else ""
    out.line(f"  status:       {_state(b).upper() if b.revoked else _state(b)}{reason}, since {out.when(b.status_ts)}")
    out.line(f"  last data:    {out.ago(b.last_seen)}")
    out.line(f"  certificate:  serial {b.cert_serial:x}, expires {out.when(b.cert_not_after)}")
    out.line(f"  tags:         {', '.join(cloud.tags(b.box_id)) or '(none)'}")
    if health:
        received, h = health
        up = h.get("up_s")
        out.line(f"  heartbeat:    {out.ago(received)}; up {out.duration(up) if isinstance(up, int) else '?'}; "
                 f"clock {'ok' if h.get('clock_ok') else 'NOT TRUSTED'}; configuration "
                 + (f"version {h['config_version']}" if isinstance(h.get("config_version"), int) else
                    "written on the Box" if "config_sha256" in h else "unknown (older software)"))
        out.line(f"  queue:        {h.get('queue', '?')} sample(s) waiting; {h.get('evicted', 0)} evicted in all")
        buses = h.get("buses")
        if isinstance(buses, dict):
            for name, st in sorted(buses.items()):
                if isinstance(st, dict):
                    out.line(f"  bus {name:<10} {st.get('requests', 0)} requests, {st.get('errors', 0)} errors, "
                             f"{st.get('cycles', 0)} cycles")
    if modem:
        out.line(f"  modem:        {modem_line(modem[1])} (reported {out.ago(modem[0])})")
    for a in alerts:
        out.line(f"  ALERT #{a.id} {a.kind}: {a.message} (for {out.duration(time.time() - a.opened)})")
    for ts, online, why in history:
        out.line(f"  {out.when(ts)}  {'online ' if online else 'offline'} {why}")
    if latest:
        out.line()
        out.table(["POINT", "VALUE", "UNIT", "QUALITY", "TIME"],
                  [[p, f"{v:.3f}" if isinstance(v, float) else v, u, Quality(q).name.lower(), out.ago(t / 1000)]
                   for p, t, v, q, u in latest])
    return 0


def _revoke(cloud: Cloud, args: argparse.Namespace) -> int:
    cut = cloud.revoke(args.box_id)
    after = "its live session was ended." if cut else "the broker is not running; it will refuse the Box."
    out.line(f"Box {args.box_id}: certificate revoked; {after}")
    return 0


def _decommission(cloud: Cloud, args: argparse.Namespace) -> int:
    done = cloud.decommission(args.box_id, delete_data=args.delete_data)
    out.line(f"Box {args.box_id} decommissioned: " + "; ".join(done) + ".")
    return 0


def _tags(cloud: Cloud, args: argparse.Namespace) -> int:
    before = set(cloud.tags(cloud.box(args.box_id).box_id))
    if args.box_cmd == "tag":
        cloud.tag(args.box_id, args.tags)
    else:
        cloud.untag(args.box_id, args.tags)
    now = cloud.tags(args.box_id)
    if set(now) == before:
        raise NothingChangedError(f"Box {args.box_id}: tags {', '.join(now) or '(none)'}: nothing changed")
    out.line(f"Box {args.box_id}: tags {', '.join(now) or '(none)'}")
    return 0


def alert_doc(a: Alert, now: float | None = None) -> dict[str, object]:
    """An alert for scripts."""
    end = a.closed if a.closed is not None else (now or time.time())
    return {"id": a.id, "box_id": a.box_id, "kind": a.kind, "subject": a.subject, "message": a.message,
            "state": "open" if a.closed is None else "closed", "opened": out.iso(a.opened), "closed": out.iso(a.closed),
            "acknowledged": out.iso(a.acked), "acknowledged_by": a.acked_by, "ack_note": a.ack_note,
            "duration_s": int(end - a.opened)}


def _alerts(cloud: Cloud, box_id: str | None, include_closed: bool, as_json: bool) -> int:
    if box_id is not None:
        cloud.box(box_id)
    alerts = cloud.store.alerts(box_id, include_closed)
    if as_json:
        out.emit_json([alert_doc(a) for a in alerts])
        return 0
    if not alerts:
        out.line("No open alerts." if not include_closed else "No alerts.")
        return 0
    now = time.time()
    out.table(["#", "OPENED", "FOR", "BOX", "KIND", "STATE", "MESSAGE", "ACKNOWLEDGED"],
              [[a.id, out.when(a.opened), out.duration((a.closed or now) - a.opened), a.box_id, a.kind,
                ("open" if a.closed is None else "closed") + (", ack" if a.acked else ""), a.message, _acked(a)]
               for a in alerts])
    return 0


def _acked(a: Alert) -> str:
    """When, by whom and why an alert was acknowledged ("" if it was not)."""
    if a.acked is None:
        return ""
    return out.when(a.acked) + (f" by {a.acked_by}" if a.acked_by else "") + (f": {a.ack_note}" if a.ack_note else "")


def _ack(cloud: Cloud, ids: list[int], note: str | None) -> int:
    unknown = [i for i in ids if cloud.store.alert(i) is None]
    if unknown:
        raise UnknownError(f"no alert #{unknown[0]} here ('boxcloud alerts --all' shows them)")
    changed = 0
    for i in ids:
        a = cloud.store.alert(i)
        assert a is not None
        closes = a.kind in CLOSED_BY_OPERATOR
        if cloud.store.ack_alert(i, closes, OPERATOR, note):
            changed += 1
            out.line(f"Alert #{i} ({a.box_id} {a.kind}) acknowledged" + (" and closed." if closes else
                                                                          "; it closes when its cause is gone."))
        else:
            out.line(f"Alert #{i} was already {'closed' if a.closed else 'acknowledged'}: nothing changed.")
    if not changed and len(ids) > 1:
        raise NothingChangedError("nothing changed")
    return 0


def modem_line(m: dict[str, object]) -> str:
    """A Box's modem report in one line: state, network, signal, data used."""
    sig = m.get("signal") if isinstance(m.get("signal"), dict) else {}
    assert isinstance(sig, dict)
    values = ", ".join(f"{k.upper()} {sig[k]}" for k in ("rsrp", "rsrq", "sinr", "rssi") if isinstance(sig.get(k), int))
    use = m.get("usage") if isinstance(m.get("usage"), dict) else {}
    assert isinstance(use, dict)
    used = sum(v for k, v in use.items() if k in ("rx", "tx") and isinstance(v, int)) / 1e6
    budget = use.get("budget")
    return (f"{m.get('state', '?')}, {m.get('reg', '?')} on {m.get('operator') or '?'} ({m.get('wan', '?')} uplink); "
            f"signal {sig.get('grade', '?')} ({values or 'no measurement'}); {used:.1f} MB used this period"
            + (f" of {budget / 1e6:.0f} MB" if isinstance(budget, int) and budget else ""))
