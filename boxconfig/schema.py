"""The Box's configuration (TOML): parsed and validated into typed values, on the Box and in the cloud.

Format (every key optional but the devices; the defaults are shown)::

    [uplink]
    keepalive_s = 60            # MQTT keepalive, 10..1200
    batch_delay_ms = 5000       # how long ordinary readings wait to share a batch, 0..900000
                                # (urgent points, events and replies never wait: docs/performance.md;
                                # a metered SIM's settings, up to 15 minutes: README, "On a metered SIM")
    max_batch_samples = 5000    # the largest batch, 1..50000
    inflight_batches = 16       # batches sent and not yet acknowledged, 1..256
    reconnect_max_s = 300       # the cap of the reconnection backoff, 1..3600
    reconnect_spread_s = 30     # after the broker's side closed the session (a restart: the whole
                                # fleet at once), the first try is drawn from 0..this, 0..3600
    heartbeat_s = 300           # health report to the platform, 1..3600
    time_slack_ms = 0           # how far a reading's time may be sent from its poll's, 0..1000
                                # (0: to the ms; a metered SIM's 250: README, "On a metered SIM")

    [report]                    # report on change: the default of every point (boxconfig.report)
    mode = "poll"               # "change" | "poll"; a new installation: "change" (docs/performance.md)
    deadband = 0.0
    deadband_pct = 0.0
    max_age_s = 900

    [queue]
    max_samples = 5000000       # the store-and-forward limit; beyond it the oldest are evicted, 1000..100000000

    [modem]                     # the 4G modem, its recovery ladder, data budget (boxconfig.modem)
    apn = "internet"
    [wan]                       # a wired or Wi-Fi uplink preferred to 4G (boxconfig.modem)

    [[modbus_tcp]]              # one table per device; see drivers.modbus for the keys
    name = "ahu1"
    host = "192.168.10.20"
    urgent = false              # on a device or a point (the point's wins): its readings leave at
    ...                         # once, not after batch_delay_ms (alarms, states that matter)

    [[modbus_rtu]]              # one table per serial line, with its [[modbus_rtu.devices]]
    [[bacnet]]                  # one table per BACnet/IP network, with its [[bacnet.devices]]

Unknown keys are errors (a typo must not silently do nothing). Errors say where:
`[[modbus_tcp]] #2 "meter1": ...`. Device names are unique across all buses, so point
names ("<device>.<point>") are unique in the Box; bus names are unique too.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from boxconfig.errors import ConfigError
from boxconfig.modem import ModemSettings, WanSettings, modem_problems, parse_modem, parse_wan, wan_problems
from boxconfig.report import DEFAULT as REPORT_DEFAULT
from boxconfig.report import parse_report_section
from boxkit.files import write_atomic
from drivers._report import Report
from drivers.errors import ConfigError as DriverConfigError
from drivers.errors import show as _show
from drivers.modbus import (
    ModbusDevice,
    ModbusRtuLine,
    ModbusTcpDevice,
    is_urgent,
    parse_modbus_rtu_line,
    parse_modbus_tcp_device,
)

if TYPE_CHECKING:
    from drivers.bacnet import BacnetNetwork

MAX_FILE_BYTES = 4 * 1024 * 1024
CACHE_FILE = "config.cache.json"  # in the state directory (see `load`)


def _parse_bacnet_network(raw: Mapping[str, object]) -> object:
    # bacpypes3 costs ~19 MB and ~0.2 s to import: only a Box with BACnet pays for it
    from drivers.bacnet import parse_bacnet_network

    return parse_bacnet_network(raw)


# section -> (parser of one table, names of the devices it holds)
_BUSES: dict[str, tuple[Callable[[Mapping[str, object]], object], Callable[[Any], list[str]]]] = {
    "modbus_tcp": (parse_modbus_tcp_device, lambda d: [d.name]),
    "modbus_rtu": (parse_modbus_rtu_line, lambda line: [d.name for d in line.devices]),
    "bacnet": (_parse_bacnet_network, lambda net: [d.name for d in net.devices]),
}


@dataclass(frozen=True, slots=True)
class UplinkSettings:
    """How the Box batches and sends."""

    keepalive_s: int = 60
    batch_delay_ms: int = 5000  # why 5 s: docs/performance.md, "The batch delay"
    max_batch_samples: int = 5000
    inflight_batches: int = 16
    reconnect_max_s: int = 300
    reconnect_spread_s: int = 30  # why 30 s: docs/architecture.md, "Reconnection"
    heartbeat_s: int = 300
    time_slack_ms: int = 0  # a poll late by less than this is sent on its schedule (proto.series): bytes


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
    modbus_rtu: tuple[ModbusRtuLine, ...] = field(default_factory=tuple)
    bacnet: tuple[BacnetNetwork, ...] = field(default_factory=tuple)
    modem: ModemSettings | None = None
    wan: WanSettings = field(default_factory=WanSettings)
    report: Report = REPORT_DEFAULT  # the Box-wide report-on-change table, over the defaults

    def point_count(self) -> int:
        """How many points the configuration names."""
        return (sum(len(d.points) for d in self.modbus_tcp)
                + sum(len(d.points) for line in self.modbus_rtu for d in line.devices)
                + sum(len(d.points) for n in self.bacnet for d in n.devices))

    def urgent_points(self) -> frozenset[str]:
        """The names ("<device>.<point>") of the points marked urgent, on the point or on its device."""
        modbus: list[ModbusDevice] = [*self.modbus_tcp, *(d for line in self.modbus_rtu for d in line.devices)]
        return frozenset([f"{d.name}.{p.name}" for d in modbus for p in d.points if is_urgent(d, p)]
                         + [f"{d.name}.{p.name}" for n in self.bacnet for d in n.devices for p in d.points
                            if d.is_urgent(p)])


_UPLINK_LIMITS = {
    "keepalive_s": (10, 1200),
    "batch_delay_ms": (0, 900_000),  # 15 minutes: a building's trend log interval (a metered SIM)
    "max_batch_samples": (1, 50000),
    "inflight_batches": (1, 256),
    "reconnect_max_s": (1, 3600),
    "reconnect_spread_s": (0, 3600),
    "heartbeat_s": (1, 3600),
    "time_slack_ms": (0, 1000),
}
_QUEUE_LIMITS = {"max_samples": (1000, 100_000_000)}
_SECTIONS = {"uplink", "queue", "modem", "wan", "report"}


def load(path: Path, cache: Path | None = None) -> BoxConfig:
    """Read and validate a configuration file.

    `cache`, when given, keeps the parsed TOML as JSON beside the digest of the file's
    bytes: Python's TOML parser takes ~0.3 s for 10,000 points where JSON takes ~0.02 s,
    and a Box mostly starts with the configuration it had. Only the parsing is cached
    (never the validation), and only for exactly the same bytes.

    Raises:
        ConfigError: the file is missing, too big, not TOML or not valid.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read the configuration {path}: {e.strerror}") from e
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"the configuration {path} is over {MAX_FILE_BYTES} bytes")
    digest = hashlib.sha256(data).hexdigest()
    raw = _from_cache(cache, digest) if cache else None
    if raw is None:
        try:
            raw = tomllib.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:  # TOMLDecodeError is a ValueError
            raise ConfigError(f"the configuration {path} is not valid TOML: {str(e)[:200]}") from e
        if cache:
            _to_cache(cache, digest, raw)
    return parse(raw)


