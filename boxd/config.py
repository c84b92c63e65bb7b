"""The Box's configuration file (TOML): parsed and validated into typed values (pure code).

Format (every key optional but the devices; the defaults are shown)::

    [uplink]
    keepalive_s = 60            # MQTT keepalive, 10..1200
    batch_delay_ms = 500        # how long fresh readings wait to share a batch, 0..60000
    max_batch_samples = 5000    # the largest batch, 1..50000
    inflight_batches = 16       # batches sent and not yet acknowledged, 1..256
    reconnect_max_s = 300       # the cap of the reconnection backoff, 1..3600

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


@dataclass(frozen=True, slots=True)
class BoxConfig:
    """A validated configuration."""

    uplink: UplinkSettings = UplinkSettings()
    modbus_tcp: tuple[ModbusTcpDevice, ...] = field(default_factory=tuple)


_UPLINK_LIMITS = {
    "keepalive_s": (10, 1200),
    "batch_delay_ms": (0, 60000),
    "max_batch_samples": (1, 50000),
    "inflight_batches": (1, 256),
    "reconnect_max_s": (1, 3600),
}


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
    unknown = set(raw) - {"uplink", "modbus_tcp"}
    if unknown:
        raise ConfigError(f"unknown section(s): {', '.join(sorted(unknown))}")
    uplink = _parse_uplink(raw.get("uplink", {}))
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
    return BoxConfig(uplink, tuple(devices))


def _parse_uplink(raw: object) -> UplinkSettings:
    if not isinstance(raw, Mapping):
        raise ConfigError("[uplink] must be a table")
    unknown = set(raw) - set(_UPLINK_LIMITS)
    if unknown:
        raise ConfigError(f"[uplink]: unknown key(s): {', '.join(sorted(unknown))}")
    values: dict[str, int] = {}
    for key, (lo, hi) in _UPLINK_LIMITS.items():
        if key not in raw:
            continue
        v = raw[key]
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise ConfigError(f"[uplink] {key} must be an integer from {lo} to {hi}, not {v!r}")
        values[key] = v
    return UplinkSettings(**values)
