"""The TUF repository (cloud/tufrepo) against python-tuf's own client, ngclient.

The client reads the repository through a *local* fetcher (URLs mapped to files in the
repository directory); the HTTPS fetcher with the Box's mTLS identity comes with the Box side.
Each attack ends with the client raising and nothing in its download directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tuf.api import exceptions
from tuf.api.metadata import Metadata, Root, Snapshot, Timestamp
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface

from cloud import tufrepo as repo
from cloud.tufrepo import _meta as repo_meta
from proto import names

BASE = "https://updates.test/"


class LocalFetcher(FetcherInterface):
    """Maps https://updates.test/<rel> to <repo dir>/<rel>; `override` serves another file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.override: dict[str, bytes] = {}
        self.fetched: list[str] = []

    def _fetch(self, url: str) -> Iterator[bytes]:
        assert url.startswith(BASE), url
        rel = url[len(BASE) :]
        self.fetched.append(rel)
        if rel in self.override:
            return iter([self.override[rel]])
        path = self.root / rel
        if not path.is_file():
            raise exceptions.DownloadHTTPError(f"{rel} not found", 404)
        return iter([path.read_bytes()])


class Box:
    """A client: trusted root 1 shipped with it, its own metadata and download directories."""

    def __init__(self, repo_dir: Path, home: Path) -> None:
        self.fetcher = LocalFetcher(repo_dir)
        self.meta = home / "meta"
        self.downloads = home / "downloads"
        self.meta.mkdir(parents=True)
        self.downloads.mkdir()
        self.bootstrap = (repo_dir / "metadata" / "1.root.json").read_bytes()

    def updater(self) -> Updater:
        return Updater(
            str(self.meta),
            BASE + "metadata/",
            str(self.downloads),
            BASE + "targets/",
            fetcher=self.fetcher,
            bootstrap=self.bootstrap,
        )

    def nothing_downloaded(self) -> bool:
        return not any(self.downloads.iterdir())


@pytest.fixture
def env(tmp_path: Path) -> tuple[Path, Path, Path]:
    repo_dir, keys = tmp_path / "repo", tmp_path / "keys"
    repo.init_repository(repo_dir, keys)
    return repo_dir, keys, tmp_path