def _from_cache(cache: Path, digest: str) -> dict[str, Any] | None:
    try:
        held = json.loads(cache.read_bytes())
    except (OSError, ValueError):
        return None
    if not (isinstance(held, dict) and held.get("sha256") == digest):
        return None
    raw = held.get("toml")
    return raw if isinstance(raw, dict) else None


def _to_cache(cache: Path, digest: str, raw: dict[str, Any]) -> None:
    try:
        write_atomic(cache, json.dumps({"sha256": digest, "toml": raw}).encode(), 0o600)
    except (OSError, TypeError, ValueError):  # read-only, or TOML values JSON cannot hold (dates)
        return


def parse(raw: Mapping[str, object]) -> BoxConfig:
    """Validate a parsed configuration.

    Raises:
        ConfigError: with every problem's place in the message.
    """
    unknown = set(raw) - {*_SECTIONS, *_BUSES}
    if unknown:
        raise ConfigError(f"unknown section(s): {', '.join(sorted(unknown))}")
    uplink = UplinkSettings(**_parse_ints(raw.get("uplink", {}), "uplink", _UPLINK_LIMITS))
    queue = QueueSettings(**_parse_ints(raw.get("queue", {}), "queue", _QUEUE_LIMITS))
    modem = parse_modem(raw["modem"]) if "modem" in raw else None
    wan = parse_wan(raw.get("wan", {}), modem)
    report = parse_report_section(raw.get("report", {}))
    parsed: dict[str, list[object]] = {}
    bus_names: set[str] = set()
    device_names: set[str] = set()
    for section, (parse, devices_of) in _BUSES.items():
        items = raw.get(section, [])
        if not isinstance(items, list):
            raise ConfigError(f"{section} must be a list of tables ([[{section}]])")
        parsed[section] = []
        for n, item in enumerate(items, 1):
            where = f"[[{section}]] #{n}"
            if not isinstance(item, Mapping):
                raise ConfigError(f"{where}: must be a table")
            try:
                bus = parse(item)
            except DriverConfigError as e:
                raise ConfigError(f"{where}: {e}") from e
            for dev in devices_of(bus):
                if dev in device_names:
                    raise ConfigError(f'{where}: device name "{dev}" is used twice')
                device_names.add(dev)
            name = str(getattr(bus, "name", ""))
            if name in bus_names:
                raise ConfigError(f'{where}: bus name "{name}" is used twice')
            bus_names.add(name)
            parsed[section].append(bus)
    return BoxConfig(
        uplink, queue,
        tuple(parsed["modbus_tcp"]),  # type: ignore[arg-type]
        tuple(parsed["modbus_rtu"]),  # type: ignore[arg-type]
        tuple(parsed["bacnet"]),  # type: ignore[arg-type]
        modem, wan, report,
    )


