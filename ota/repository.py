"""The TUF repository of Box software releases (issue 7, repository side).

A repository is a directory::

    metadata/1.root.json, 2.root.json ...   every root version (clients walk the chain)
    metadata/root.json                       a copy of the newest root
    metadata/timestamp.json                  short-lived, renewed by the cloud
    metadata/N.snapshot.json, snapshot.json  consistent snapshots (+ a copy of the newest)
    metadata/N.targets.json, targets.json
    targets/<sha256>.<name>                  the bundles, hash-prefixed

Keys are PEM (PKCS#8) files named after their TUF key id, mode 0600:
``keys_dir/offline/<keyid>.pem`` for root (meant to be moved offline) and
``keys_dir/online/<keyid>.pem`` for targets, snapshot and timestamp. Everything is
built and signed with ``tuf.api.metadata``; every file is written atomically.

Every writing operation holds an exclusive ``fcntl.flock`` on ``<repo>/.lock``: `boxcloud
release publish` (one process) and the running cloud's scheduled renewal (another) never
interleave their writes. The lock is not reentrant: public operations take it, and the
private helpers they share (``_repair``...) do not.
"""

from __future__ import annotations

import copy
import fcntl
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner, Signer
from tuf.api.metadata import (
    Key,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from boxd.files import create_new, fsync_dir, temp_path, write_atomic, write_secret

ROOT_EXPIRY = timedelta(days=365)
TARGETS_EXPIRY = timedelta(days=91)
SNAPSHOT_EXPIRY = timedelta(days=7)
TIMESTAMP_EXPIRY = timedelta(days=1)
EXPIRY = {
    Root.type: ROOT_EXPIRY,
    Targets.type: TARGETS_EXPIRY,
    Snapshot.type: SNAPSHOT_EXPIRY,
    Timestamp.type: TIMESTAMP_EXPIRY,
}
ROOT_KEYS = 3
ONLINE_ROLES = (Targets.type, Snapshot.type, Timestamp.type)
ROLES = (Root.type, *ONLINE_ROLES)

_SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
)
_HARDWARE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_TARGET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")

_S = TypeVar("_S", Root, Timestamp, Snapshot, Targets)


class RepositoryError(Exception):
    """A repository operation refused (with the reason in words)."""


# -- versions and hardware ids ------------------------------------------------


def parse_version(version: str) -> tuple[tuple[int, int, int], tuple[tuple[int, int | str], ...] | None]:
    """A semantic version as a sortable key; RepositoryError when it is not one."""
    m = _SEMVER.fullmatch(version)
    if m is None:
        raise RepositoryError(f"{version!r} is not a semantic version (MAJOR.MINOR.PATCH[-PRE])")
    core = (int(m[1]), int(m[2]), int(m[3]))
    if m[4] is None:
        return core, None
    pre = tuple((0, int(p)) if p.isdigit() else (1, p) for p in m[4].split("."))
    return core, pre


def version_greater(a: str, b: str) -> bool:
    """True when semantic version `a` comes after `b` (a release after its pre-releases)."""
    (ca, pa), (cb, pb) = parse_version(a), parse_version(b)
    if ca != cb:
        return ca > cb
    if pa is None or pb is None:
        return pa is None and pb is not None
    return pa > pb


# -- keys -----------------------------------------------------------------------


def _key_dir(keys_dir: Path, role: str) -> Path:
    return keys_dir / ("offline" if role == Root.type else "online")


def _new_key(keys_dir: Path, role: str) -> Key:
    signer = CryptoSigner.generate_ed25519()
    directory = _key_dir(keys_dir, role)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_secret(directory / f"{signer.public_key.keyid}.pem", signer.private_bytes)
    return signer.public_key


def load_signer(keys_dir: Path, key: Key) -> Signer | None:
    """The signer of `key` if its private key is in `keys_dir`, else None."""
    for sub in ("offline", "online"):
        path = keys_dir / sub / f"{key.keyid}.pem"
        if path.exists():
            private = load_pem_private_key(path.read_bytes(), password=None)
            return CryptoSigner(private, key)  # type: ignore[arg-type]
    return None


def role_signers(keys_dir: Path, root: Root, role: str) -> list[Signer]:
    """Every available signer among the keys `root` gives to `role`."""
    signers = []
    for keyid in root.roles[role].keyids:
        signer = load_signer(keys_dir, root.keys[keyid])
        if signer is not None:
            signers.append(signer)
    return signers


# -- metadata files ---------------------------------------------------------------


def _meta_dir(path: Path) -> Path:
    return path / "metadata"


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def load(path: Path, role: str, cls: type[_S]) -> Metadata[_S]:
    """The newest metadata of `role` in the repository at `path`."""
    md = Metadata.from_file(str(_meta_dir(path) / f"{role}.json"))
    if not isinstance(md.signed, cls):
        raise RepositoryError(f"{role}.json holds {md.signed.type} metadata")
    return md


