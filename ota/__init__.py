"""Over-the-air updates: TUF-verified, installed A/B with automatic rollback.

The Box's side (the repository and the bundle builder are the cloud's: `cloud.tufrepo`,
`cloud.release`): `client` (python-tuf's ngclient over the Box's own mTLS identity, `_fetch`
on requests), `bundle` (a release unpacked and checked; the format is `proto.release`), `slots`
(the A/B software directories), `launcher` (`boxd launch`: runs the active slot, rolls a failed
trial back), `errors`. The daemon's ``update``/``update_abort`` commands and ``ota`` events are
the daemon's own (`boxd.updates`). docs/architecture.md, "OTA".
"""