def problems(raw: Mapping[str, object]) -> list[str]:
    """Every problem of a parsed configuration, each with its place; empty when it is valid.

    `parse` stops at the first problem; this goes on: each section, each bus table, and
    within a serial line or BACnet network each device on its own (a line-wide problem
    is reported once), then the names used twice across what is valid. For a pushed
    configuration, rejected "with every reason".
    """
    try:
        parse(raw)
    except ConfigError as e:
        first = str(e)
    else:
        return []
    found: list[str] = []
    unknown = set(raw) - {*_SECTIONS, *_BUSES}
    if unknown:
        found.append(f"unknown section(s): {', '.join(sorted(unknown))}")
    for section, limits in (("uplink", _UPLINK_LIMITS), ("queue", _QUEUE_LIMITS)):
        try:
            _parse_ints(raw.get(section, {}), section, limits)
        except ConfigError as e:
            found.append(str(e))
    modem = raw.get("modem")
    found += modem_problems(modem) if modem is not None else []
    interface = str(modem.get("interface", "wwan0")) if isinstance(modem, Mapping) else None
    found += wan_problems(raw.get("wan", {}), interface)
    try:
        parse_report_section(raw.get("report", {}))
    except ConfigError as e:
        found.append(str(e))
    return found + _buses_problems(raw) or [first]


