"""`boxcloud release ...`, `boxcloud deploy ...` and `boxcloud box tag/untag`: parsers and commands.

Part of `cloud.cli` (kept apart for size). Every command works on the cloud's home, whether or
not `boxcloud run` runs: the database is shared, and the running cloud sends the waves.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

from cloud.deploy import DEFAULT_BOX_TIMEOUT_S, DEFAULT_HEALTH_S, DEFAULT_WAVES, ENDED
from cloud.errors import CloudError
from cloud.platform import Cloud
from cloud.store import DeploymentBoxRow, DeploymentRow
from ota import repository

SOURCE_ROOT = Path(__file__).resolve().parents[1]
Duration = Callable[[str], float]


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser], duration: Duration) -> None:
    """The `release` and `deploy` subcommands."""
    rel = sub.add_parser("release", help="build, publish and list Box software releases (TUF targets)")
    rel_sub = rel.add_subparsers(dest="release_cmd", required=True)
    b = rel_sub.add_parser("build", help="build a software bundle from this source tree",
                           description="Build a bundle (.tar.gz with a manifest) of boxd from this source tree.")
    b.add_argument("--version", required=True, help="the release's semantic version, e.g. 1.3.0")
    b.add_argument("--hardware", action="append", default=[], metavar="H",
                   help="a hardware id it fits (repeatable; default: this machine's)")
    b.add_argument("-o", "--output", type=Path, help="the bundle file (default: boxd-VERSION.tar.gz here)")
    p = rel_sub.add_parser("publish", help="publish a bundle in the cloud's TUF repository",
                           description="Sign a bundle into the TUF repository as a target (its version and "
                                       "hardware from its manifest); Boxes can then be sent it with 'deploy create'.")
    p.add_argument("bundle", type=Path)
    rel_sub.add_parser("list", help="list the published releases and when the TUF metadata expires")
    r = rel_sub.add_parser("rotate-key", help="replace a TUF role's key (a new root version signs the change)",
                           description="Replace a key of a TUF role: a new root version, signed by the root "
                                       "threshold (for a root key: of the old and the new root), names the new key; "
                                       "the role's metadata is re-signed at once; the old private key moves to "
                                       "<home>/ota/keys/retired/. Boxes follow the new root at their next update. "
                                       "Rotating needs the offline root keys in <home>/ota/keys/offline/.")
    r.add_argument("role", choices=sorted(repository.ROLES), help="the role whose key is replaced")
    r.add_argument("--keyid", help="which key of the role (default: its first)")

    dep = sub.add_parser("deploy", help="deploy a release to Boxes in waves, watch it, stop it")
    dep_sub = dep.add_subparsers(dest="deploy_cmd", required=True)
    c = dep_sub.add_parser(
        "create", help="start deploying a published release to Boxes (by id or by tag)",
        description="Send a published release to Boxes a wave at a time: a wave starts when every Box of the "
                    "one before has finished and the failures are within --max-failures; one more halts it.")
    c.add_argument("target", help="the release: its target name ('release list') or its version")
    who = c.add_mutually_exclusive_group(required=True)
    who.add_argument("--box", action="append", default=[], metavar="ID",
                     help="a Box (repeatable; the first ones go in the first wave)")
    who.add_argument("--tag", help="every unrevoked Box with this tag")
    c.add_argument("--version", help="refuse unless the target is this version")
    c.add_argument("--waves", default=DEFAULT_WAVES,
                   help="cumulative Box counts or percents of the Boxes (default %(default)s)")
    c.add_argument("--max-failures", default="0", metavar="N|P%",
                   help="failures tolerated before it halts, a count or a percent (default 0: the first halts)")
    c.add_argument("--health-s", type=int, default=DEFAULT_HEALTH_S,
                   help="how long a Box must stay healthy on the new version to commit (default %(default)s)")
    c.add_argument("--box-timeout-s", type=float, default=DEFAULT_BOX_TIMEOUT_S,
                   help="a Box with no final answer this long after it was sent has failed (default %(default)g)")
    dep_sub.add_parser("list", help="list deployments, newest first")
    s = dep_sub.add_parser("show", help="show a deployment and each Box's wave, state and last event")
    s.add_argument("id")
    w = dep_sub.add_parser("watch", help="print state changes until the deployment ends",
                           description="Print each change until the deployment is completed (exit 0), halted or "
                                       "stopped (exit 1); exit 2 on timeout or error.")
    w.add_argument("id")
    w.add_argument("--timeout", type=duration, default=0, help="give up after this (e.g. 30m; default: never)")
    st = dep_sub.add_parser("stop", help="the emergency stop: send no more, abort the downloads under way")
    st.add_argument("id")
    st.add_argument("--reason", default="stopped by the operator", help="recorded with the deployment")


def add_tag_parsers(box: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`box tag` and `box untag`."""
    t = box.add_parser("tag", help="give a Box tags (deployments can target a tag)")
    t.add_argument("box_id")
    t.add_argument("tags", nargs="+", metavar="TAG")
    u = box.add_parser("untag", help="take tags off a Box")
    u.add_argument("box_id")
    u.add_argument("tags", nargs="+", metavar="TAG")


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def cmd_tags(cloud: Cloud, args: argparse.Namespace) -> int:
    """`box tag` / `box untag`."""
    if args.box_cmd == "tag":
        cloud.tag(args.box_id, args.tags)
    else:
        cloud.untag(args.box_id, args.tags)
    print(f"Box {args.box_id}: tags {', '.join(cloud.tags(args.box_id)) or '(none)'}")
    return 0


