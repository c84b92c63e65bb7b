"""The ``[modem]``, ``[modem.ladder]`` and ``[wan]`` sections of the Box's configuration (pure code).

Format (every key optional but ``apn``; the defaults are shown)::

    [modem]
    backend = "modemmanager"    # or "at": direct AT commands on `port`
    port = ""                   # the AT port ("at": required, e.g. /dev/serial/by-id/usb-Quectel_EC25-if02-port0);
                                # with "modemmanager", which modem (its port name), "" for the first
    baudrate = 115200           # "at" only
    interface = "wwan0"         # the bearer's network interface; "" when the Box cannot see one
    apn = "internet"            # the operator's access point name (required)
    pin_file = ""               # the SIM PIN: a file of the state directory, mode 0600 ("" : no PIN)
    budget_mb = 0               # soft data budget per billing period, MB; 0: none
    billing_day = 1             # the day of the month a billing period starts, 1..28
    critical = []               # points never slowed down over budget ("ahu1.alarm", "meter1.*")
    slow_factor = 4             # over budget, other points are polled this many times less often, 1..100
    signal_s = 10               # how often the signal is read, 1..3600
    report_s = 300              # the modem's part of the health report: at most once per report_s, 10..86400
    weak_signal_s = 900         # a poor signal this long is reported as weak, 10..86400

    [modem.ladder]              # the recovery ladder (see boxd.modem)
    silent_s = 60               # the uplink silent this long (and the path to the platform dead): act, 3..3600
    check_s = 5                 # how often the modem is checked, 1..600
    at_timeout_s = 3            # an AT answer's deadline, 1..60
    bearer_timeout_s = 60       # each rung's time to bring the link back, 2..3600
    register_timeout_s = 90
    reset_timeout_s = 120
    power_timeout_s = 180
    backoff_s = 10              # the jittered pause before the next rung, 1..3600
    resets_per_hour = 3         # modem resets, power-cycles and reboots, together, 0..60
    resets_per_day = 6          # 0..1000
    reboots_per_day = 1         # 0..24

    [wan]
    prefer = ""                 # a wired or Wi-Fi uplink preferred to 4G (e.g. "eth0"); "" : 4G only
    failover_s = 30             # the preferred uplink bad this long: 4G takes over, 3..3600
    failback_s = 60             # the preferred uplink up this long: back to it, 3..86400

Unknown keys are errors; errors say where (``[modem] apn: ...``).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from boxconfig.errors import ConfigError
from drivers.errors import show
from proto import names

PIN_FILE = names.TARGET  # a plain file name of the state directory, no path
_PATTERN_RE = re.compile(r"[A-Za-z0-9_.*?\[\]-]{1,128}")
BACKENDS = ("modemmanager", "at")
BAUDRATES = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)


@dataclass(frozen=True, slots=True)
class LadderSettings:
    """Timings and budgets of the recovery ladder."""

    silent_s: int = 60
    check_s: int = 5
    at_timeout_s: int = 3
    bearer_timeout_s: int = 60
    register_timeout_s: int = 90
    reset_timeout_s: int = 120
    power_timeout_s: int = 180
    backoff_s: int = 10
    resets_per_hour: int = 3
    resets_per_day: int = 6
    reboots_per_day: int = 1


@dataclass(frozen=True, slots=True)
class ModemSettings:
    """The modem's configuration."""

    apn: str
    backend: str = "modemmanager"
    port: str = ""
    baudrate: int = 115200
    interface: str = "wwan0"
    pin_file: str = ""
    budget_mb: int = 0
    billing_day: int = 1
    critical: tuple[str, ...] = ()
    slow_factor: int = 4
    signal_s: int = 10
    report_s: int = 300
    weak_signal_s: int = 900
    ladder: LadderSettings = field(default_factory=LadderSettings)

    def is_critical(self, point: str) -> bool:
        """Whether a point keeps its poll interval over budget."""
        return any(fnmatch.fnmatchcase(point, p) for p in self.critical)


@dataclass(frozen=True, slots=True)
class WanSettings:
    """The choice of uplink."""

    prefer: str = ""
    failover_s: int = 30
    failback_s: int = 60


_MODEM_INTS = {"baudrate": (9600, 921600), "budget_mb": (0, 10_000_000), "billing_day": (1, 28),
               "slow_factor": (1, 100), "signal_s": (1, 3600), "report_s": (10, 86400), "weak_signal_s": (10, 86400)}
_LADDER_INTS = {"silent_s": (3, 3600), "check_s": (1, 600), "at_timeout_s": (1, 60), "bearer_timeout_s": (2, 3600),
                "register_timeout_s": (2, 3600), "reset_timeout_s": (2, 3600), "power_timeout_s": (2, 3600),
                "backoff_s": (1, 3600), "resets_per_hour": (0, 60), "resets_per_day": (0, 1000),
                "reboots_per_day": (0, 24)}
_WAN_INTS = {"failover_s": (3, 3600), "failback_s": (3, 86400)}
_MODEM_TEXTS = {"apn", "backend", "port", "interface", "pin_file"}


def parse_modem(raw: object) -> ModemSettings:
    """Validate a ``[modem]`` table.

    Raises:
        ConfigError: the first problem, with where it is.
    """
    problems = modem_problems(raw)
    if problems:
        raise ConfigError(problems[0])
    assert isinstance(raw, Mapping)
    ints = {k: raw[k] for k in _MODEM_INTS if k in raw}
    texts = {k: raw[k] for k in _MODEM_TEXTS if k in raw}
    ladder = raw.get("ladder", {})
    assert isinstance(ladder, Mapping)
    return ModemSettings(**texts, **ints, critical=tuple(raw.get("critical", ())),
                         ladder=LadderSettings(**{k: ladder[k] for k in _LADDER_INTS if k in ladder}))


