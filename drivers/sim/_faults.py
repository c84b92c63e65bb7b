"""Fault injection for the Modbus simulators: what a unit does with a request (pure).

Does: keep per-unit faults (offline: no answer; slow: answer after a delay; a read
limit: refuse reads of more than N registers with an exception, or ignore them;
garbled: answer with a frame that is not valid) and decide, per request, what the
server does. The TCP and the RTU simulator both inherit `FaultInjection`, so tests
set the same faults on either. Does not: touch sockets or ptys, or build frames (each
server garbles in its own framing).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Final

_READS: Final = frozenset({3, 4})  # register reads: what a read limit applies to


class Action(enum.Enum):
    """What a unit does with a request."""

    ANSWER = "answer"
    SILENT = "silent"
    EXCEPTION = "exception"
    GARBLE = "garble"


@dataclass(frozen=True, slots=True)
class UnitFaults:
    """The faults of one unit (all off by default)."""

    offline: bool = False
    delay_s: float = 0.0
    max_registers: int | None = None
    limit_silent: bool = False
    limit_code: int = 3  # illegal data value: "a count this device does not support"
    garbled: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one request, after `delay_s`."""

    action: Action
    delay_s: float = 0.0
    exception_code: int = 0


class FaultInjection:
    """Per-unit faults; the simulators inherit this and consult `decide` per request."""

    def __init__(self) -> None:
        self._faults: dict[int, UnitFaults] = {}

    def faults(self, unit_id: int) -> UnitFaults:
        """The faults set on a unit."""
        return self._faults.get(unit_id, UnitFaults())

    def _set(self, unit_id: int, **changes: object) -> None:
        self._faults[unit_id] = replace(self.faults(unit_id), **changes)  # type: ignore[arg-type]

    def set_offline(self, unit_id: int, offline: bool = True) -> None:
        """Make a unit stop answering (or answer again); the other units are unaffected."""
        self._set(unit_id, offline=offline)

    def set_delay(self, unit_id: int, delay_s: float) -> None:
        """Make a unit answer `delay_s` seconds late (0: on time)."""
        self._set(unit_id, delay_s=delay_s)

    def set_read_limit(self, unit_id: int, max_registers: int | None, *, silent: bool = False,
                       code: int = 3) -> None:
        """Make a unit refuse register reads of more than `max_registers` (None: no limit):
        with exception `code` (3, 2 or 4), or, with `silent`, by not answering them."""
        self._set(unit_id, max_registers=max_registers, limit_silent=silent, limit_code=code)

    def set_garbled(self, unit_id: int, garbled: bool = True) -> None:
        """Make a unit answer with frames that are not valid (bad length or CRC)."""
        self._set(unit_id, garbled=garbled)

    def clear_faults(self, unit_id: int | None = None) -> None:
        """Remove every fault (of one unit, or of all)."""
        if unit_id is None:
            self._faults.clear()
        else:
            self._faults.pop(unit_id, None)

    def decide(self, unit_id: int, function_code: int, count: int) -> Decision:
        """What the unit does with a request of `function_code` for `count` values."""
        f = self.faults(unit_id)
        if f.offline:
            return Decision(Action.SILENT)
        limit = f.max_registers
        if limit is not None and function_code in _READS and count > limit:
            if f.limit_silent:
                return Decision(Action.SILENT, f.delay_s)
            return Decision(Action.EXCEPTION, f.delay_s, f.limit_code)
        if f.garbled:
            return Decision(Action.GARBLE, f.delay_s)
        return Decision(Action.ANSWER, f.delay_s)