def cmd_release(cloud: Cloud, args: argparse.Namespace) -> int:
    """The `release` subcommands."""
    if args.release_cmd == "build":
        return _build(args.version, args.hardware, args.output)
    if args.release_cmd == "publish":
        bundle_mod = _bundle_module()
        try:
            manifest = bundle_mod.read_manifest(args.bundle)
        except bundle_mod.BundleError as e:
            raise CloudError(f"cannot publish {args.bundle}: {e}") from None
        cloud.ensure_ota_repository()
        try:
            target = repository.publish_release(cloud.ota_repo, cloud.ota_keys, args.bundle, manifest.version,
                                                list(manifest.hardware))
        except repository.RepositoryError as e:
            raise CloudError(str(e)) from None
        print(f"Published {target.path}: version {manifest.version} for {', '.join(manifest.hardware)} "
              f"({target.length} bytes).")
        print(f"Deploy it with: boxcloud deploy create {target.path} --box BOX_ID (or --tag TAG)")
        return 0
    if args.release_cmd == "rotate-key":
        cloud.ensure_ota_repository()
        try:
            keyid = repository.rotate_key(cloud.ota_repo, cloud.ota_keys, args.role, args.keyid)
        except repository.RepositoryError as e:
            raise CloudError(f"cannot rotate the {args.role} key: {e}") from None
        print(f"The {args.role} role now uses key {keyid[:16]}...; the replaced private key is in "
              f"{cloud.ota_keys / 'retired'}.")
        return 0
    cloud.ensure_ota_repository()
    targets = repository.published_targets(cloud.ota_repo)
    if not targets:
        print("No release published yet: 'boxcloud release publish BUNDLE'.")
    else:
        print(f"{'TARGET':<36} {'VERSION':<14} {'BYTES':>10}  HARDWARE")
        for name, (version, hardware, length) in sorted(targets.items(), key=lambda t: t[1][0]):
            print(f"{name:<36} {version:<14} {length:>10}  {', '.join(hardware)}")
    expiries = repository.expiries(cloud.ota_repo)
    print("TUF metadata expires: " + ", ".join(f"{role} {when:%Y-%m-%d %H:%M} UTC"
                                                for role, when in expiries.items()))
    return 0


def _bundle_module() -> ModuleType:
    """`ota.bundle` (build, read_manifest, hardware_id, BundleError), imported when a command needs it."""
    try:
        return importlib.import_module("ota.bundle")
    except ImportError as e:
        raise CloudError(f"bundles are not supported by this version (ota.bundle: {e})") from None


def _build(version: str, hardware: list[str], output: Path | None) -> int:
    bundle_mod = _bundle_module()
    hw = hardware or [bundle_mod.hardware_id()]
    out = (output or Path(f"boxd-{version}.tar.gz")).resolve()
    try:
        repository.parse_version(version)
    except repository.RepositoryError as e:
        raise CloudError(str(e)) from None
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        try:
            built = Path(bundle_mod.build(SOURCE_ROOT, Path(tmp), version, hw))
        except bundle_mod.BundleError as e:
            raise CloudError(f"cannot build the bundle: {e}") from None
        shutil.move(built, out)
    print(f"Built {out}: boxd {version} for {', '.join(hw)}.")
    print(f"Publish it with: boxcloud release publish {out}")
    return 0


