"""`boxcloud account|user|key|audit ...`: the operator's side of the users' API.

Part of `cloud.cli` (kept apart for size); the actions are `cloud.api.operator`'s. A password is
never an argument (it would be in the shell's history and `ps`): it is read from `--password-file`,
or from stdin (asked twice, hidden, on a terminal). A new API key is printed once.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from pathlib import Path

from boxkit import clikit
from cloud import _out as out
from cloud.api import operator
from cloud.api._authz import PERMISSIONS
from cloud.errors import CloudError, NothingChangedError
from cloud.platform import Cloud


def add_parsers(sub: argparse._SubParsersAction[clikit.Parser], exits: str) -> None:
    """The `account`, `user`, `key` and `audit` subcommands."""
    acc = sub.add_parser("account", help="accounts (tenants) of the users' API and their Boxes",
                         description="Accounts of the users' API: each is a tenant with its users, roles and Boxes.",
                         epilog=clikit.epilog(["boxcloud account create acme --owner ops@acme.example",
                                               "boxcloud account assign SN-0042 acme"], exits))
    acc_sub = acc.add_subparsers(dest="account_cmd", required=True, metavar="COMMAND")
    c = clikit.subcommand(acc_sub, "create", "a new account and its first user, owner of the account",
                          ["boxcloud account create acme --owner ops@acme.example   (password asked twice)",
                           "boxcloud account create acme --owner ops@acme.example --password-file pw.txt"],
                          exits=exits)
    c.add_argument("name", help="the account's name")
    c.add_argument("--owner", required=True, help="the first user's login (e.g. an e-mail address)")
    _password_args(c)
    ls = clikit.subcommand(acc_sub, "list", "the accounts", ["boxcloud account list --json"], exits=exits)
    ls.add_argument("--json", action="store_true", help="one JSON list: id, name, require_2fa, created")
    a = clikit.subcommand(acc_sub, "assign", "put a Box in an account (its users' roles reach it from then on)",
                          ["boxcloud account assign SN-0042 acme"], exits=exits)
    a.add_argument("box", help="the Box id")
    a.add_argument("account", help="the account's name")

    usr = sub.add_parser("user", help="reset a user's password or 2FA; list an account's users",
                         description="The operator's help for users: a lost password, a lost 2FA device.",
                         epilog=clikit.epilog(["boxcloud user list acme", "boxcloud user reset-2fa ops@acme.example"],
                                              exits))
    usr_sub = usr.add_subparsers(dest="user_cmd", required=True, metavar="COMMAND")
    ul = clikit.subcommand(usr_sub, "list", "an account's users and service accounts", ["boxcloud user list acme"],
                           exits=exits)
    ul.add_argument("account", help="the account's name")
    ul.add_argument("--json", action="store_true", help="one JSON list: id, name, kind, two_factor")
    pw = clikit.subcommand(usr_sub, "password", "set a user's password (a lost one)",
                           ["boxcloud user password ops@acme.example --password-file pw.txt"], exits=exits)
    pw.add_argument("login")
    _password_args(pw)
    r2 = clikit.subcommand(usr_sub, "reset-2fa", "clear a user's 2FA (a lost device): they enrol again",
                           ["boxcloud user reset-2fa ops@acme.example"], exits=exits)
    r2.add_argument("login")

    key = sub.add_parser("key", help="make an API key for a user or service account (shown once)",
                         description="API keys for machines set up by the operator; users make theirs with the API.",
                         epilog=clikit.epilog(["boxcloud key create ops@acme.example --name grafana "
                                               "--scope box.read --scope box.data.read --days 30"], exits))
    key_sub = key.add_subparsers(dest="key_cmd", required=True, metavar="COMMAND")
    kc = clikit.subcommand(key_sub, "create", "a new key within its owner's permissions, printed once",
                           ["boxcloud key create ops@acme.example --name grafana --scope box.data.read"], exits=exits)
    kc.add_argument("login", help="the key's owner")
    kc.add_argument("--name", required=True, help="what the key is for")
    kc.add_argument("--scope", action="append", required=True, choices=sorted(PERMISSIONS), metavar="PERMISSION",
                    help=f"a permission the key carries (repeat): {', '.join(sorted(PERMISSIONS))}")
    kc.add_argument("--days", type=_count(1, 365), default=90,
                    help="it expires after this many days, 1..365 (default 90)")
    kc.add_argument("--json", action="store_true", help="one JSON object: id, key, expires")

    aud = sub.add_parser("audit", help="verify or read the hash-chained audit trail",
                         description="The audit trail: logins and failures, denials, every change.",
                         epilog=clikit.epilog(["boxcloud audit verify", "boxcloud audit list --account acme"], exits))
    aud_sub = aud.add_subparsers(dest="audit_cmd", required=True, metavar="COMMAND")
    av = clikit.subcommand(aud_sub, "verify", "walk the chain: exit 1 and say where if a record was edited or "
                                              "deleted", ["boxcloud audit verify"], exits=exits)
    av.add_argument("--json", action="store_true", help="one JSON object: records, head, problems")
    al = clikit.subcommand(aud_sub, "list", "the records, oldest first", ["boxcloud audit list --account acme"],
                           exits=exits)
    al.add_argument("--account", help="only this account's")
    al.add_argument("--after", type=_count(0, 2**53), default=0, help="records after this sequence number")
    al.add_argument("--limit", type=_count(1, 10_000), default=100, metavar="N",
                    help="at most N records (1..10000, default 100)")
    al.add_argument("--json", action="store_true", help="one JSON list of records")


def _count(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: a whole number in lo..hi."""
    def parse(text: str) -> int:
        if not text.isdigit() or not lo <= int(text) <= hi:
            raise argparse.ArgumentTypeError(f"not a number in {lo}..{hi}: {text!r}")
        return int(text)
    return parse