def bundle(tmp_path: Path, version: str, size: int = 4096) -> Path:
    path = tmp_path / f"boxd-{version}.tar.gz"
    path.write_bytes(version.encode() * (size // len(version) + 1))
    return path


def md_at(repo_dir: Path, name: str) -> Metadata:  # type: ignore[type-arg]
    return Metadata.from_file(str(repo_dir / "metadata" / name))


def test_layout_keys_and_expiries(env: tuple[Path, Path, Path]) -> None:
    repo_dir, keys, _ = env
    names = {p.name for p in (repo_dir / "metadata").iterdir()}
    assert {"1.root.json", "root.json", "1.targets.json", "1.snapshot.json", "timestamp.json"} <= names
    root = md_at(repo_dir, "1.root.json").signed
    assert isinstance(root, Root)
    assert root.consistent_snapshot
    assert len(root.roles["root"].keyids) == 3 and root.roles["root"].threshold == 2
    offline = list((keys / "offline").iterdir())
    online = list((keys / "online").iterdir())
    assert len(offline) == 3 and len(online) == 3
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in offline + online)
    now = datetime.now(UTC)
    for name, lifetime in (
        ("root.json", repo.ROOT_EXPIRY),
        ("targets.json", repo.TARGETS_EXPIRY),
        ("snapshot.json", repo.SNAPSHOT_EXPIRY),
        ("timestamp.json", repo.TIMESTAMP_EXPIRY),
    ):
        assert lifetime - timedelta(minutes=1) < md_at(repo_dir, name).signed.expires - now <= lifetime


def test_publish_download_and_second_release(env: tuple[Path, Path, Path]) -> None:
    repo_dir, keys, tmp = env
    b1 = bundle(tmp, "1.0.0")
    repo.publish_release(repo_dir, keys, b1, "1.0.0", ["box-a1", "box-a2"])
    box = Box(repo_dir, tmp / "box")
    up = box.updater()
    up.refresh()
    info = up.get_targetinfo("boxd-1.0.0.tar.gz")
    assert info is not None
    assert info.custom == {"version": "1.0.0", "hardware": ["box-a1", "box-a2"]}
    assert info.length == b1.stat().st_size
    got = up.download_target(info)
    assert Path(got).read_bytes() == b1.read_bytes()
    assert any(f.startswith("targets/" + info.hashes["sha256"]) for f in box.fetcher.fetched)

    b2 = bundle(tmp, "1.1.0", 8000)
    repo.publish_release(repo_dir, keys, b2, "1.1.0", ["box-a2"])
    up = box.updater()
    up.refresh()
    assert up._trusted_set.targets.version == 3  # 1 empty, 2 and 3 the releases
    assert up._trusted_set.snapshot.version == 3
    info2 = up.get_targetinfo("boxd-1.1.0.tar.gz")
    assert info2 is not None and info2.custom["version"] == "1.1.0"
    assert Path(up.download_target(info2)).read_bytes() == b2.read_bytes()


def test_publish_refusals(env: tuple[Path, Path, Path]) -> None:
    repo_dir, keys, tmp = env
    repo.publish_release(repo_dir, keys, bundle(tmp, "1.2.0"), "1.2.0", ["box-a1"])
    for version in ("1.2.0", "1.1.9", "1.2.0-rc.1", "v1.3", "1.3"):
        with pytest.raises(repo.RepositoryError):
            repo.publish_release(repo_dir, keys, bundle(tmp, "x" + version), version, ["box-a1"])
    for hardware in ([], ["Box A1"], ["../x"], ["a" * 40]):
        with pytest.raises(repo.RepositoryError):
            repo.publish_release(repo_dir, keys, bundle(tmp, "2.0.0"), "2.0.0", hardware)
    assert names.version_greater("1.3.0", "1.3.0-rc.2")
    assert names.version_greater("1.3.0-rc.10", "1.3.0-rc.2")
    assert names.version_greater("1.10.0", "1.9.9")
    assert repo.published_versions(repo_dir) == ["1.2.0"]


def test_timestamp_renewal_accepted(env: tuple[Path, Path, Path]) -> None:
    repo_dir, keys, tmp = env
    repo.publish_release(repo_dir, keys, bundle(tmp, "1.0.0"), "1.0.0", ["box-a1"])
    box = Box(repo_dir, tmp / "box")
    box.updater().refresh()
    before = md_at(repo_dir, "timestamp.json").signed
    assert repo.renew_timestamp(repo_dir, keys) == before.version + 1
    after = md_at(repo_dir, "timestamp.json").signed
    assert after.expires >= before.expires
    up = box.updater()
    up.refresh()
    assert up._trusted_set.timestamp.version == before.version + 1


@pytest.mark.parametrize("role", ["targets", "snapshot", "timestamp", "root"])
def test_rotated_key_works_for_the_client(env: tuple[Path, Path, Path], role: str) -> None:
    repo_dir, keys, tmp = env
    b1 = bundle(tmp, "1.0.0")
    repo.publish_release(repo_dir, keys, b1, "1.0.0", ["box-a1"])
    box = Box(repo_dir, tmp / "box")
    box.updater().refresh()
    old = set(md_at(repo_dir, "root.json").signed.roles[role].keyids)
    new_keyid = repo.rotate_key(repo_dir, keys, role)
    root_md = md_at(repo_dir, "2.root.json")
    root = root_md.signed
    assert new_keyid in root.roles[role].keyids and not old <= set(root.roles[role].keyids)
    (replaced,) = old - set(root.roles[role].keyids)
    assert (keys / "retired" / f"{replaced}.pem").stat().st_mode & 0o777 == 0o600
    assert not list(keys.glob(f"o*line/{replaced}.pem"))
    if role == "root":  # signed by the old root's threshold and the new one's
        assert replaced in root_md.signatures and new_keyid in root_md.signatures
    repo.publish_release(repo_dir, keys, bundle(tmp, "1.0.1"), "1.0.1", ["box-a1"])
    up = box.updater()
    up.refresh()
    assert up._trusted_set.root.version == 2
    info = up.get_targetinfo("boxd-1.0.1.tar.gz")
    assert info is not None
    up.download_target(info)


# -- attacks: each refused by the client, nothing downloaded ------------------------


def test_tampered_target_refused(env: tuple[Path, Path, Path]) -> None:
    repo_dir, keys, tmp = env
    target = repo.publish_release(repo_dir, keys, bundle(tmp, "1.0.0"), "1.0.0", ["box-a1"])
    stored = repo_dir / "targets" / f"{target.hashes['sha256']}.boxd-1.0.0.tar.gz"
    data = bytearray(stored.read_bytes())
    data[100] ^= 0xFF  # same length, other content
    stored.write_bytes(bytes(data))
    box = Box(repo_dir, tmp / "box")
    up = box.updater()
    up.refresh()
    info = up.get_targetinfo("boxd-1.0.0.tar.gz")
    assert info is not None
    with pytest.raises(exceptions.LengthOrHashMismatchError):
        up.download_target(info)
    assert box.nothing_downloaded()


def test_root_under_threshold_refused(env: tuple[Path, Path, Path]) -> None:
    repo_dir, keys, tmp = env
    repo.publish_release(repo_dir, keys, bundle(tmp, "1.0.0"), "1.0.0", ["box-a1"])
    # An attacker with one root key (threshold 2) makes root 2 with its own targets key.
    root_md = md_at(repo_dir, "root.json")
    root = root_md.signed
    one = repo.role_signers(keys, root, "root")[:1]
    evil_targets = repo_meta._new_key(tmp / "evil", "targets")
    root.revoke_key(root.roles["targets"].keyids[0], "targets")
    root.add_key(evil_targets, "targets")
    root.version = 2
    repo.sign_and_write(repo_dir, root_md, one)
    box = Box(repo_dir, tmp / "box")
    with pytest.raises(exceptions.UnsignedMetadataError):
        box.updater().refresh()
    assert box.nothing_downloaded()


def test_expired_timestamp_refused(env: tuple[Path, Path, Path]) -> None:
    repo_dir, keys, tmp = env
    repo.publish_release(repo_dir, keys, bundle(tmp, "1.0.0"), "1.0.0", ["box-a1"])
    ts_md = md_at(repo_dir, "timestamp.json")
    root = md_at(repo_dir, "root.json").signed
    ts_md.signed.version += 1
    ts_md.signed.expires = repo_meta._now() - timedelta(hours=1)  # a frozen mirror
    repo.sign_and_write(repo_dir, ts_md, repo.role_signers(keys, root, "timestamp"))
    box = Box(repo_dir, tmp / "box")
    up = box.updater()
    with pytest.raises(exceptions.ExpiredMetadataError):
        up.refresh()
    assert not (box.meta / "snapshot.json").exists()
    assert box.nothing_downloaded()


def test_rolled_back_timestamp_refused(env: tuple[Path, Path, Path]) -> None:
    repo_dir, keys, tmp = env
    repo.publish_release(repo_dir, keys, bundle(tmp, "1.0.0"), "1.0.0", ["box-a1"])
    old_timestamp = (repo_dir / "metadata" / "timestamp.json").read_bytes()
    repo.publish_release(repo_dir, keys, bundle(tmp, "1.1.0"), "1.1.0", ["box-a1"])
    box = Box(repo_dir, tmp / "box")
    box.updater().refresh()
    box.fetcher.override["metadata/timestamp.json"] = old_timestamp  # a mirror serves old metadata
    with pytest.raises(exceptions.BadVersionNumberError):
        box.updater().refresh()
    assert box.nothing_downloaded()


def test_rolled_back_snapshot_refused(env: tuple[Path, Path, Path]) -> None:
    """A stolen timestamp key signs a fresh timestamp pointing at an older snapshot."""
    repo_dir, keys, tmp = env
    repo.publish_release(repo_dir, keys, bundle(tmp, "1.0.0"), "1.0.0", ["box-a1"])
    repo.publish_release(repo_dir, keys, bundle(tmp, "1.1.0"), "1.1.0", ["box-a1"])
    box = Box(repo_dir, tmp / "box")
    box.updater().refresh()
    ts_md = md_at(repo_dir, "timestamp.json")
    root = md_at(repo_dir, "root.json").signed
    seen_snapshot = ts_md.signed.snapshot_meta.version
    ts_md.signed.version += 1
    ts_md.signed.snapshot_meta.version = seen_snapshot - 1
    repo.sign_and_write(repo_dir, ts_md, repo.role_signers(keys, root, "timestamp"))
    with pytest.raises(exceptions.BadVersionNumberError):
        box.updater().refresh()
    assert box.nothing_downloaded()


def test_rolled_back_targets_refused(env: tuple[Path, Path, Path]) -> None:
    """A stolen snapshot+timestamp key pair points the client at an older targets version."""
    repo_dir, keys, tmp = env
    repo.publish_release(repo_dir, keys, bundle(tmp, "1.0.0"), "1.0.0", ["box-a1"])
    repo.publish_release(repo_dir, keys, bundle(tmp, "1.1.0"), "1.1.0", ["box-a1"])
    box = Box(repo_dir, tmp / "box")
    box.updater().refresh()
    root = md_at(repo_dir, "root.json").signed
    snap = md_at(repo_dir, "snapshot.json")
    assert isinstance(snap.signed, Snapshot)
    snap.signed.version += 1
    snap.signed.meta["targets.json"].version -= 1
    repo.sign_and_write(repo_dir, snap, repo.role_signers(keys, root, "snapshot"))
    ts = md_at(repo_dir, "timestamp.json")
    assert isinstance(ts.signed, Timestamp)
    ts.signed.version += 1
    ts.signed.snapshot_meta.version = snap.signed.version
    repo.sign_and_write(repo_dir, ts, repo.role_signers(keys, root, "timestamp"))
    with pytest.raises(exceptions.BadVersionNumberError):
        box.updater().refresh()
    assert box.nothing_downloaded()


# -- interrupted operations: the next operation finishes them ------------------------


def _copies(repo_dir: Path, *names: str) -> dict[str, bytes]:
    return {n: (repo_dir / "metadata" / n).read_bytes() for n in names}


def _restore(repo_dir: Path, copies: dict[str, bytes]) -> None:
    for name, data in copies.items():
        (repo_dir / "metadata" / name).write_bytes(data)


def test_publish_cut_after_targets_is_finished_by_the_next_operation(env: tuple[Path, Path, Path]) -> None:
    repo_dir, keys, tmp = env
    repo.publish_release(repo_dir, keys, bundle(tmp, "1.0.0"), "1.0.0", ["box-a1"])
    before = _copies(repo_dir, "snapshot.json", "timestamp.json")
    repo.publish_release(repo_dir, keys, bundle(tmp, "1.1.0"), "1.1.0", ["box-a1"])
    _restore(repo_dir, before)  # as if power was lost right after targets.json was written
    box = Box(repo_dir, tmp / "box")
    up = box.updater()
    up.refresh()
    assert up.get_targetinfo("boxd-1.1.0.tar.gz") is None  # consistent, just not there yet
    repo.renew_timestamp(repo_dir, keys)
    up = box.updater()
    up.refresh()
    assert up.get_targetinfo("boxd-1.1.0.tar.gz") is not None


def test_rotation_cut_after_root_is_finished_by_the_next_operation(env: tuple[Path, Path, Path]) -> None:
    repo_dir, keys, tmp = env
    repo.publish_release(repo_dir, keys, bundle(tmp, "1.0.0"), "1.0.0", ["box-a1"])
    before = _copies(repo_dir, "targets.json", "snapshot.json", "timestamp.json")
    repo.rotate_key(repo_dir, keys, "targets")
    _restore(repo_dir, before)  # root 2 written, targets still signed by the old key
    box = Box(repo_dir, tmp / "box")
    repo.renew_timestamp(repo_dir, keys)
    up = box.updater()
    up.refresh()
    info = up.get_targetinfo("boxd-1.0.0.tar.gz")
    assert info is not None
    up.download_target(info)
