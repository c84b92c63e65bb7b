"""The TUF repository's operations (`cloud.tufrepo`): create, publish a release, renew, rotate a key."""


from __future__ import annotations

import copy
import os
import shutil
from datetime import datetime
from pathlib import Path

from tuf.api.metadata import (
    Metadata,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)

from boxkit.files import create_new, fsync_dir, temp_path
from cloud.errors import RepositoryError
from cloud.tufrepo._meta import (
    _S,
    EXPIRY,
    ONLINE_ROLES,
    ROLES,
    ROOT_EXPIRY,
    ROOT_KEYS,
    SNAPSHOT_EXPIRY,
    TARGETS_EXPIRY,
    TIMESTAMP_EXPIRY,
    _bump,
    _check_threshold,
    _key_dir,
    _locked,
    _meta_dir,
    _new_key,
    _now,
    _repair,
    _resnapshot,
    _retimestamp,
    _write_role,
    load,
    role_signers,
    sign_and_write,
)
from proto import names

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
    if not names.VERSION.fullmatch(version):
        raise RepositoryError(f"{version!r} is not a semantic version (MAJOR.MINOR.PATCH[-PRE])")
    if not hardware:
        raise RepositoryError("a release must name the hardware it fits")
    for hw in hardware:
        if not names.HARDWARE.fullmatch(hw):
            raise RepositoryError(f"hardware id {hw!r}: lowercase letters, digits, '-', 1..32")
    name = bundle.name
    if not names.TARGET.fullmatch(name):
        raise RepositoryError(f"bundle name {name!r} is not a plain file name")
    for published in published_versions(path):
        if not names.version_greater(version, published):
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
