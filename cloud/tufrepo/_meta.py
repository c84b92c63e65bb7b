"""The TUF repository's files and keys (`cloud.tufrepo`): metadata read, bumped, signed and written
atomically; keys made, found and retired; what an interrupted operation left repaired."""


from __future__ import annotations

import fcntl
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
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from boxkit.files import write_atomic, write_secret
from cloud.errors import RepositoryError

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

_S = TypeVar("_S", Root, Timestamp, Snapshot, Targets)


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


