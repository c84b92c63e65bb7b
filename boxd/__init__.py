"""boxd: the supervisor daemon of the Box edge gateway.

Public face: `__version__` (the release's: a bundle sets it); the daemon is started by the
`boxd` command (`boxd.cli`). Submodules: `daemon` (wiring), `queue` (the durable
store-and-forward queue), `uplink` (MQTT over mutual TLS), `downlink` and `commands` (what the
platform sends, against the Box's state), `reconfig`, `supervisor`, `clock`, `sdnotify`. The
contract with the platform is `proto`'s, identity and TLS `trust`'s, the configuration
`boxconfig`'s.
"""

__version__ = "0.1.0"
