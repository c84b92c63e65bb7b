"""`boxcloud config ...` and `boxcloud cmd ...`: parsers and commands (part of `cloud.cli`).

`config push` validates, queues and waits for the Box's final answer: "applied" (final when no
probation follows), or "applied, on probation" then "kept" or "rolled_back"; `config show` the
history; `config get` the configuration a Box runs (matched by the digest its heartbeat reports
against what was pushed from here); `config diff` that against a file. `cmd` sends a command
and waits for its answer; `cmd list` the recent ones.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from boxkit import clikit
from cloud import _out as out
from cloud.errors import CloudError
from cloud.platform import Cloud
from cloud.store import CommandRow, ConfigRow
from proto.points import Quality
from proto.replies import ON_PROBATION

EXIT_NO_ANSWER, EXIT_REFUSED, EXIT_DIFFERENT = 3, 4, 5


def add_parsers(sub: argparse._SubParsersAction[clikit.Parser], duration: Callable[[str], float], exits: str) -> None:
    """The `config` and `cmd` subcommands."""
    cf = sub.add_parser("config", help="push a configuration to a Box, show its answers, get or diff what it runs",
                        description="Push a whole configuration to a Box, show its answers, get or diff what it runs.",
                        epilog=clikit.epilog(["boxcloud config push SN-0042 site.toml",
                                              "boxcloud config diff SN-0042 site.toml"], exits))
    cs = cf.add_subparsers(dest="config_cmd", required=True, metavar="COMMAND")
    p = clikit.subcommand(cs, "push", "send a whole Box configuration (TOML, as boxd's file) and wait for the "
                                      "outcome: applied, kept after its probation, rejected or rolled back",
                          ["boxcloud config push SN-0042 site.toml", "boxcloud config push SN-0042 site.toml --wait 0",
                           "boxcloud config push SN-0042 empty.toml --allow-empty   # silences every device"],
                          exits=exits)
    p.add_argument("box_id")
    p.add_argument("file", type=Path)
    p.add_argument("--no-check", action="store_true", help="send it even if it does not validate here")
    p.add_argument("--allow-empty", action="store_true",
                   help="allow a configuration without points (the Box then reads nothing)")
    p.add_argument("--wait", type=duration, default=120,
                   help="wait this long for the final outcome, probation included (default 120s; 0: don't wait)")
    s = clikit.subcommand(cs, "show", "the configurations sent to a Box and what it answered",
                          ["boxcloud config show SN-0042", "boxcloud config show SN-0042 --json"], exits=exits)
    s.add_argument("box_id")
    s.add_argument("--history", type=clikit.count(1, 1000), default=5, metavar="N",
                   help="how many, 1..1000 (default %(default)s)")
    s.add_argument("--json", action="store_true", help="one JSON list")
    g = clikit.subcommand(cs, "get", "print the configuration a Box runs (as its heartbeat reports it)",
                          ["boxcloud config get SN-0042 > running.toml", "boxcloud config get SN-0042 --json"],
                          exits=exits)
    g.add_argument("box_id")
    g.add_argument("--json", action="store_true", help="version, digest and text as JSON")
    d = clikit.subcommand(cs, "diff", "the differences between a file and the configuration a Box runs",
                          ["boxcloud config diff SN-0042 site.toml"], exits=exits)
    d.add_argument("box_id")
    d.add_argument("file", type=Path)

    c = sub.add_parser("cmd", help="send a command to a Box (write, read, restart, reboot, logs, renew_cert), "
                                   "or list the recent ones",
                       description="Send a command to a Box and wait for its answer: write point=NAME value=V "
                                   "[priority=N relinquish=true], read points=A,B, restart, reboot, logs [lines=N], "
                                   "renew_cert; or 'cmd list BOX_ID' for the recent ones. Values are JSON or text.",
                       epilog=clikit.epilog(["boxcloud cmd SN-0042 read points=ahu1.supply_temp,ahu1.fan_speed",
                                             "boxcloud cmd SN-0042 write point=ahu1.supply_setpoint value=21.5",
                                             "boxcloud cmd SN-0042 logs lines=50",
                                             "boxcloud cmd list SN-0042 --json"], exits))
    c.add_argument("box_id", help="the Box (or 'list')")
    c.add_argument("name", help="the command (or, after 'list', the Box)")
    c.add_argument("args", nargs="*", default=[], metavar="KEY=VALUE", help="arguments; values are JSON or text")
    c.add_argument("--ttl", type=duration, default=300, help="the command expires after this (default 5m)")
    c.add_argument("--wait", type=duration, default=30, help="wait this long for the Box's answer (0: don't)")
    c.add_argument("--json", action="store_true", help="the answer (or the list) as JSON")


def run(cloud: Cloud, args: argparse.Namespace) -> int:
    """Run a `config` or `cmd` subcommand."""
    if args.cmd == "cmd":
        return _list_commands(cloud, args.name, args.json) if args.box_id == "list" else _command(cloud, args)
    if args.config_cmd == "push":
        return _push(cloud, args)
    if args.config_cmd == "show":
        return _show(cloud, args.box_id, args.history, args.json)
    if args.config_cmd == "get":
        return _get(cloud, args.box_id, args.json)
    return _diff(cloud, args.box_id, args.file)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CloudError(f"{path} is not UTF-8 text") from None
    except OSError as e:
        raise CloudError(f"cannot read {path}: {e.strerror}") from None


def _wait(what: str, wait_s: float, done: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + wait_s
    with out.waiting(f"waiting for the Box's answer to {what} (at most {out.duration(wait_s)})"):
        while time.monotonic() < deadline:
            if done():
                return True
            time.sleep(0.2)
    return False


def config_doc(r: ConfigRow) -> dict[str, object]:
    """A pushed configuration and its answer, for scripts."""
    return {"box_id": r.box_id, "version": r.version, "status": r.status, "reasons": r.reasons,
            "created": out.iso(r.created), "sent": out.iso(r.published), "answered": out.iso(r.answered),
            "sha256": hashlib.sha256(r.toml.encode()).hexdigest(), "allow_empty": r.allow_empty}


def _push(cloud: Cloud, args: argparse.Namespace) -> int:
    text = _read(args.file)
    version = cloud.push_config(args.box_id, text, check=not args.no_check, allow_empty=args.allow_empty)
    out.line(f"Configuration version {version} for {args.box_id} queued.")
    if args.wait <= 0:
        return 0

    def row() -> ConfigRow:
        found = next((r for r in cloud.store.configs(args.box_id, 3) if r.version == version), None)
        assert found is not None
        return found

    deadline = time.monotonic() + args.wait
    if not _wait(f"configuration version {version}", args.wait, lambda: row().status is not None):
        return _no_answer(f"configuration version {version}", args.wait)
    r = row()
    on_probation = r.status == "applied" and bool(r.reasons) and r.reasons[0].startswith(ON_PROBATION)
    if on_probation:
        out.line(f"Box {args.box_id}: configuration version {version} applied, {r.reasons[0]}.")
        left = max(0.0, deadline - time.monotonic())
        if not _wait(f"the probation of version {version}", left, lambda: row().status != "applied"):
            print(f"boxcloud: configuration version {version} is still on probation after {out.duration(args.wait)}; "
                  f"'boxcloud config show {args.box_id}' shows how it ends", file=sys.stderr)
            return EXIT_NO_ANSWER
        r = row()
    status = (r.status or "").replace("_", " ")
    out.line(f"Box {args.box_id}: configuration version {version} {status}" + (":" if r.reasons else "."))
    for reason in r.reasons:
        out.line(f"    {reason}")
    return 0 if r.status in ("applied", "kept") else EXIT_REFUSED


def _no_answer(what: str, wait_s: float) -> int:
    print(f"boxcloud: no answer from the Box within {out.duration(wait_s)} to {what}; it stays queued until it "
          "expires (is 'boxcloud run' running, and the Box online? 'boxcloud box list')", file=sys.stderr)
    return EXIT_NO_ANSWER


def _show(cloud: Cloud, box_id: str, history: int, as_json: bool) -> int:
    cloud.box(box_id)
    rows = cloud.store.configs(box_id, history)
    if as_json:
        out.emit_json([config_doc(r) for r in rows])
        return 0
    if not rows:
        out.line(f"No configuration was pushed to {box_id}.")
        return 0
    out.table(["VERSION", "OUTCOME", "CREATED", "ANSWERED", "REASONS"],
              [[r.version, (r.status or ("sent, no answer yet" if r.published else "queued")).replace("_", " "),
                out.when(r.created), out.when(r.answered) if r.answered else "-", "\n".join(r.reasons)]
               for r in rows])
    return 0


def running_config(cloud: Cloud, box_id: str) -> tuple[ConfigRow, str]:
    """The pushed configuration a Box runs, and its digest (from the Box's latest heartbeat).

    Raises:
        CloudError: no heartbeat yet, the Box does not report it, or it runs a configuration
            that was not pushed from here.
    """
    cloud.box(box_id)
    health = cloud.store.health(box_id)
    if health is None:
        raise CloudError(f"Box {box_id} has not sent a heartbeat yet: its configuration is not known here")
    digest = health[1].get("config_sha256")
    if not isinstance(digest, str):
        raise CloudError(f"Box {box_id} does not report its configuration (its software is older than this cloud)")
    for r in cloud.store.configs(box_id, 1000):
        if hashlib.sha256(r.toml.encode()).hexdigest() == digest:
            return r, digest
    raise CloudError(f"Box {box_id} runs a configuration that was not pushed from this cloud (written on the Box; "
                     f"sha256 {digest[:16]}...): push one with 'boxcloud config push' to manage it from here")


def _get(cloud: Cloud, box_id: str, as_json: bool) -> int:
    r, digest = running_config(cloud, box_id)
    if as_json:
        out.emit_json({"box_id": box_id, "version": r.version, "sha256": digest, "toml": r.toml})
    else:
        sys.stdout.write(r.toml if r.toml.endswith("\n") or not r.toml else r.toml + "\n")
    return 0


def _diff(cloud: Cloud, box_id: str, path: Path) -> int:
    text = _read(path)
    r, _ = running_config(cloud, box_id)
    lines = list(difflib.unified_diff(r.toml.splitlines(keepends=True), text.splitlines(keepends=True),
                                      f"{box_id} (running, version {r.version})", str(path)))
    if not lines:
        out.line(f"No difference: {path} is what {box_id} runs (version {r.version}).")
        return 0
    sys.stdout.writelines(line if line.endswith("\n") else line + "\n" for line in lines)
    return EXIT_DIFFERENT


def _cmd_args(name: str, pairs: list[str]) -> dict[str, object]:
    result: dict[str, object] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise CloudError(f"argument {pair!r} is not KEY=VALUE (e.g. point=ahu1.supply_setpoint value=21.5)")
        try:
            value: object = json.loads(text)
        except ValueError:
            value = text
        if name == "read" and key == "points" and isinstance(value, str):
            value = [v for v in value.split(",") if v]
        result[key] = value
    return result


def command_doc(r: CommandRow) -> dict[str, object]:
    """A command and its answer, for scripts."""
    return {"id": r.id, "box_id": r.box_id, "name": r.name, "args": r.args, "status": r.status or _pending(r),
            "detail": r.detail, "result": r.result, "faults": r.reply.get("faults") or {}, "lines": r.lines,
            "created": out.iso(r.created), "sent": out.iso(r.published), "answered": out.iso(r.answered),
            "expires": out.iso(r.expires)}


def _pending(r: CommandRow) -> str:
    if not r.published and r.expires < time.time():
        return "expired unsent"
    return "sent, no answer yet" if r.published else "queued"


def _list_commands(cloud: Cloud, box_id: str, as_json: bool) -> int:
    cloud.box(box_id)
    rows = cloud.store.commands(box_id)
    if as_json:
        out.emit_json([command_doc(r) for r in rows])
        return 0
    if not rows:
        out.line(f"No commands were sent to {box_id}.")
        return 0
    out.table(["CREATED", "ID", "COMMAND", "OUTCOME", "DETAIL"],
              [[out.when(r.created), r.id, f"{r.name} {json.dumps(r.args) if r.args else ''}".strip(),
                r.status or _pending(r), r.detail] for r in rows])
    return 0


def _command(cloud: Cloud, args: argparse.Namespace) -> int:
    cmd_id = cloud.send_command(args.box_id, args.name, _cmd_args(args.name, args.args), args.ttl)
    if not args.json:
        out.line(f"Command {cmd_id} ({args.name}) for {args.box_id} queued.")
    if args.wait <= 0:
        if args.json:
            out.emit_json(command_doc(cloud.store.command(cmd_id)))  # type: ignore[arg-type]
        return 0

    def answer() -> CommandRow | None:
        r = cloud.store.command(cmd_id)
        return r if r is not None and r.status is not None else None

    if not _wait(f"command {cmd_id}", args.wait, lambda: answer() is not None):
        return _no_answer(f"command {cmd_id}", args.wait)
    r = answer()
    assert r is not None
    if args.json:
        out.emit_json(command_doc(r))
        return 0 if r.status == "ok" else EXIT_REFUSED
    out.line(f"Box {args.box_id}: {args.name} {r.status}" + (f": {r.detail}" if r.detail else ""))
    for point, value in r.result.items():
        out.line(f"    {point} = {value}")
    faults = r.reply.get("faults")
    if isinstance(faults, dict):
        for point, code in faults.items():
            why = Quality(code).name.lower() if code in Quality._value2member_map_ else code
            out.line(f"    {point}: no value ({why})")
    for text in r.lines:
        out.line(f"    {text}")
    return 0 if r.status == "ok" else EXIT_REFUSED
