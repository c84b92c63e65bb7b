"""`boxcloud token ...` and `boxcloud pki reissue`: enrollment tokens and the platform's server certificates.

Part of `cloud.cli` (kept apart for size). Tokens: a Box has at most one live token
(`box add` cancels the earlier one); `token list` shows those not used and not expired, never
the token itself (only its hash is stored); `token cancel SERIAL` withdraws them.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from cloud.platform import Cloud


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `token` subcommands."""
    tok = sub.add_parser("token", help="list and cancel pending enrollment tokens")
    tok_sub = tok.add_subparsers(dest="token_cmd", required=True)
    ls = tok_sub.add_parser("list", help="tokens not used and not expired (serial, issued, expires)")
    ls.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    cancel = tok_sub.add_parser("cancel", help="cancel the pending token(s) of a Box serial")
    cancel.add_argument("serial")
    pki = sub.add_parser("pki", help="the platform's own certificates")
    pki_sub = pki.add_subparsers(dest="pki_cmd", required=True)
    re = pki_sub.add_parser("reissue", help="replace a server certificate and revoke the old one (its key leaked)",
                            description="Issue a new server certificate (broker or enroll) for the same names and "
                                        "put the old one on the CRL. The running broker takes the new one at once "
                                        "and the Boxes get the new CRL; 'enroll' needs 'boxcloud run' restarted.")
    re.add_argument("name", choices=["broker", "enroll"])


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def cmd_token(cloud: Cloud, args: argparse.Namespace) -> int:
    """`token list` and `token cancel`."""
    cloud.settings  # noqa: B018 - fail early when there is no cloud here
    if args.token_cmd == "cancel":  # noqa: S105 - a subcommand, not a secret
        n = cloud.store.cancel_tokens(args.serial)
        print(f"Cancelled {n} pending token(s) for {args.serial}." if n else f"No pending token for {args.serial}.")
        return 0
    rows = cloud.store.pending_tokens()
    if args.json:
        print(json.dumps([{"serial": r.serial, "issued": r.created, "expires": r.expires} for r in rows]))
        return 0
    if not rows:
        print("No pending enrollment tokens.")
        return 0
    print(f"{'SERIAL':<24} {'ISSUED':<22} EXPIRES")
    for r in rows:
        print(f"{r.serial:<24} {_when(r.created):<22} {_when(r.expires)}")
    return 0


def cmd_pki(cloud: Cloud, args: argparse.Namespace) -> int:
    """`pki reissue NAME`."""
    old = cloud.reissue_server_cert(args.name)
    print(f"New {args.name} certificate issued; the old one (serial {old:x}) is revoked. Boxes refuse it from "
          "their next handshake once they have the new CRL (given to every online Box now).")
    if args.name == "enroll":
        print("Restart 'boxcloud run' so that the HTTPS endpoint serves the new certificate.")
    return 0
