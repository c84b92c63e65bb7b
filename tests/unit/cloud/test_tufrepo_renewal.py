"""Scheduled renewal of the online TUF roles (`renew_expiring`), with the time passed in."""

from __future__ import annotations

import fcntl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cloud import tufrepo as repository
from cloud.tufrepo import _meta


def _versions(repo: Path) -> dict[str, int]:
    from tuf.api.metadata import Snapshot, Targets, Timestamp

    return {
        "targets": repository.load(repo, "targets", Targets).signed.version,
        "snapshot": repository.load(repo, "snapshot", Snapshot).signed.version,
        "timestamp": repository.load(repo, "timestamp", Timestamp).signed.version,
    }


def test_each_role_is_renewed_when_its_remaining_life_falls_under_its_share(tmp_path: Path) -> None:
    repo, keys = tmp_path / "repo", tmp_path / "keys"
    repository.init_repository(repo, keys)
    start = datetime.now(UTC)
    assert repository.renew_expiring(repo, keys, start) == []
    assert repository.renew_expiring(repo, keys, start + timedelta(hours=11)) == []  # 13 h of 24 left
    assert repository.renew_expiring(repo, keys, start + timedelta(hours=13)) == ["timestamp"]
    assert _versions(repo) == {"targets": 1, "snapshot": 1, "timestamp": 2}
    # the new expiry counts from the time given: nothing is due again at once
    assert repository.renew_expiring(repo, keys, start + timedelta(hours=13)) == []
    assert repository.expiries(repo)["timestamp"] >= (start + timedelta(hours=37)).replace(microsecond=0)

    later = start + timedelta(days=5)  # 2 of 7 days left for the snapshot: under a third
    assert repository.renew_expiring(repo, keys, later) == ["snapshot", "timestamp"]
    assert _versions(repo) == {"targets": 1, "snapshot": 2, "timestamp": 3}

    much_later = start + timedelta(days=61)  # 30 of 91 days left for targets
    assert repository.renew_expiring(repo, keys, much_later) == ["targets", "snapshot", "timestamp"]
    assert _versions(repo) == {"targets": 2, "snapshot": 3, "timestamp": 4}
    assert repository.expiries(repo)["targets"] > much_later + timedelta(days=90)
    assert repository.repair(repo, keys) is not None  # still a whole, valid repository
    assert _versions(repo) == {"targets": 2, "snapshot": 3, "timestamp": 4}


def test_a_writing_operation_holds_the_repository_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo, keys = tmp_path / "repo", tmp_path / "keys"
    repository.init_repository(repo, keys)
    seen: list[str] = []
    write = repository.sign_and_write

    def probing_write(path: Path, md: Any, signers: Any) -> None:
        # what another process would see while this one writes: the lock taken
        with (repo / ".lock").open("a") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                seen.append("free")
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            except BlockingIOError:
                seen.append("locked")
        write(path, md, signers)

    monkeypatch.setattr(_meta, "sign_and_write", probing_write)  # what every role write goes through
    repository.renew_timestamp(repo, keys)
    bundle = tmp_path / "boxd-1.0.0.tar.gz"
    bundle.write_bytes(b"bundle")
    repository.publish_release(repo, keys, bundle, "1.0.0", ["box-a1"])
    repository.renew_expiring(repo, keys, datetime.now(UTC) + timedelta(days=80))
    assert seen and set(seen) == {"locked"}
