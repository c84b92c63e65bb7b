"""`boxcloud token ...` and `boxcloud pki reissue`: enrollment tokens and the platform's server certificates.

Part of `cloud.cli` (kept apart for size). Tokens: a Box has at most one live token
(`box add` cancels the earlier one); `token list` shows those not used and not expired, never
the token itself (only its hash is stored); `token cancel SERIAL` withdraws them.
"""

from __future__ import annotations

import argparse

from boxkit import clikit
from cloud import _out as out
from cloud.enroll import check_serial
from cloud.errors import NothingChangedError
from cloud.platform import Cloud


def add_parsers(sub: argparse._SubParsersAction[clikit.Parser], exits: str) -> None:
    """The `token` and `pki` subcommands."""
    tok = sub.add_parser("token", help="list and cancel pending enrollment tokens",
                         description="List and cancel pending enrollment tokens (never shown: only their hash is "
                                     "kept).",
                         epilog=clikit.epilog(["boxcloud token list", "boxcloud token cancel SN-0042"], exits))
    tok_sub = tok.add_subparsers(dest="token_cmd", required=True, metavar="COMMAND")
    ls = clikit.subcommand(tok_sub, "list", "tokens not used and not expired: serial, issued, expires",
                           ["boxcloud token list", "boxcloud token list --json"], exits=exits)
    ls.add_argument("--json", action="store_true",
                    help="one JSON list for scripts: serial, issued, expires (ISO 8601, UTC)")
    cancel = clikit.subcommand(tok_sub, "cancel", "cancel the pending token of a Box serial",
                               ["boxcloud token cancel SN-0042"], exits=exits)
    cancel.add_argument("serial", help="the Box serial the token was issued for")
    pki = sub.add_parser("pki", help="the platform's own server certificates",
                         description="The platform's own server certificates.",
                         epilog=clikit.epilog(["boxcloud pki reissue broker"], exits))
    pki_sub = pki.add_subparsers(dest="pki_cmd", required=True, metavar="COMMAND")
    re = clikit.subcommand(pki_sub, "reissue", "replace a server certificate and revoke the old one (its key leaked)",
                           ["boxcloud pki reissue broker", "boxcloud pki reissue enroll"],
                           description="Issue a new server certificate (broker or enroll) for the same names and "
                                       "put the old one on the CRL. The running broker takes the new one at once "
                                       "and the Boxes get the new CRL; 'enroll' needs 'boxcloud run' restarted.",
                           exits=exits)
    re.add_argument("name", choices=["broker", "enroll", "api"],
                    help="which server certificate: broker, enroll or api (the users' API)")


def cmd_token(cloud: Cloud, args: argparse.Namespace) -> int:
    """`token list` and `token cancel`."""
    if args.token_cmd == "cancel":  # noqa: S105 - a subcommand, not a secret
        n = cloud.store.cancel_tokens(check_serial(args.serial))
        if not n:
            raise NothingChangedError(f"No pending token for {args.serial}: nothing changed.")
        out.line(f"Cancelled the pending token for {args.serial}." if n == 1
                 else f"Cancelled {n} pending tokens for {args.serial}.")
        return 0
    rows = cloud.store.pending_tokens()
    if args.json:
        out.emit_json([{"serial": r.serial, "issued": out.iso(r.created), "expires": out.iso(r.expires)}
                       for r in rows])
        return 0
    if not rows:
        out.line("No pending enrollment tokens.")
        return 0
    out.table(["SERIAL", "ISSUED", "EXPIRES"], [(r.serial, out.when(r.created), out.when(r.expires)) for r in rows])
    return 0


def cmd_pki(cloud: Cloud, args: argparse.Namespace) -> int:
    """`pki reissue NAME`."""
    old = cloud.reissue_server_cert(args.name)
    out.line(f"New {args.name} certificate issued; the old one (serial {old:x}) is revoked. Boxes refuse it from "
             "their next handshake once they have the new CRL (given to every online Box now).")
    if args.name == "enroll":
        out.line("Restart 'boxcloud run' so that the HTTPS endpoint serves the new certificate.")
    return 0
