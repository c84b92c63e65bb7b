"""Over-the-air updates: TUF-verified, installed A/B with automatic rollback.

Cloud side: `repository` (the TUF repository of releases: keys, publishing, renewal, key
rotation). Box side: `client` (python-tuf's ngclient over the Box's own mTLS identity),
`bundle` (a release's format, built and unpacked), `slots` (the A/B software directories),
`launcher` (`boxd launch`: runs the active slot, rolls a failed trial back), `agent` (the
daemon's ``update``/``update_abort`` commands and ``ota`` events). docs/architecture.md, "OTA".
"""