def cmd_deploy(cloud: Cloud, args: argparse.Namespace) -> int:
    """The `deploy` subcommands."""
    if args.deploy_cmd == "create":
        d = cloud.create_deployment(args.target, boxes=args.box, tag=args.tag, version=args.version,
                                    waves=args.waves, max_failures=args.max_failures, health_s=args.health_s,
                                    box_timeout_s=args.box_timeout_s)
        sizes = [n - (d.waves[i - 1] if i else 0) for i, n in enumerate(d.waves)]
        print(f"Deployment {d.id}: {d.target} (version {d.version}) to {d.waves[-1]} Box(es)")
        print(f"  waves: {' + '.join(map(str, sizes))} Box(es) (cumulative {', '.join(map(str, d.waves))}); "
              f"halts after {d.max_failures + 1} failure(s)")
        print(f"  the running cloud sends it; follow it with: boxcloud deploy watch {d.id}")
        return 0
    if args.deploy_cmd == "list":
        rows = cloud.deployments()
        if not rows:
            print("No deployments yet: 'boxcloud deploy create TARGET --box ID'.")
            return 0
        print(f"{'ID':<12} {'STATUS':<10} {'VERSION':<12} {'BOXES':>5} {'DONE':>5} {'FAILED':>6}  CREATED")
        for d in rows:
            boxes = cloud.store.deployment_boxes(d.id)
            ok = sum(b.state == "committed" for b in boxes)
            bad = sum(b.state in ("failed", "rolled_back", "timeout") for b in boxes)
            print(f"{d.id:<12} {d.status:<10} {d.version:<12} {len(boxes):>5} {ok:>5} {bad:>6}  {_when(d.created)}")
        return 0
    if args.deploy_cmd == "show":
        return _show(cloud, cloud.deployment(args.id))
    if args.deploy_cmd == "stop":
        d = cloud.stop_deployment(args.id, args.reason)
        print(f"Deployment {d.id}: {d.status}" + (f" ({d.reason})" if d.reason else ""))
        for b in cloud.store.deployment_boxes(d.id):
            print(f"  {b.box_id:<24} {b.state}")
        return 0
    return watch(cloud, args.id, args.timeout)


def _show(cloud: Cloud, d: DeploymentRow) -> int:
    print(f"Deployment {d.id}: {d.status}" + (f" ({d.reason})" if d.reason else ""))
    who = f"tag {d.selector['tag']}" if "tag" in d.selector else "Boxes named"
    print(f"  release:  {d.target} (version {d.version}); {who}")
    print(f"  waves:    cumulative {', '.join(map(str, d.waves))}; at most {d.max_failures} failure(s); "
          f"health {d.health_s} s; Box timeout {d.box_timeout_s:g} s")
    print(f"  created:  {_when(d.created)} UTC; last change {_when(d.updated)} UTC")
    events = cloud.store.ota_events(d.id)
    print(f"\n  {'WAVE':>4} {'BOX':<24} {'STATE':<12} {'SENT':<19} {'UPDATED':<19} DETAIL")
    for b in cloud.store.deployment_boxes(d.id):
        print(f"  {b.wave:>4} {b.box_id:<24} {b.state:<12} {_when(b.sent):<19} {_when(b.updated):<19} {b.detail}")
        if b.box_id in events:
            received, doc = events[b.box_id]
            detail = f" ({doc['detail']})" if doc.get("detail") else ""
            print(f"       last event {_when(received)}: {doc.get('state')}{detail}; running {doc.get('running')}")
    return 0


def watch(cloud: Cloud, dep_id: str, timeout_s: float, step: float = 0.5) -> int:
    """Print changes of a deployment until it ends: 0 completed, 1 halted or stopped, 2 timeout or error."""
    try:
        d = cloud.deployment(dep_id)
    except CloudError as e:
        print(f"boxcloud: {e}", file=sys.stderr)
        return 2
    deadline = time.monotonic() + timeout_s if timeout_s > 0 else None
    seen: dict[str, tuple[str, str]] = {}
    print(f"Deployment {d.id}: {d.target} (version {d.version}), {d.status}", flush=True)
    while True:
        boxes: list[DeploymentBoxRow] = cloud.store.deployment_boxes(dep_id)
        for b in boxes:
            if seen.get(b.box_id) != (b.state, b.detail):
                seen[b.box_id] = (b.state, b.detail)
                print(f"{_when(b.updated)}  wave {b.wave}  {b.box_id:<24} {b.state}"
                      + (f" ({b.detail})" if b.detail else ""), flush=True)
        d = cloud.deployment(dep_id)
        if d.status in ENDED:
            print(f"Deployment {d.id} {d.status}" + (f": {d.reason}" if d.reason else ""), flush=True)
            return 0 if d.status == "completed" else 1
        if deadline is not None and time.monotonic() > deadline:
            print(f"Deployment {d.id} is still {d.status} after {timeout_s:g} s (it goes on).", flush=True)
            return 2
        time.sleep(step)