def sign_and_write(path: Path, md: Metadata[Any], signers: list[Signer]) -> None:
    """Replace `md`'s signatures with `signers`' and write it (versioned name too, but timestamp)."""
    md.signatures.clear()
    for signer in signers:
        md.sign(signer, append=True)
    data = md.to_bytes(JSONSerializer(compact=False))
    role = md.signed.type
    directory = _meta_dir(path)
    if role != Timestamp.type:
        write_atomic(directory / f"{md.signed.version}.{role}.json", data)
    write_atomic(directory / f"{role}.json", data)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the repository's exclusive lock (``<repo>/.lock``) for a writing operation."""
    path.mkdir(parents=True, exist_ok=True)
    with (path / ".lock").open("a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _bump(md: Metadata[Any], now: datetime | None = None) -> None:
    md.signed.version += 1
    md.signed.expires = (now or _now()).replace(microsecond=0) + EXPIRY[md.signed.type]


def _check_threshold(root: Root, role: str, signers: list[Signer]) -> None:
    threshold = root.roles[role].threshold
    if len(signers) < threshold:
        raise RepositoryError(
            f"{role}: {len(signers)} key(s) available, the threshold is {threshold}"
        )


def _write_role(path: Path, keys_dir: Path, root: Root, md: Metadata[Any]) -> None:
    signers = role_signers(keys_dir, root, md.signed.type)
    _check_threshold(root, md.signed.type, signers)
    sign_and_write(path, md, signers)


def _resnapshot(path: Path, keys_dir: Path, root: Root, targets_version: int, now: datetime | None = None) -> None:
    snapshot = load(path, Snapshot.type, Snapshot)
    snapshot.signed.meta["targets.json"] = MetaFile(version=targets_version)
    _bump(snapshot, now)
    _write_role(path, keys_dir, root, snapshot)
    _retimestamp(path, keys_dir, root, snapshot.signed.version, now)


def _retimestamp(
    path: Path, keys_dir: Path, root: Root, snapshot_version: int | None, now: datetime | None = None
) -> None:
    timestamp = load(path, Timestamp.type, Timestamp)
    if snapshot_version is not None:
        timestamp.signed.snapshot_meta = MetaFile(version=snapshot_version)
    _bump(timestamp, now)
    _write_role(path, keys_dir, root, timestamp)


def _valid(root: Root, md: Metadata[Any]) -> bool:
    role = md.signed.type
    return root.get_verification_result(role, md.signed_bytes, md.signatures).verified


def repair(path: Path, keys_dir: Path) -> Root:
    """Finish what an interrupted operation left (run first by every operation), under the lock."""
    with _locked(path):
        return _repair(path, keys_dir)


def _repair(path: Path, keys_dir: Path) -> Root:
    """Finish what an interrupted operation left (run first by every operation).

    Files are written one by one (targets, snapshot, timestamp; a new root before the
    metadata it re-keys): after a crash, metadata may be signed by a rotated-out key or not
    yet referenced by the role above it. Clients only ever see a consistent set (they start
    from the timestamp); this makes the repository whole again. Returns the current root.
    """
    root = load(path, Root.type, Root).signed
    targets = load(path, Targets.type, Targets)
    if not _valid(root, targets):
        _bump(targets)
        _write_role(path, keys_dir, root, targets)
    snapshot = load(path, Snapshot.type, Snapshot)
    if snapshot.signed.meta["targets.json"].version != targets.signed.version or not _valid(root, snapshot):
        _resnapshot(path, keys_dir, root, targets.signed.version)
        return root
    timestamp = load(path, Timestamp.type, Timestamp)
    snapshot_meta = timestamp.signed.snapshot_meta
    if snapshot_meta.version != snapshot.signed.version or not _valid(root, timestamp):
        _retimestamp(path, keys_dir, root, snapshot.signed.version)
    return root


# -- operations -------------------------------------------------------------------


def init_repository(path: Path, keys_dir: Path, *, root_threshold: int = 2) -> None:
    """Create a repository with fresh keys: 3 root keys (threshold 2), one per online role."""
    if not 1 <= root_threshold <= ROOT_KEYS:
        raise RepositoryError(f"root threshold must be 1..{ROOT_KEYS}")
    with _locked(path):
        _init_repository(path, keys_dir, root_threshold)


def _init_repository(path: Path, keys_dir: Path, root_threshold: int) -> None:
    if (_meta_dir(path) / "1.root.json").exists():
        raise RepositoryError(f"{path} already holds a repository")
    _meta_dir(path).mkdir(parents=True, exist_ok=True)
    (path / "targets").mkdir(exist_ok=True)
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    now = _now()
    root = Root(expires=now + ROOT_EXPIRY, consistent_snapshot=True)
    for _ in range(ROOT_KEYS):
        root.add_key(_new_key(keys_dir, Root.type), Root.type)
    root.roles[Root.type].threshold = root_threshold
    for role in ONLINE_ROLES:
        root.add_key(_new_key(keys_dir, role), role)
    root_md = Metadata(root)
    _write_role(path, keys_dir, root, root_md)

    targets = Metadata(Targets(expires=now + TARGETS_EXPIRY))
    _write_role(path, keys_dir, root, targets)
    snapshot = Metadata(Snapshot(expires=now + SNAPSHOT_EXPIRY))
    _write_role(path, keys_dir, root, snapshot)
    timestamp = Metadata(Timestamp(expires=now + TIMESTAMP_EXPIRY))
    _write_role(path, keys_dir, root, timestamp)


def published_versions(path: Path) -> list[str]:
    """The versions of every published release."""
    targets = load(path, Targets.type, Targets).signed
    versions = []
    for target in targets.targets.values():
        custom = target.custom
        if isinstance(custom, dict) and isinstance(custom.get("version"), str):
            versions.append(custom["version"])
    return versions


def publish_release(
    path: Path, keys_dir: Path, bundle: Path, version: str, hardware: list[str]
) -> TargetFile:
    """Add `bundle` as a target (custom: version, hardware); new targets, snapshot, timestamp."""
    with _locked(path):
        return _publish_release(path, keys_dir, bundle, version, hardware)


def _publish_release(path: Path, keys_dir: Path, bundle: Path, version: str, hardware: list[str]) -> TargetFile:
    parse_version(version)
    if not hardware:
        raise RepositoryError("a release must name the hardware it fits")
    for hw in hardware:
        if not isinstance(hw, str) or not _HARDWARE.fullmatch(hw):
            raise RepositoryError(f"hardware id {hw!r}: lowercase letters, digits, '-', 1..32")
    name = bundle.name
    if not _TARGET_NAME.fullmatch(name):
        raise RepositoryError(f"bundle name {name!r} is not a plain file name")
    for published in published_versions(path):
        if not version_greater(version, published):
            raise RepositoryError(f"version {version} is not greater than published {published}")

    root = _repair(path, keys_dir)
    targets = load(path, Targets.type, Targets)
    if name in targets.signed.targets:
        raise RepositoryError(f"a target named {name} is already published")
    # Hash the copy that is served, not the source (which could change in between).
    target_dir = path / "targets"
    tmp = temp_path(target_dir / name)
    with bundle.open("rb") as src, os.fdopen(create_new(tmp), "wb") as f:
        shutil.copyfileobj(src, f, 1 << 20)
        f.flush()
        os.fsync(f.fileno())
    target = TargetFile.from_file(name, str(tmp), ["sha256"])
    target.unrecognized_fields["custom"] = {"version": version, "hardware": list(hardware)}
    tmp.replace(target_dir / f"{target.hashes['sha256']}.{name}")
    fsync_dir(target_dir)

    targets.signed.targets[name] = target
    _bump(targets)
    _write_role(path, keys_dir, root, targets)
    _resnapshot(path, keys_dir, root, targets.signed.version)
    return target


def renew_timestamp(path: Path, keys_dir: Path, now: datetime | None = None) -> int:
    """A new timestamp version with a fresh expiry (from `now`, default the clock); returns its version."""
    with _locked(path):
        root = _repair(path, keys_dir)
        _retimestamp(path, keys_dir, root, None, now)
        return load(path, Timestamp.type, Timestamp).signed.version


def renew_snapshot(path: Path, keys_dir: Path, now: datetime | None = None) -> int:
    """A new snapshot version with a fresh expiry, and a new timestamp naming it; returns its version."""
    with _locked(path):
        root = _repair(path, keys_dir)
        snapshot = load(path, Snapshot.type, Snapshot)
        _bump(snapshot, now)
        _write_role(path, keys_dir, root, snapshot)
        _retimestamp(path, keys_dir, root, snapshot.signed.version, now)
        return snapshot.signed.version


def renew_targets(path: Path, keys_dir: Path, now: datetime | None = None) -> int:
    """A new targets version with a fresh expiry (same targets), a snapshot and a timestamp; returns
    the targets version."""
    with _locked(path):
        root = _repair(path, keys_dir)
        targets = load(path, Targets.type, Targets)
        _bump(targets, now)
        _write_role(path, keys_dir, root, targets)
        _resnapshot(path, keys_dir, root, targets.signed.version, now)
        return targets.signed.version


# Renew when less than this part of the role's lifetime is left.
RENEW_WHEN_LEFT = {Timestamp.type: 1 / 2, Snapshot.type: 1 / 3, Targets.type: 1 / 3}


def renew_expiring(path: Path, keys_dir: Path, now: datetime | None = None) -> list[str]:
    """Re-sign the online roles close to expiry (the cloud runs this every minute).

    Targets and snapshot when less than a third of their lifetime is left, the timestamp when
    less than half. Renewing a role renews those below it (targets -> snapshot -> timestamp).

    Returns:
        the roles renewed, in that order (empty: nothing was due).
    """
    at = (now or _now()).replace(microsecond=0)

    def due(role: str, cls: type[_S]) -> bool:
        left = load(path, role, cls).signed.expires - at
        return left < EXPIRY[role] * RENEW_WHEN_LEFT[role]

    if due(Targets.type, Targets):
        renew_targets(path, keys_dir, at)
        return [Targets.type, Snapshot.type, Timestamp.type]
    if due(Snapshot.type, Snapshot):
        renew_snapshot(path, keys_dir, at)
        return [Snapshot.type, Timestamp.type]
    if due(Timestamp.type, Timestamp):
        renew_timestamp(path, keys_dir, at)
        return [Timestamp.type]
    return []


def expiries(path: Path) -> dict[str, datetime]:
    """When each role's newest metadata expires."""
    return {
        Root.type: load(path, Root.type, Root).signed.expires,
        Targets.type: load(path, Targets.type, Targets).signed.expires,
        Snapshot.type: load(path, Snapshot.type, Snapshot).signed.expires,
        Timestamp.type: load(path, Timestamp.type, Timestamp).signed.expires,
    }


def published_targets(path: Path) -> dict[str, tuple[str, list[str], int]]:
    """Every published target: name -> (version, hardware ids, length in bytes)."""
    out = {}
    for name, target in load(path, Targets.type, Targets).signed.targets.items():
        custom = target.custom if isinstance(target.custom, dict) else {}
        version = custom.get("version")
        hardware = custom.get("hardware")
        out[name] = (
            version if isinstance(version, str) else "",
            [h for h in hardware if isinstance(h, str)] if isinstance(hardware, list) else [],
            target.length,
        )
    return out


def rotate_key(path: Path, keys_dir: Path, role: str, old_keyid: str | None = None) -> str:
    """Replace a key of `role` (for root: `old_keyid`, default the first) by a new one.

    The new root version is signed by the threshold of the old root and of the new one.
    The role's metadata (and what depends on it) is re-signed with the new key, and the
    replaced private key is moved to `keys_dir/retired/`. Returns the new key id.
    """
    if role not in ROLES:
        raise RepositoryError(f"unknown role {role!r}")
    with _locked(path):
        return _rotate_key(path, keys_dir, role, old_keyid)


def _rotate_key(path: Path, keys_dir: Path, role: str, old_keyid: str | None) -> str:
    _repair(path, keys_dir)
    root_md = load(path, Root.type, Root)
    old_root = copy.deepcopy(root_md.signed)
    keyids = old_root.roles[role].keyids
    old = old_keyid if old_keyid is not None else keyids[0]
    if old not in keyids:
        raise RepositoryError(f"key {old} is not a {role} key")

    new_key = _new_key(keys_dir, role)
    root = root_md.signed
    root.revoke_key(old, role)
    root.add_key(new_key, role)
    _bump(root_md)
    old_signers = role_signers(keys_dir, old_root, Root.type)
    _check_threshold(old_root, Root.type, old_signers)
    new_signers = role_signers(keys_dir, root, Root.type)
    _check_threshold(root, Root.type, new_signers)
    seen = {s.public_key.keyid for s in old_signers}
    sign_and_write(path, root_md, old_signers + [s for s in new_signers if s.public_key.keyid not in seen])

    if role == Targets.type:
        targets = load(path, Targets.type, Targets)
        _bump(targets)
        _write_role(path, keys_dir, root, targets)
        _resnapshot(path, keys_dir, root, targets.signed.version)
    elif role == Snapshot.type:
        snapshot = load(path, Snapshot.type, Snapshot)
        _bump(snapshot)
        _write_role(path, keys_dir, root, snapshot)
        _retimestamp(path, keys_dir, root, snapshot.signed.version)
    elif role == Timestamp.type:
        _retimestamp(path, keys_dir, root, None)
    _retire_key(keys_dir, role, old)
    return new_key.keyid


def _retire_key(keys_dir: Path, role: str, keyid: str) -> None:
    """Move a replaced private key out of use to `keys_dir/retired/` (still 0600)."""
    source = _key_dir(keys_dir, role) / f"{keyid}.pem"
    if not source.exists():
        return
    retired = keys_dir / "retired"
    retired.mkdir(exist_ok=True, mode=0o700)
    source.replace(retired / source.name)
    fsync_dir(retired)
    fsync_dir(source.parent)
