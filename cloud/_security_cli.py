"""`boxcloud token ...` and `boxcloud pki ...`: enrollment tokens and the platform's server certificates.

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
