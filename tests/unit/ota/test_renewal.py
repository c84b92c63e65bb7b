"""Scheduled renewal of the online TUF roles (`renew_expiring`), with the time passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from ota import repository


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
