"""LazyFS's model without FUSE: what a crash (dropping the Volume) leaves on the backing directory."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support._lazyfs_model import File, Volume


def _file(vol: Volume, path: str, data: bytes) -> File:
    f = vol.create(path, 0o644)
    assert isinstance(f, File)
    vol.write(f, data, 0)
    return f


def _listing(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def test_only_what_was_fsynced_reaches_the_disk(tmp_path: Path) -> None:
    vol = Volume(tmp_path)
    a = _file(vol, "/a", b"synced")
    vol.fsync(a)
    vol.write(a, b"SYNCED and then some", 0)
    _file(vol, "/b", b"never")
    assert _listing(tmp_path) == {"a": b"synced"}
    vol.sync_all()  # a clean shutdown
    assert _listing(tmp_path) == {"a": b"SYNCED and then some", "b": b"never"}


def test_a_directory_fsync_commits_names_but_not_data(tmp_path: Path) -> None:
    vol = Volume(tmp_path)
    vol.create("/d", 0o755, directory=True)
    _file(vol, "/d/f", b"data never synced")
    vol.fsync(vol.lookup("/d"))
    assert _listing(tmp_path) == {"d": None, "d/f": b""}


def test_a_swap_by_three_renames_is_committed_whole_or_not_at_all(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"X")
    (tmp_path / "y").write_bytes(b"Y")
    vol = Volume(tmp_path)
    vol.rename("/x", "/t")
    vol.rename("/y", "/x")
    vol.rename("/t", "/y")
    assert _listing(tmp_path) == {"x": b"X", "y": b"Y"}
    vol.fsync(vol.root)
    assert _listing(tmp_path) == {"x": b"Y", "y": b"X"}


def test_data_follows_its_inode_through_an_unsynced_directory_rename(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "f").write_bytes(b"v1")
    vol = Volume(tmp_path)
    vol.rename("/old", "/new")
    f = vol.loaded(vol.lookup("/new/f"))
    vol.truncate(f, 0)
    vol.write(f, b"v2", 0)
    vol.fsync(f)  # the file's data is durable, the directory's rename is not yet
    assert _listing(tmp_path) == {"old": None, "old/f": b"v2"}
    vol.fsync(vol.root)
    assert _listing(tmp_path) == {"new": None, "new/f": b"v2"}


def test_unlink_and_chmod_wait_for_a_sync_too(tmp_path: Path) -> None:
    (tmp_path / "gone").write_bytes(b"g")
    (tmp_path / "mode").write_bytes(b"m")
    os.chmod(tmp_path / "mode", 0o644)
    vol = Volume(tmp_path)
    vol.remove("/gone", directory=False)
    vol.chmod(vol.lookup("/mode"), 0o600)
    assert _listing(tmp_path) == {"gone": b"g", "mode": b"m"}
    vol.fsync(vol.lookup("/mode"))  # commits the journal through the chmod, so the unlink before it too
    assert _listing(tmp_path) == {"mode": b"m"}
    assert (tmp_path / "mode").stat().st_mode & 0o777 == 0o600