def _buses_problems(raw: Mapping[str, object]) -> list[str]:
    found: list[str] = []
    bus_names: set[str] = set()
    device_names: set[str] = set()
    for section, (parse_bus, devices_of) in _BUSES.items():
        items = raw.get(section, [])
        if not isinstance(items, list):
            found.append(f"{section} must be a list of tables ([[{section}]])")
            continue
        for n, item in enumerate(items, 1):
            where = f"[[{section}]] #{n}"
            if not isinstance(item, Mapping):
                found.append(f"{where}: must be a table")
                continue
            try:
                bus = parse_bus(item)
            except DriverConfigError as e:
                found.extend(f"{where}: {reason}" for reason in _bus_problems(parse_bus, item, str(e)))
                device_names.update(_raw_names(item))  # so a name used again later is still said
                continue
            for dev in devices_of(bus):
                if dev in device_names:
                    found.append(f'{where}: device name "{dev}" is used twice')
                device_names.add(dev)
            name = str(getattr(bus, "name", ""))
            if name in bus_names:
                found.append(f'{where}: bus name "{name}" is used twice')
            bus_names.add(name)
    return found


def _bus_problems(parse_bus: Callable[[Mapping[str, object]], object], raw: Mapping[str, object],
                  first: str) -> list[str]:
    """The problems of one bus table that failed: each of its devices tried alone, and within a
    device each of its points alone (so four bad points are four reasons, not the first)."""
    devices = raw.get("devices")
    if not isinstance(devices, list) or not devices:
        return _table_problems(parse_bus, raw) or [first]
    reasons: list[str] = []
    for n, device in enumerate(devices, 1):
        def alone(d: Mapping[str, object]) -> object:
            return parse_bus({**raw, "devices": [d]})
        for found in _table_problems(alone, device) if isinstance(device, Mapping) else [first]:
            reason = found.replace("device #1", f"device #{n}", 1)  # alone, an unnamed device is #1
            if reason not in reasons:
                reasons.append(reason)
    return reasons or [first]  # each device is fine alone: the problem is between them


def _table_problems(parse_one: Callable[[Mapping[str, object]], object], raw: Mapping[str, object]) -> list[str]:
    """The problems of one device's table: none, its first, or each of its points tried alone."""
    try:
        parse_one(raw)
    except DriverConfigError as e:
        first = str(e)
    else:
        return []
    points = raw.get("points")
    if not isinstance(points, list) or len(points) < 2:
        return [first]
    reasons: list[str] = []
    for n, point in enumerate(points, 1):
        try:
            parse_one({**raw, "points": [point]})
        except DriverConfigError as e:
            reason = str(e).replace("point #1", f"point #{n}", 1)
            if reason not in reasons:
                reasons.append(reason)
    if first not in reasons and not any(r.split(" point ", 1)[0] == first.split(" point ", 1)[0] and " point " in r
                                        for r in reasons):
        reasons.append(first)  # a problem between the points (a name used twice), or of the device itself
    return reasons


def _raw_names(raw: Mapping[str, object]) -> list[str]:
    """The device names a bus table that failed validation gives (a Modbus TCP device's own, or
    its devices')."""
    devices = raw.get("devices")
    tables = devices if isinstance(devices, list) else [raw] if "points" in raw else []
    return [str(t["name"]) for t in tables if isinstance(t, Mapping) and isinstance(t.get("name"), str)]


def file_problems(path: Path) -> list[str]:
    """Every problem of a configuration file, each with where it is (empty: valid, or unreadable
    in a way `load` says better)."""
    try:
        raw = tomllib.loads(path.read_bytes().decode("utf-8"))
    except OSError as e:
        return [f"cannot read the configuration {path}: {e.strerror}"]
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        return [f"the configuration {path} is not valid TOML: {str(e)[:200]}"]
    return problems(raw)


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
            raise ConfigError(f"[{section}] {key} must be an integer from {lo} to {hi}, not {_show(v)}")
        values[key] = v
    return values


