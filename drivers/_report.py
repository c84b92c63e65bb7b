"""A ``report`` table (report on change) of the configuration: parsed and checked (pure).

The same table sets the Box-wide default (``[report]``, `boxconfig.report`), a device's and a
point's; each field given overrides the wider one, field by field (point > device > ``[report]``)::

    report = { mode = "change", deadband = 0.5, deadband_pct = 1, max_age_s = 900 }

- ``mode``: "change" (a value is sent when it changed, `boxd.onchange` says exactly when) or
  "poll" (every value, every poll);
- ``deadband``: a number's change that is not worth sending, in its unit (>= 0);
- ``deadband_pct``: the same, relative to the last value sent, in percent (0..100); the larger of
  the two deadbands applies;
- ``max_age_s``: a value unchanged this long (seconds, 1..86400) is sent anyway.

Does not: know defaults (`boxconfig.report` does), or which points a device has.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from drivers._fields import as_float, as_int, check_range, choice, kind_of, opt, reject_unknown
from drivers.errors import ConfigError, show
from proto.wire import MAX_AGE_S  # the cloud looks no further back for a span's value

MODES: Final = ("change", "poll")
MAX_DEADBAND: Final = 1e12
_KEYS: Final = frozenset({"mode", "deadband", "deadband_pct", "max_age_s"})


@dataclass(frozen=True, slots=True)
class Report:
    """The fields a ``report`` table sets (None: not set here, the wider table's)."""

    mode: str | None = None
    deadband: float | None = None
    deadband_pct: float | None = None
    max_age_s: int | None = None

    def over(self, wider: Report) -> Report:
        """This table's fields, the wider table's where this one sets none."""
        return Report(
            self.mode if self.mode is not None else wider.mode,
            self.deadband if self.deadband is not None else wider.deadband,
            self.deadband_pct if self.deadband_pct is not None else wider.deadband_pct,
            self.max_age_s if self.max_age_s is not None else wider.max_age_s,
        )


def parse_report(value: object, what: str) -> Report:
    """A ``report`` table (`what` says where it is, e.g. 'device "ahu1": report').

    Raises:
        ConfigError: not a table, an unknown key, or a field of the wrong type or out of its bounds.
    """
    if not isinstance(value, Mapping):
        raise ConfigError(f"{what} must be a table, not {kind_of(value)}")
    reject_unknown(value, _KEYS, what)
    report = Report(
        mode=opt(value, "mode", what, lambda v, w: choice(v, w, MODES), None),
        deadband=opt(value, "deadband", what, as_float, None),
        deadband_pct=opt(value, "deadband_pct", what, as_float, None),
        max_age_s=opt(value, "max_age_s", what, as_int, None),
    )
    if report.deadband is not None and not 0 <= report.deadband <= MAX_DEADBAND:
        raise ConfigError(f"{what}: deadband {show(report.deadband)} must be from 0 to 1e12 (in the point's unit)")
    if report.deadband_pct is not None:
        check_range(what, "deadband_pct", report.deadband_pct, 0, 100)
    if report.max_age_s is not None:
        check_range(what, "max_age_s", report.max_age_s, 1, MAX_AGE_S)
    return report
