"""`boxcloud release ...`, `boxcloud deploy ...` and `boxcloud box tag/untag`: parsers and commands.

Part of `cloud.cli` (kept apart for size). Every command works on the cloud's home, whether or
not `boxcloud run` runs: the database is shared, and the running cloud sends the waves.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from boxkit import clikit
from boxkit.machine import hardware_id
from cloud import _out as out
from cloud import image_release, release
from cloud import tufrepo as repository
from cloud.deploy import DEFAULT_BOX_TIMEOUT_S, DEFAULT_WAVES, ENDED, EndedError
from cloud.errors import CloudError, NothingChangedError
from cloud.platform import Cloud
from cloud.store import DeploymentBoxRow, DeploymentRow
from proto import names
from proto.commands import DEFAULT_HEALTH_S

SOURCE_ROOT = Path(__file__).resolve().parents[1]
Duration = Callable[[str], float]


def add_parsers(sub: argparse._SubParsersAction[clikit.Parser], duration: Duration, exits: str) -> None:
    """The `release` and `deploy` subcommands."""
    rel = sub.add_parser("release", help="build, publish and list Box software releases (TUF targets)",
                         description="Build, publish and list Box software releases (TUF targets).",
                         epilog=clikit.epilog(["boxcloud release build --version 0.2.0 -o /tmp/boxd-0.2.0.tar.gz",
                                               "boxcloud release publish /tmp/boxd-0.2.0.tar.gz"], exits))
    rel_sub = rel.add_subparsers(dest="release_cmd", required=True, metavar="COMMAND")
    b = clikit.subcommand(rel_sub, "build", "build a software bundle (.tar.gz with a manifest) of boxd from this "
                                            "source tree", ["boxcloud release build --version 0.2.0",
                                                            "boxcloud release build --version 0.2.0 --hardware box-a1 "
                                                            "-o /tmp/boxd-0.2.0.tar.gz"], exits=exits)
    b.add_argument("--version", required=True, help="the release's semantic version, e.g. 1.3.0")
    b.add_argument("--hardware", action="append", default=[], metavar="H",
                   help="a hardware id it fits (repeatable; default: this machine's)")
    b.add_argument("-o", "--output", type=Path, help="the bundle file (default: boxd-VERSION.tar.gz here)")
    bi = clikit.subcommand(rel_sub, "build-image", "build an image release (the whole root file system, for Boxes "
                                                   "running the Box image) from image/build.sh's root.img",
                           ["boxcloud release build-image build/image/release/root.img --version 0.2.0",
                            "boxcloud release build-image root.img --version 0.2.0 --boot-tries 2 -o /tmp/img.tar"],
                           exits=exits)
    bi.add_argument("root_img", type=Path, help="the root file system image (build/image/release/root.img)")
    bi.add_argument("--version", required=True, help="the release's semantic version (the image's, as built with "
                                                     "IMAGE_VERSION)")
    bi.add_argument("--hardware", action="append", default=[], metavar="H",
                    help="a hardware id it fits (repeatable; default: this machine's)")
    bi.add_argument("--boot-tries", type=int, default=3, help="boots it gets to prove itself (1..5, default 3)")
    bi.add_argument("-o", "--output", type=Path, help="the release file (default: box-image-VERSION.tar here)")
    p = clikit.subcommand(rel_sub, "publish", "sign a bundle into the TUF repository as a target (version and "
                                              "hardware from its manifest); Boxes can then be sent it with "
                                              "'deploy create'", ["boxcloud release publish /tmp/boxd-0.2.0.tar.gz"],
                          exits=exits)
    p.add_argument("bundle", type=Path)
    ls = clikit.subcommand(rel_sub, "list", "list the published releases and when the TUF metadata expires",
                           ["boxcloud release list", "boxcloud release list --json"], exits=exits)
    ls.add_argument("--json", action="store_true", help="one JSON object")
    r = clikit.subcommand(rel_sub, "rotate-key", "replace a TUF role's key (a new root version signs the change)",
                          ["boxcloud release rotate-key timestamp", "boxcloud release rotate-key root --keyid 1a2b..."],
                          description="Replace a key of a TUF role: a new root version, signed by the root "
                                      "threshold (for a root key: of the old and the new root), names the new key; "
                                      "the role's metadata is re-signed at once; the old private key moves to "
                                      "<home>/ota/keys/retired/. Boxes follow the new root at their next update. "
                                      "Rotating needs the offline root keys in <home>/ota/keys/offline/.",
                          exits=exits)
    r.add_argument("role", choices=sorted(repository.ROLES), help="the role whose key is replaced")
    r.add_argument("--keyid", help="which key of the role (default: its first)")

    dep = sub.add_parser("deploy", help="deploy a release to Boxes in waves, watch it, stop it",
                         description="Deploy a release to Boxes in waves, watch it, stop it.",
                         epilog=clikit.epilog(["boxcloud deploy create boxd-0.2.0.tar.gz --tag pilot",
                                               "boxcloud deploy watch d-1a2b3c4d"], exits))
    dep_sub = dep.add_subparsers(dest="deploy_cmd", required=True, metavar="COMMAND")
    c = clikit.subcommand(
        dep_sub, "create", "start deploying a published release to Boxes (by id or by tag)",
        ["boxcloud deploy create boxd-0.2.0.tar.gz --box SN-0042 --health-s 120",
         "boxcloud deploy create 0.2.0 --tag floor3 --waves 1,25%,100% --max-failures 10%"],
        description="Send a published release to Boxes a wave at a time: a wave starts when every Box of the "
                    "one before has finished and the failures are within --max-failures; one more halts it.",
        exits=exits)
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
    c.add_argument("--health-s", type=int, default=DEFAULT_HEALTH_S, metavar="S",
                   help="the deadline, in seconds after it starts the new version, for each Box to become healthy "
                        "(connected, every field bus polling, data acknowledged) and commit; a Box not healthy by "
                        "then rolls back by itself (default %(default)s)")
    c.add_argument("--box-timeout-s", type=float, default=DEFAULT_BOX_TIMEOUT_S, metavar="S",
                   help="a Box with no final answer this long after it was sent has failed (default %(default)g)")
    ls = clikit.subcommand(dep_sub, "list", "list deployments, newest first",
                           ["boxcloud deploy list", "boxcloud deploy list --json"], exits=exits)
    ls.add_argument("--json", action="store_true", help="one JSON list")
    s = clikit.subcommand(dep_sub, "show", "show a deployment and each Box's wave, state and last event",
                          ["boxcloud deploy show d-1a2b3c4d", "boxcloud deploy show d-1a2b3c4d --json"], exits=exits)
    s.add_argument("id")
    s.add_argument("--json", action="store_true", help="one JSON object")
    w = clikit.subcommand(dep_sub, "watch", "print state changes until the deployment ends",
                          ["boxcloud deploy watch d-1a2b3c4d", "boxcloud deploy watch d-1a2b3c4d --timeout 30m"],
                          description="Print each change until the deployment ends: exit 0 completed, 4 halted or "
                                      "stopped, 3 still running at --timeout, 1 no such deployment.", exits=exits)
    w.add_argument("id")
    w.add_argument("--timeout", type=duration, default=0, help="give up after this (e.g. 30m; default: never)")
    st = clikit.subcommand(dep_sub, "stop", "the emergency stop: send no more, abort the downloads under way",
                           ["boxcloud deploy stop d-1a2b3c4d --reason 'pumps restarting'"], exits=exits)
    st.add_argument("id")
    st.add_argument("--reason", default="stopped by the operator", help="recorded with the deployment")


def cmd_release(cloud: Cloud, args: argparse.Namespace) -> int:
    """The `release` subcommands."""
    if args.release_cmd == "build":
        return _build(args.version, args.hardware, args.output)
    if args.release_cmd == "build-image":
        return _build_image(args.root_img, args.version, args.hardware, args.boot_tries, args.output)
    if args.release_cmd == "publish":
        if not args.bundle.is_file():
            raise CloudError(f"cannot publish {args.bundle}: no such file ('boxcloud release build' makes one)")
        try:
            if image_release.is_image_release(args.bundle):
                version, hardware = image_release.read_manifest(args.bundle)
            else:
                manifest = release.read_manifest(args.bundle)
                version, hardware = manifest.version, list(manifest.hardware)
        except release.ReleaseError as e:
            raise CloudError(f"cannot publish {args.bundle}: {e}") from None
        cloud.ensure_ota_repository()
        try:
            with out.waiting(f"signing {args.bundle.name} into the TUF repository"):
                target = repository.publish_release(cloud.ota_repo, cloud.ota_keys, args.bundle, version, hardware)
        except repository.RepositoryError as e:
            raise CloudError(str(e)) from None
        out.line(f"Published {target.path}: version {version} for {', '.join(hardware)} "
                 f"({out.size(target.length)}).")
        out.line(f"Deploy it with: boxcloud deploy create {target.path} --box BOX_ID (or --tag TAG)")
        return 0
    if args.release_cmd == "rotate-key":
        cloud.ensure_ota_repository()
        try:
            keyid = repository.rotate_key(cloud.ota_repo, cloud.ota_keys, args.role, args.keyid)
        except repository.RepositoryError as e:
            raise CloudError(f"cannot rotate the {args.role} key: {e}") from None
        out.line(f"The {args.role} role now uses key {keyid[:16]}...; the replaced private key is in "
                 f"{cloud.ota_keys / 'retired'}.")
        return 0
    return _list_releases(cloud, args.json)


def _list_releases(cloud: Cloud, as_json: bool) -> int:
    if not (cloud.ota_repo / "metadata" / "1.root.json").exists():  # a cloud made before init created it
        targets: dict[str, tuple[str, list[str], int]] = {}
        expiries: dict[str, object] = {}
    else:
        targets = {k: (v[0], list(v[1]), v[2]) for k, v in repository.published_targets(cloud.ota_repo).items()}
        expiries = dict(repository.expiries(cloud.ota_repo))
    ordered = sorted(targets.items(), key=lambda t: names.version_key(t[1][0]))
    if as_json:
        out.emit_json({"releases": [{"target": n, "version": v, "hardware": hw, "bytes": length}
                                    for n, (v, hw, length) in ordered],
                       "metadata_expires": {role: when.strftime("%Y-%m-%dT%H:%M:%SZ")  # type: ignore[attr-defined]
                                            for role, when in expiries.items()}})
        return 0
    if not ordered:
        out.line("No release published yet: 'boxcloud release publish BUNDLE'.")
    else:
        out.table(["TARGET", "VERSION", "SIZE", "HARDWARE"],
                  [[n, v, out.size(length), ", ".join(hw)] for n, (v, hw, length) in ordered])
    if expiries:
        out.line("TUF metadata expires: " + ", ".join(f"{role} {out.when(when.timestamp())}"  # type: ignore[attr-defined]
                                                      for role, when in expiries.items()))
    return 0


def _build(version: str, hardware: list[str], output: Path | None) -> int:
    hw = hardware or [hardware_id()]
    out_file = (output or Path(f"boxd-{version}.tar.gz")).resolve()
    if not names.VERSION.fullmatch(version):
        raise CloudError(f"{version!r} is not a semantic version (MAJOR.MINOR.PATCH[-PRE])")
    if not out_file.parent.is_dir():
        raise CloudError(f"cannot write {out_file}: no directory {out_file.parent}")
    if out_file.is_dir():
        raise CloudError(f"cannot write {out_file}: it is a directory (give a file name with -o)")
    return _built(out_file, f"boxd {version}", "the bundle", hw,
                  lambda tmp: release.build(SOURCE_ROOT, tmp, version, hw))


def _build_image(root_img: Path, version: str, hardware: list[str], tries: int, output: Path | None) -> int:
    hw = hardware or [hardware_id()]
    out_file = (output or Path(f"box-image-{version}.tar")).resolve()
    if not root_img.is_file():
        raise CloudError(f"cannot build an image release: no file {root_img} ('make image' makes "
                         "build/image/release/root.img)")
    if not out_file.parent.is_dir() or out_file.is_dir():
        raise CloudError(f"cannot write {out_file}: give a file in an existing directory with -o")
    return _built(out_file, f"the Box image {version}", "the image release", hw,
                  lambda tmp: image_release.build_image(root_img, tmp, version, hw, boot_tries=tries))


def _built(out_file: Path, what: str, kind: str, hw: list[str], build: Callable[[Path], Path]) -> int:
    """`build` into a temporary directory beside `out_file`, then moved there whole; said in words."""
    with tempfile.TemporaryDirectory(dir=out_file.parent) as tmp:
        try:
            with out.waiting(f"building {what}"):
                built = build(Path(tmp))
        except release.ReleaseError as e:
            raise CloudError(f"cannot build {kind}: {e}") from None
        shutil.move(built, out_file)
    out.line(f"Built {out_file}: {what} for {', '.join(hw)} ({out.size(out_file.stat().st_size)}).")
    out.line(f"Publish it with: boxcloud release publish {out_file}")
    return 0


def _counts(boxes: list[DeploymentBoxRow]) -> tuple[int, int]:
    return (sum(b.state == "committed" for b in boxes),
            sum(b.state in ("failed", "rolled_back", "timeout") for b in boxes))


def deployment_doc(cloud: Cloud, d: DeploymentRow, with_boxes: bool) -> dict[str, object]:
    """A deployment for scripts."""
    boxes = cloud.store.deployment_boxes(d.id)
    ok, bad = _counts(boxes)
    doc: dict[str, object] = {
        "id": d.id, "status": d.status, "reason": d.reason, "target": d.target, "version": d.version,
        "selector": d.selector, "waves": d.waves, "max_failures": d.max_failures, "health_s": d.health_s,
        "box_timeout_s": d.box_timeout_s, "boxes": len(boxes), "committed": ok, "failed": bad,
        "created": out.iso(d.created), "updated": out.iso(d.updated)}
    if with_boxes:
        events = cloud.store.ota_events(d.id)
        doc["boxes"] = [{"box_id": b.box_id, "wave": b.wave, "state": b.state, "detail": b.detail,
                         "sent": out.iso(b.sent), "updated": out.iso(b.updated),
                         "last_event": ({"received": out.iso(events[b.box_id][0]), **events[b.box_id][1]}
                                        if b.box_id in events else None)} for b in boxes]
    return doc


def cmd_deploy(cloud: Cloud, args: argparse.Namespace) -> int:
    """The `deploy` subcommands."""
    if args.deploy_cmd == "create":
        d = cloud.create_deployment(args.target, boxes=args.box, tag=args.tag, version=args.version,
                                    waves=args.waves, max_failures=args.max_failures, health_s=args.health_s,
                                    box_timeout_s=args.box_timeout_s)
        sizes = [n - (d.waves[i - 1] if i else 0) for i, n in enumerate(d.waves)]
        out.line(f"Deployment {d.id}: {d.target} (version {d.version}) to {d.waves[-1]} Box(es)")
        out.line(f"  waves: {' + '.join(map(str, sizes))} Box(es) (cumulative {', '.join(map(str, d.waves))}); "
                 f"halts after {d.max_failures + 1} failure(s)")
        out.line(f"  the running cloud sends it; follow it with: boxcloud deploy watch {d.id}")
        return 0
    if args.deploy_cmd == "list":
        rows = cloud.deployments()
        if args.json:
            out.emit_json([deployment_doc(cloud, d, False) for d in rows])
            return 0
        if not rows:
            out.line("No deployments yet: 'boxcloud deploy create TARGET --box ID'.")
            return 0
        table = []
        for d in rows:
            boxes = cloud.store.deployment_boxes(d.id)
            ok, bad = _counts(boxes)
            table.append([d.id, d.status, d.version, len(boxes), ok, bad, out.when(d.created)])
        out.table(["ID", "STATUS", "VERSION", "BOXES", "DONE", "FAILED", "CREATED"], table)
        return 0
    if args.deploy_cmd == "show":
        d = cloud.deployment(args.id)
        if args.json:
            out.emit_json(deployment_doc(cloud, d, True))
            return 0
        return _show(cloud, d)
    if args.deploy_cmd == "stop":
        try:
            d = cloud.stop_deployment(args.id, args.reason)
        except EndedError as e:
            ended = e.deployment
            raise NothingChangedError(f"Deployment {ended.id} had already ended: {ended.status}"
                                      + (f" ({ended.reason})" if ended.reason else "") + "; nothing changed") from None
        out.line(f"Deployment {d.id}: {d.status}" + (f" ({d.reason})" if d.reason else ""))
        for b in cloud.store.deployment_boxes(d.id):
            out.line(f"  {b.box_id:<24} {b.state}")
        return 0
    return watch(cloud, args.id, args.timeout)


def _show(cloud: Cloud, d: DeploymentRow) -> int:
    out.line(f"Deployment {d.id}: {d.status}" + (f" ({d.reason})" if d.reason else ""))
    who = f"tag {d.selector['tag']}" if "tag" in d.selector else "Boxes named"
    out.line(f"  release:  {d.target} (version {d.version}); {who}")
    out.line(f"  waves:    cumulative {', '.join(map(str, d.waves))}; at most {d.max_failures} failure(s); "
             f"health deadline {out.duration(d.health_s)}; Box timeout {out.duration(d.box_timeout_s)}")
    out.line(f"  created:  {out.when(d.created)}; last change {out.when(d.updated)}")
    events = cloud.store.ota_events(d.id)
    rows = []
    for b in cloud.store.deployment_boxes(d.id):
        last = ""
        if b.box_id in events:
            received, doc = events[b.box_id]
            detail = f" ({doc['detail']})" if doc.get("detail") else ""
            last = f"{out.when(received)}: {doc.get('state')}{detail}; running {doc.get('running')}"
        rows.append([b.wave, b.box_id, b.state, out.when(b.sent) if b.sent else "-", out.when(b.updated),
                     b.detail, last])
    out.line()
    out.table(["WAVE", "BOX", "STATE", "SENT", "UPDATED", "DETAIL", "LAST EVENT"], rows)
    return 0


def watch(cloud: Cloud, dep_id: str, timeout_s: float, step: float = 0.5) -> int:
    """Print changes of a deployment until it ends: 0 completed, 4 halted or stopped, 3 timeout, 1 no such
    deployment."""
    try:
        d = cloud.deployment(dep_id)
    except CloudError as e:
        print(f"boxcloud: {e}", file=sys.stderr)
        return 1
    deadline = time.monotonic() + timeout_s if timeout_s > 0 else None
    seen: dict[str, tuple[str, str]] = {}
    print(f"Deployment {d.id}: {d.target} (version {d.version}), {d.status}", flush=True)
    while True:
        boxes: list[DeploymentBoxRow] = cloud.store.deployment_boxes(dep_id)
        for b in boxes:
            if seen.get(b.box_id) != (b.state, b.detail):
                seen[b.box_id] = (b.state, b.detail)
                print(f"{out.when(b.updated)}  wave {b.wave}  {b.box_id:<24} {b.state}"
                      + (f" ({b.detail})" if b.detail else ""), flush=True)
        d = cloud.deployment(dep_id)
        if d.status in ENDED:
            print(f"Deployment {d.id} {d.status}" + (f": {d.reason}" if d.reason else ""), flush=True)
            return 0 if d.status == "completed" else 4
        if deadline is not None and time.monotonic() > deadline:
            print(f"Deployment {d.id} is still {d.status} after {out.duration(timeout_s)} (it goes on).", flush=True)
            return 3
        time.sleep(step)
