"""What a write of one value to one point puts on the wire (pure).

Does: check that a point may take a value (writable, of the right kind, within the
point's ``min``/``max`` and its type's range, a whole number of the point's steps once
scale and offset are inverted) and choose the request: FC 5 (one coil), FC 6 (one
register), FC 15 (coils) or FC 16 (registers), by the point's table and size, and FC
15/16 only when the device wants them (``write_multiple``). A bool that is one bit of
a register is a read-modify-write: `WritePlan.merge` sets or clears the bit in the
register read just before (not atomic against another master on the same device).
Every refusal is a `WriteRefusedError` that names the point and the reason. Does not: send
anything (the bus does) or check the answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from drivers._types import Value
from drivers.errors import EncodeError, WriteRefusedError
from drivers.modbus._codec import PointCodec
from drivers.modbus._config import BIT_TABLES, ModbusPoint, Table

FC_WRITE_COIL: Final = 5
FC_WRITE_REGISTER: Final = 6
FC_WRITE_COILS: Final = 15
FC_WRITE_REGISTERS: Final = 16
_RESOLUTION: Final = 1e-6  # how far from a whole step a raw value may be (relative)


@dataclass(frozen=True, slots=True)
class WritePlan:
    """One write request, and for a bit of a register the mask to merge it with."""

    function_code: int
    table: Table
    address: int
    values: tuple[int, ...]  # registers, or 0/1 for coils
    mask: int | None = None  # a bit of a register: read it first and `merge`

    def merge(self, register: int) -> tuple[int, ...]:
        """The register to write: `register` (just read) with the point's bit set or cleared."""
        if self.mask is None:
            return self.values
        return ((register & ~self.mask & 0xFFFF) | self.values[0],)


def plan_write(
    name: str, point: ModbusPoint, codec: PointCodec, value: Value, *, write_multiple: bool
) -> WritePlan:
    """Check a value against its point and build the write.

    Args:
        name: the point's full name ("<device>.<point>"), for messages.
        point: its configuration.
        codec: its codec (byte and word order resolved).
        value: what to write, in engineering units.
        write_multiple: use FC 15/16 even for one coil or register.

    Raises:
        WriteRefusedError: the point is not writable, or the value is of the wrong kind, outside
            the point's bounds or its type's range, or not a whole number of steps.
    """
    where = f'point "{name}"'
    if not point.writable:
        raise WriteRefusedError(f"{where} is not writable (its configuration has no writable = true)")
    if value is None:
        raise WriteRefusedError(f"{where}: no value given (Modbus points have no priorities to relinquish)")
    if point.table in BIT_TABLES:
        if not isinstance(value, bool):
            raise WriteRefusedError(f"{where} is a coil: {_show(value)} is not true or false")
        code = FC_WRITE_COILS if write_multiple else FC_WRITE_COIL
        return WritePlan(code, point.table, point.address, (int(value),))
    if point.type in ("bool", "string"):
        expected = bool if point.type == "bool" else str
        if not isinstance(value, expected):
            raise WriteRefusedError(f"{where} is a {point.type}: {_show(value)} is not one")
    else:
        _check_number(where, point, value)
    try:
        registers = tuple(codec.encode(value))
    except EncodeError as e:
        raise WriteRefusedError(f"{where}: {e}") from e
    single = len(registers) == 1 and not write_multiple
    code = FC_WRITE_REGISTER if single else FC_WRITE_REGISTERS
    mask = codec.encode(True)[0] if point.type == "bool" else None
    return WritePlan(code, point.table, point.address, registers, mask)


def _check_number(where: str, point: ModbusPoint, value: Value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WriteRefusedError(f"{where} is a {point.type}: {_show(value)} is not a number")
    if not math.isfinite(value) and not point.type.startswith("float"):
        raise WriteRefusedError(f"{where} is a {point.type}: {value!r} is not a finite number")
    if point.min is not None and value < point.min:
        raise WriteRefusedError(f"{where}: {value!r} is below its min {point.min!r}")
    if point.max is not None and value > point.max:
        raise WriteRefusedError(f"{where}: {value!r} is above its max {point.max!r}")
    if point.type.startswith("float") or not math.isfinite(value):
        return
    raw = (value - point.offset) / point.scale
    step = round(raw)
    if abs(raw - step) > _RESOLUTION * max(1.0, abs(raw)):
        resolution = f"steps of {point.scale!r}" if point.scale != 1 else "whole numbers"
        raise WriteRefusedError(f"{where} is a {point.type} in {resolution}: {value!r} is not one of them")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
