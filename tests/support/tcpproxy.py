"""A TCP proxy that counts the bytes crossing it: a `FaultProxy` with no fault set (bench/uplink.py uses it).

Runs on its own thread's event loop; `upstream_bytes` counts client -> server bytes,
`downstream_bytes` server -> client, TLS records and MQTT framing included. For faults
(latency, caps, stalls, resets), use `tests.support.faultproxy.FaultProxy` directly.
"""

from __future__ import annotations

from tests.support.faultproxy import FaultProxy


class CountingProxy(FaultProxy):
    """Listen on 127.0.0.1:<port> and forward to target_host:target_port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        super().__init__(target_host, target_port)
