"""boxd: the supervisor daemon of the Box edge gateway.

Public face: `__version__`; the daemon is started by the `boxd` command
(`boxd.cli`). Submodules: `tls` (every TLS context), `wire` (the uplink wire
format, shared with the cloud), `queue` (the durable store-and-forward queue),
`uplink` (MQTT over mutual TLS), `supervisor`, `config`, `identity`.
"""

__version__ = "0.1.0"