def _password_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--password-file", type=Path, metavar="FILE",
                   help="read the password from FILE ('-': stdin); default: asked on the terminal, or stdin")


def _password(args: argparse.Namespace) -> str:
    f = args.password_file
    if f is not None and str(f) != "-":
        return str(f.read_text())
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            raise CloudError("the two passwords differ: nothing changed")
        return first
    return sys.stdin.readline()


def run(cloud: Cloud, args: argparse.Namespace) -> int:
    """Dispatch `account`, `user`, `key` and `audit`."""
    store = cloud.store
    if args.cmd == "account":
        if args.account_cmd == "create":
            a, u = operator.create_account(store, args.name, args.owner, _password(args))
            out.line(f"Account {a.name} created; {u.name} owns it. They use the API at "
                     f"https://{cloud.settings.host}:{cloud.settings.api_port}/v1 (its CA: {cloud.pki.root_cert}).")
            out.line(f"Put Boxes in it with: boxcloud account assign BOX {a.name}")
        elif args.account_cmd == "list":
            rows = store.accounts()
            if args.json:
                out.emit_json([{"id": r.id, "name": r.name, "require_2fa": r.require_2fa, "created": out.iso(r.created)}
                               for r in rows])
            elif not rows:
                out.line("No accounts yet: boxcloud account create NAME --owner LOGIN")
            else:
                out.table(["ID", "NAME", "2FA REQUIRED", "CREATED"],
                          [(r.id, r.name, "yes" if r.require_2fa else "no", out.when(r.created)) for r in rows])
        else:
            operator.assign_box(store, args.box, args.account)
            out.line(f"Box {args.box} is in account {args.account}.")
        return 0
    if args.cmd == "user":
        return _user(cloud, args)
    if args.cmd == "key":
        key_id, key, expires = operator.create_key(store, args.login, args.name, args.scope, args.days)
        if args.json:
            out.emit_json({"id": key_id, "key": key, "expires": out.iso(expires)})
        else:
            out.line(key)
            print(f"boxcloud: key {key_id} for {args.login}, expires {out.when(expires)}; shown once: store it now",
                  file=sys.stderr)
        return 0
    return _audit(cloud, args)


def _user(cloud: Cloud, args: argparse.Namespace) -> int:
    store = cloud.store
    if args.user_cmd == "list":
        a = operator.account(store, args.account)
        rows = store.users(a.id, 0, 10_000)
        if args.json:
            out.emit_json([{"id": u.id, "name": u.name, "kind": u.kind, "two_factor": u.totp is not None}
                           for u in rows])
        else:
            out.table(["ID", "LOGIN", "KIND", "2FA"],
                      [(u.id, u.name, u.kind, "yes" if u.totp else "no") for u in rows])
    elif args.user_cmd == "password":
        operator.reset_password(store, args.login, _password(args))
        out.line(f"Password of {args.login} set.")
    elif not operator.reset_2fa(store, args.login):
        raise NothingChangedError(f"{args.login} has no 2FA: nothing changed")
    else:
        out.line(f"2FA of {args.login} cleared (its recovery codes too): they enrol again with POST /v1/me/2fa.")
    return 0


def _audit(cloud: Cloud, args: argparse.Namespace) -> int:
    store = cloud.store
    if args.audit_cmd == "verify":
        n, head, problems = store.verify_audit()
        if args.json:
            out.emit_json({"records": n, "head": head, "problems": problems})
        elif not problems:
            out.line(f"Audit trail intact: {n} records; head {head} (note it: a later verify that shows fewer "
                     "records or another head for the same count means records were cut off the end).")
        if problems:
            if not args.json:
                for p in problems:
                    print(f"boxcloud: {p}", file=sys.stderr)
            raise CloudError(f"the audit trail was tampered with: {len(problems)} problem(s) in {n} records")
        return 0
    account_id = operator.account(store, args.account).id if args.account else None
    rows = store.audit_records(account_id, args.after, args.limit)
    if args.json:
        out.emit_json([r.public() | {"ts": out.iso(r.ts)} for r in rows])
    else:
        out.table(["SEQ", "WHEN", "ACTOR", "ACTION", "TARGET", "OUTCOME"],
                  [(r.seq, out.when(r.ts), r.actor, r.action, r.target, r.outcome) for r in rows])
    return 0
