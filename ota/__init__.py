"""Over-the-air updates (TUF-verified, A/B with rollback): issue 7, in progress.

Built so far: `ota.repository`, the TUF repository of releases (keys, publishing, timestamp
renewal, key rotation). Not yet: the Box-side client, A/B install, deployments (see
docs/architecture.md, "OTA: the TUF repository").
"""
