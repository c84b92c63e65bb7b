"""Issue 12, finding 6: files written safely and privately, and every name pattern matched whole.

Each test is an attack that worked before the fix: a symlink planted where the atomic write puts
its temporary file, databases readable by every local user, a serial with a trailing newline.
"""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

import pytest

from boxd.queue import Queue
from boxkit.files import write_atomic, write_secret
from cloud.enroll import check_serial
from cloud.errors import EnrollmentError
from cloud.store import Store
from trust import identity
from trust.errors import IdentityError

ROOT = Path(__file__).resolve().parents[3]


def test_an_atomic_write_does_not_follow_a_planted_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    target = tmp_path / "config.toml"
    # a local user who can write in the directory plants links at every name the writer might use
    for name in (f".{target.name}.tmp", f"{target.name}.tmp", f".{target.name}.new"):
        (tmp_path / name).symlink_to(victim)
    write_atomic(target, b"new content")
    assert victim.read_bytes() == b"precious"
    assert target.read_bytes() == b"new content" and not target.is_symlink()


def test_an_atomic_write_replaces_a_symlink_at_the_destination_instead_of_writing_through_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    target = tmp_path / "box.key"
    target.symlink_to(victim)
    write_secret(target, b"KEY")
    assert victim.read_bytes() == b"precious"
    assert not target.is_symlink() and target.read_bytes() == b"KEY"
    assert target.stat().st_mode & 0o777 == 0o600


def test_an_atomic_write_leaves_no_temporary_file_behind_when_it_fails(tmp_path: Path) -> None:
    target = tmp_path / "missing-dir" / "f"
    with pytest.raises(OSError):
        write_atomic(target, b"x")
    assert list(tmp_path.iterdir()) == []


def _private(path: Path) -> None:
    mode = path.stat().st_mode & 0o777
    assert mode & 0o077 == 0, f"{path} is mode {mode:o}: readable by others"


def test_the_cloud_database_and_its_wal_are_private(tmp_path: Path) -> None:
    home = tmp_path / "cloud"
    store = Store(home / "cloud.db")
    store.add_token("0" * 64, "BOX-1", 60)  # a write: the WAL and SHM files exist now
    for name in ("cloud.db", "cloud.db-wal", "cloud.db-shm"):
        _private(home / name)
    _private(home)


def test_the_box_queue_and_its_wal_are_private(tmp_path: Path) -> None:
    q = Queue(tmp_path / "state" / "queue.db")
    q.open()
    try:
        q.put_event_now(b"x")  # a write: the WAL and SHM files exist now
        for name in ("queue.db", "queue.db-wal", "queue.db-shm"):
            _private(tmp_path / "state" / name)
        _private(tmp_path / "state")
    finally:
        q.close()


def test_an_existing_world_readable_database_is_made_private_when_opened(tmp_path: Path) -> None:
    db = tmp_path / "cloud.db"
    sqlite3.connect(db).close()
    db.chmod(0o644)
    Store(db).boxes()
    _private(db)


@pytest.mark.parametrize("serial", ["BOX-1\n", "BOX-1\r\n", "\nBOX-1", "BOX 1", "BOX-1/x", "-BOX", ""])
def test_a_serial_with_a_trailing_newline_or_other_junk_is_refused(serial: str) -> None:
    with pytest.raises(EnrollmentError):
        check_serial(serial)


def test_a_box_identity_with_a_newline_in_its_id_is_refused(tmp_path: Path) -> None:
    d = tmp_path / identity.IDENTITY_DIR
    d.mkdir()
    (d / "identity.json").write_text('{"box_id": "BOX-1\\n", "broker_host": "h", "broker_port": 1}')
    with pytest.raises(IdentityError, match="invalid Box ID"):
        identity.load(tmp_path)


def test_every_name_pattern_in_the_code_base_is_matched_whole() -> None:
    """`re.match` with `$` accepts a trailing newline; every pattern here is used with `fullmatch`."""
    offenders = []
    for package in ("boxd", "cloud", "ota", "provisioning", "drivers"):
        for f in (ROOT / package).rglob("*.py"):
            text = f.read_text()
            for n, line in enumerate(text.splitlines(), 1):
                if "a prefix match, not a name" in line:
                    continue
                if re.search(r"\b[A-Z_]+(?:_RE|_NAME|_PATTERN)?\.match\(|\bre\.match\(", line) or (re.search(
                        r"re\.compile\(r?[\"']\^", line) and "re.M" not in line):
                    offenders.append(f"{f.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == [], "\n".join(offenders)


def test_file_descriptors_of_the_helpers_are_not_leaked(tmp_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    for i in range(50):
        write_atomic(tmp_path / f"f{i}", b"x")
    assert len(os.listdir("/proc/self/fd")) == before
