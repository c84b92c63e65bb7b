"""The report-on-change rules of a configuration: the Box-wide ``[report]`` section and each point's rule.

Format (`drivers._report` says what each field means; a configuration without ``[report]`` keeps
mode "poll", what a Box did before, and a new installation's template sets "change")::

    [report]
    mode = "change"      # "change" | "poll" (the default when not given: "poll")
    deadband = 0.0       # absolute, >= 0
    deadband_pct = 0.0   # relative to the last value sent, 0..100
    max_age_s = 900      # 1..86400

A device's ``report`` table overrides this field by field, and a point's overrides its device's.
Why these defaults: docs/performance.md ("Report on change"). Pure code, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from boxconfig.errors import ConfigError
from drivers._report import Report, parse_report
from drivers.errors import ConfigError as DriverConfigError

if TYPE_CHECKING:
    from boxconfig.schema import BoxConfig

@dataclass(frozen=True, slots=True)
class Rule:
    """How one point is reported, resolved (what `boxd.onchange` applies)."""

    poll: bool = False  # mode "poll": every value, every poll
    deadband: float = 0.0  # absolute, in the point's unit
    deadband_pct: float = 0.0  # relative to the last value sent, 0..100
    max_age_ms: int = 900_000


DEFAULT = Report(mode="poll", deadband=0.0, deadband_pct=0.0, max_age_s=900)


def parse_report_section(raw: object) -> Report:
    """The ``[report]`` section over the defaults.

    Raises:
        ConfigError: what is wrong, e.g. ``[report]: deadband_pct 150 is out of range 0..100``.
    """
    try:
        return parse_report(raw, "[report]").over(DEFAULT)
    except DriverConfigError as e:
        raise ConfigError(str(e)) from e


def _points(cfg: BoxConfig) -> Iterator[tuple[str, Report | None, Report | None]]:
    """(point name, its device's report table, its own) of every configured point."""
    devices: list[Any] = [*cfg.modbus_tcp, *(d for line in cfg.modbus_rtu for d in line.devices),
               *(d for net in cfg.bacnet for d in net.devices)]
    for d in devices:
        for p in d.points:
            yield f"{d.name}.{p.name}", d.report, p.report


def report_rules(cfg: BoxConfig, table: Sequence[str]) -> list[Rule]:
    """The rule of each point of `table` (point names; one not configured gets the Box-wide rule)."""
    box = cfg.report
    by_name: Mapping[str, Report] = {
        name: (own or Report()).over((device or Report()).over(box))
        for name, device, own in _points(cfg) if device is not None or own is not None
    }
    rules: dict[Report, Rule] = {}  # points alike share one rule

    def rule(r: Report) -> Rule:
        if r not in rules:
            rules[r] = Rule(r.mode == "poll", r.deadband or 0.0, r.deadband_pct or 0.0, (r.max_age_s or 900) * 1000)
        return rules[r]

    return [rule(by_name.get(name, box)) for name in table]
