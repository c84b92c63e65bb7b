"""What a Modbus simulator served: every read it answered, with the values of the Box's points
in it (pure), for the loss proofs (`tests/support/proofs.py`) to count against what the cloud stored.

Does: record, per answered read, the unit, the request (function code, address, count) and the
value of every point of the Box's configuration that the read covered, decoded from the
registers that went out; number the *lives* of the client (`new_life`, called by a test once a
killed Box's connections are gone) so that a proof can tell which process received what. Does
not: know whether the reply reached the client, or decide what the client owed (the proof does).

For coils and discrete inputs pymodbus's hook sees whole 16-bit words, not the bit count of the
request: a bit point in the same word as a requested one counts as served. No layout of
`drivers.sim._building` has two bit points of one table in one word.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from drivers._types import Value
from drivers.modbus._config import BIT_TABLES, ModbusPoint
from drivers.sim._building import _FC_TABLE, BuildingState

_READ_CODES = frozenset({1, 2, 3, 4})


@dataclass(frozen=True, slots=True)
class Served:
    """One answered read. `key` is the request: the same request again on a unit means that the
    client has started a later poll of that device."""

    life: int
    unit: int
    key: tuple[int, int, int]  # (function code, address, count)
    values: tuple[tuple[str, Value], ...]  # ("<device>.<point>", value) of each point covered
    at_ms: int = 0  # when it was answered (this machine's wall clock), for a loss's report


class ServedLog:
    """The reads a simulator answered, in order. Recorded on the simulator's thread, read from others."""

    def __init__(self, state: BuildingState) -> None:
        self._state = state
        self._lock = threading.Lock()
        self._reads: list[Served] = []
        self.life = 0
        self._index: dict[tuple[int, str], list[tuple[int, int, str, ModbusPoint]]] = {}
        for unit in state.units:
            for name, p in state.box_points(unit):
                self._index.setdefault((unit, p.table), []).append((p.address, p.address + p.size, name, p))

    def record(self, unit: int, function_code: int, address: int, count: int) -> None:
        """A read is being answered with the state's current registers."""
        table = _FC_TABLE.get(function_code)
        if function_code not in _READ_CODES or table is None:
            return
        end = address + 16 * count - address % 16 if table in BIT_TABLES else address + count
        values = tuple(
            (name, self._state.value(name))
            for lo, hi, name, _ in self._index.get((unit, table), ())
            if address <= lo and hi <= end
        )
        served = Served(self.life, unit, (function_code, address, count), values, time.time_ns() // 1_000_000)
        with self._lock:
            self._reads.append(served)

    def new_life(self) -> None:
        """What is served from now on goes to the client's next life (a new process)."""
        with self._lock:
            self.life += 1

    def reads(self) -> list[Served]:
        """Every read answered so far, oldest first (a copy)."""
        with self._lock:
            return list(self._reads)

    def __len__(self) -> int:
        return len(self._reads)
