"""The Box's configuration file (TOML): parsed and validated into typed values (pure code).

Format (every key optional but the devices; the defaults are shown)::

    [uplink]
    keepalive_s = 60            # MQTT keepalive, 10..1200
    batch_delay_ms = 500        # how long fresh readings wait to share a batch, 0..60000
    max_batch_samples = 5000    # the largest batch, 1..50000
    inflight_batches = 16       # batches sent and not yet acknowledged, 1..256
    reconnect_max_s = 300       # the cap of the reconnection backoff, 1..3600
    heartbeat_s = 60            # health report to the platform, 1..3600

    [queue]
    max_samples = 5000000       # the store-and-forward limit; beyond it the oldest are evicted, 1000..100000000

    [[modbus_tcp]]              # one table per device; see drivers.modbus for the keys
    name = "ahu1"
    host = "192.168.10.20"
    ...

Unknown keys are errors (a typo must not silently do nothing). Errors say where:
`[[modbus_tcp]] #2 "meter1": ...`. Device names are unique, so point names
("<device>.<point>") are unique in the Box.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from boxd.errors import ConfigError
from drivers.errors import ConfigError as DriverConfigError
from drivers.modbus import ModbusTcpDevice, parse_modbus_tcp_device

MAX_FILE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class UplinkSettings:
    """How the Box batches and sends."""

    keepalive_s: int = 60
    batch_delay_ms: int = 500
    max_batch_samples: int = 5000
    inflight_batches: int = 16
    reconnect_max_s: int = 300
    heartbeat_s: int = 60


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """The store-and-forward queue."""

    max_samples: int = 5_000_000


@dataclass(frozen=True, slots=True)
class BoxConfig:
    """A validated configuration."""

    uplink: UplinkSettings = UplinkSettings()
    queue: QueueSettings = QueueSettings()
    modbus_tcp: tuple[ModbusTcpDevice, ...] = field(default_factory=tuple)


_UPLINK_LIMITS = {
    "keepalive_s": (10, 1200),
    "batch_delay_ms": (0, 60000),
    "max_batch_samples": (1, 50000),
    "inflight_batches": (1, 256),
    "reconnect_max_s": (1, 3600),
    "heartbeat_s": (1, 3600),
}
_QUEUE_LIMITS = {"max_samples": (1000, 100_000_000)}


def load(path: Path) -> BoxConfig:
    """Read and validate a configuration file.

    Raises:
        ConfigError: the file is missing, too big, not TOML or not valid.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read the configuration {path}: {e.strerror}") from e
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"the configuration {path} is over {MAX_FILE_BYTES} bytes")
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"the configuration {path} is not valid TOML: {e}") from e
    return parse(raw)


def parse(raw: Mapping[str, object]) -> BoxConfig:
    """Validate a parsed configuration.

    Raises:
        ConfigError: with every problem's place in the message.
    """
    unknown = set(raw) - {"uplink", "queue", "modbus_tcp"}
    if unknown:
        raise ConfigError(f"unknown section(s): {', '.join(sorted(unknown))}")
    uplink = UplinkSettings(**_parse_ints(raw.get("uplink", {}), "uplink", _UPLINK_LIMITS))
    queue = QueueSettings(**_parse_ints(raw.get("queue", {}), "queue", _QUEUE_LIMITS))
    devices_raw = raw.get("modbus_tcp", [])
    if not isinstance(devices_raw, list):
        raise ConfigError("modbus_tcp must be a list of tables ([[modbus_tcp]])")
    devices: list[ModbusTcpDevice] = []
    seen: set[str] = set()
    for n, d in enumerate(devices_raw, 1):
        where = f"[[modbus_tcp]] #{n}"
        if not isinstance(d, Mapping):
            raise ConfigError(f"{where}: must be a table")
        try:
            dev = parse_modbus_tcp_device(d)
        except DriverConfigError as e:
            raise ConfigError(f"{where}: {e}") from e
        if dev.name in seen:
            raise ConfigError(f'{where}: device name "{dev.name}" is used twice')
        seen.add(dev.name)
        devices.append(dev)
    return BoxConfig(uplink, queue, tuple(devices))


def _parse_ints(raw: object, section: str, limits: Mapping[str, tuple[int, int]]) -> dict[str, int]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[{section}] must be a table")
    unknown = set(raw) - set(limits)
    if unknown:
        raise ConfigError(f"[{section}]: unknown key(s): {', '.join(sorted(unknown))}")
    values: dict[str, int] = {}
    for key, (lo, hi) in limits.items():
        if key not in raw:
            continue
        v = raw[key]
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise ConfigError(f"[{section}] {key} must be an integer from {lo} to {hi}, not {v!r}")
        values[key] = v
    return values