def modem_problems(raw: object) -> list[str]:
    """Every problem of a ``[modem]`` table, each with its place."""
    if not isinstance(raw, Mapping):
        return ["[modem] must be a table"]
    found = _unknown(raw, "modem", {*_MODEM_INTS, *_MODEM_TEXTS, "critical", "ladder"})
    found += _ints(raw, "modem", _MODEM_INTS)
    mistyped = {k for k in _MODEM_TEXTS & set(raw) if not isinstance(raw[k], str)}
    found += [f"[modem] {key} must be text, not {show(raw[key])}" for key in sorted(mistyped)]
    found += _modem_values({k: v for k, v in raw.items() if k not in mistyped})
    ladder = raw.get("ladder", {})
    if not isinstance(ladder, Mapping):
        found.append("[modem.ladder] must be a table")
    else:
        found += _unknown(ladder, "modem.ladder", set(_LADDER_INTS)) + _ints(ladder, "modem.ladder", _LADDER_INTS)
        if not found and ladder.get("resets_per_hour", 3) > ladder.get("resets_per_day", 6):
            found.append("[modem.ladder] resets_per_hour must not be more than resets_per_day")
    return found


def _modem_values(raw: Mapping[str, object]) -> list[str]:
    # here, not at the top: the modem's drivers (and their imports) stay out of a daemon whose
    # configuration has no [modem] (docs/performance.md, "The whole service's memory")
    from drivers.modem import APN_RE
    from drivers.modem._netif import IFNAME_RE

    found = []
    apn = raw.get("apn")
    if apn is None:
        found.append('[modem] apn is required: the access point name of the SIM\'s operator, e.g. apn = "internet"')
    elif not APN_RE.fullmatch(str(apn)):
        found.append(f"[modem] apn {show(apn)} is not an access point name (letters, digits, dots and dashes, "
                     "up to 63)")
    backend = raw.get("backend", "modemmanager")
    if backend not in BACKENDS:
        found.append(f"[modem] backend must be one of {', '.join(BACKENDS)}, not {show(backend)}")
    port = str(raw.get("port", ""))
    if backend == "at" and not port:
        found.append('[modem] port is required with backend = "at": the modem\'s AT port, e.g. '
                     "/dev/serial/by-id/usb-Quectel_EC25-if02-port0")
    if port and (not port.startswith("/") or "\n" in port or ".." in port.split("/") or len(port) > 255):
        found.append(f"[modem] port must be an absolute device path, not {show(port)}")
    if raw.get("baudrate", 115200) not in BAUDRATES:
        found.append(f"[modem] baudrate must be one of {', '.join(map(str, BAUDRATES))}")
    interface = str(raw.get("interface", "wwan0"))
    if interface and not IFNAME_RE.fullmatch(interface):
        found.append(f"[modem] interface {show(interface)} is not a network interface name")
    pin_file = str(raw.get("pin_file", ""))
    if pin_file and not PIN_FILE.fullmatch(pin_file):
        found.append(f"[modem] pin_file must be a file name in the state directory (no path), not {show(pin_file)}")
    critical = raw.get("critical", [])
    if not isinstance(critical, list) or len(critical) > 1000 or not all(
            isinstance(p, str) and _PATTERN_RE.fullmatch(p) for p in critical):
        found.append("[modem] critical must be a list of up to 1000 point names or patterns (\"ahu1.alarm\", "
                     "\"meter1.*\")")
    return found


def parse_wan(raw: object, modem: ModemSettings | None) -> WanSettings:
    """Validate a ``[wan]`` table (its uplink fails over to the modem, which must be configured).

    Raises:
        ConfigError: the first problem, with where it is.
    """
    problems = wan_problems(raw, modem.interface if modem is not None else None)
    if problems:
        raise ConfigError(problems[0])
    assert isinstance(raw, Mapping)
    return WanSettings(str(raw.get("prefer", "")), **{k: raw[k] for k in _WAN_INTS if k in raw})


def wan_problems(raw: object, modem_interface: str | None) -> list[str]:
    """Every problem of a ``[wan]`` table (`modem_interface` None: no [modem] section)."""
    if not isinstance(raw, Mapping):
        return ["[wan] must be a table"]
    found = _unknown(raw, "wan", {"prefer", *_WAN_INTS}) + _ints(raw, "wan", _WAN_INTS)
    prefer = raw.get("prefer", "")
    if not isinstance(prefer, str) or (prefer and not _ifname(prefer)):
        found.append(f"[wan] prefer {show(prefer)} is not a network interface name")
    elif prefer and modem_interface is None:
        found.append("[wan] prefer needs a [modem] to fail over to")
    elif prefer and prefer == modem_interface:
        found.append(f"[wan] prefer names the modem's own interface {prefer}")
    return found


def _ifname(name: str) -> bool:
    from drivers.modem._netif import IFNAME_RE  # (see _modem_values)

    return bool(IFNAME_RE.fullmatch(name))


def _unknown(raw: Mapping[str, object], section: str, known: set[str]) -> list[str]:
    unknown = set(raw) - known
    return [f"[{section}]: unknown key(s): {', '.join(sorted(unknown))}"] if unknown else []


def _ints(raw: Mapping[str, object], section: str, limits: Mapping[str, tuple[int, int]]) -> list[str]:
    found = []
    for key, (lo, hi) in limits.items():
        v = raw.get(key)
        if key in raw and (not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi):
            found.append(f"[{section}] {key} must be an integer from {lo} to {hi}, not {show(v)}")
    return found
