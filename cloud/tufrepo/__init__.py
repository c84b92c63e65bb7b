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

from cloud.errors import RepositoryError
from cloud.tufrepo._meta import (
    EXPIRY,
    ONLINE_ROLES,
    ROLES,
    ROOT_EXPIRY,
    SNAPSHOT_EXPIRY,
    TARGETS_EXPIRY,
    TIMESTAMP_EXPIRY,
    load,
    load_signer,
    repair,
    role_signers,
    sign_and_write,
)
from cloud.tufrepo._ops import (
    RENEW_WHEN_LEFT,
    expiries,
    init_repository,
    publish_release,
    published_targets,
    published_versions,
    renew_expiring,
    renew_snapshot,
    renew_targets,
    renew_timestamp,
    rotate_key,
)

__all__ = [
    "EXPIRY", "ONLINE_ROLES", "RENEW_WHEN_LEFT", "ROLES", "ROOT_EXPIRY", "SNAPSHOT_EXPIRY", "TARGETS_EXPIRY",
    "TIMESTAMP_EXPIRY", "RepositoryError", "expiries", "init_repository", "load", "load_signer", "publish_release",
    "published_targets", "published_versions", "renew_expiring", "renew_snapshot", "renew_targets",
    "renew_timestamp", "repair", "role_signers", "rotate_key", "sign_and_write",
]
