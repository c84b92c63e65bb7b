"""Point values to and from Modbus registers and bits (pure: no I/O, no pymodbus).

Does: decode 16-bit registers (or the bits of a coil/discrete read) into a point's
value, scale it, and encode a value back into registers for writes. Does not: know
addresses or tables (`_plan`), validate configuration (`_config`), talk to devices.

Types and sizes in registers: bool (one bit of a register, or a coil/discrete
input), int16, uint16 (1), int32, uint32, float32 (2), int64, uint64, float64 (4),
string (`length` registers, ASCII, two characters per register).

Byte and word order. A value's bytes, most significant first (float32 1.5 is
``3F C0 00 00``), are cut into 16-bit words. ``word_order`` says in which order the
registers hold the words ("big": most significant word in the lowest register);
``byte_order`` says how each word sits in its register ("big": the first byte is the
register's high byte)::

    float32 1.5     byte big     byte little
    word big        3FC0 0000    C03F 0000
    word little     0000 3FC0    0000 C03F

A bool reads bit ``bit`` (0 = least significant) of the register value after the
byte order is applied. Strings use the byte order; their registers are always in
ascending order (word order does not apply); NULs and spaces at either end are
stripped; bytes outside ASCII are a `DecodeError`.

Scaling: numbers read as ``raw * scale + offset``. When scale is 1 and offset 0 an
integer stays an int; otherwise the result is a float. A scale that is the
reciprocal of an integer (0.1, 0.01) divides by that integer, so that 215 with scale
0.1 reads 21.5, not 21.500000000000004. A float32 reads as the shortest decimal that
is the same float32 (21.3, not 21.299999237060547). NaN and infinities pass through.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Final, Literal

from drivers._types import Value
from drivers.errors import DecodeError, EncodeError

DataType = Literal[
    "bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"
]
Order = Literal["big", "little"]

TYPES: Final[tuple[DataType, ...]] = (
    "bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"
)
ORDERS: Final[tuple[Order, ...]] = ("big", "little")
MAX_STRING_REGISTERS: Final = 125  # one read request

_STRUCT_CODE: Final[dict[str, str]] = {
    "int16": "h", "uint16": "H", "int32": "i", "uint32": "I",
    "int64": "q", "uint64": "Q", "float32": "f", "float64": "d",
}
_FIXED_SIZE: Final[dict[str, int]] = {
    "bool": 1, "int16": 1, "uint16": 1, "int32": 2, "uint32": 2,
    "int64": 4, "uint64": 4, "float32": 2, "float64": 4,
}
_F32: Final = struct.Struct(">f")


def register_count(kind: str, length: int | None = None) -> int:
    """The number of registers a value of `kind` occupies.

    Args:
        kind: one of `TYPES`.
        length: for "string", its size in registers (1..125); ignored otherwise.

    Raises:
        ValueError: unknown kind, or a string without a valid length.
    """
    if kind == "string":
        if length is None or not 1 <= length <= MAX_STRING_REGISTERS:
            raise ValueError(f"a string needs a length of 1..{MAX_STRING_REGISTERS} registers")
        return length
    try:
        return _FIXED_SIZE[kind]
    except KeyError:
        raise ValueError(f"unknown type {kind!r}") from None


def _swap16(register: int) -> int:
    return ((register & 0xFF) << 8) | (register >> 8)


def _shortest_float32(x: float) -> float:
    """The shortest decimal that packs to the same float32 as `x`."""
    if not math.isfinite(x) or x == 0.0:
        return x
    packed = _F32.pack(x)
    for digits in (6, 7, 8):
        y = float(f"{x:.{digits}g}")
        try:
            if _F32.pack(y) == packed:
                return y
        except OverflowError:
            continue
    return x


class RegisterWindow:
    """The registers of one response, with their bytes built once and shared by its points."""

    __slots__ = ("_swapped", "_wire", "registers")

    def __init__(self, registers: Sequence[int]) -> None:
        self.registers = registers
        self._wire: bytes | None = None
        self._swapped: bytes | None = None

    def wire(self) -> bytes:
        """Each register high byte first, in register order (as on the wire)."""
        if self._wire is None:
            try:
                self._wire = struct.pack(f">{len(self.registers)}H", *self.registers)
            except struct.error as e:
                raise DecodeError(f"a register is not a 16-bit value: {e}") from e
        return self._wire

    def swapped(self) -> bytes:
        """Each register low byte first, in register order."""
        if self._swapped is None:
            try:
                self._swapped = struct.pack(f"<{len(self.registers)}H", *self.registers)
            except struct.error as e:
                raise DecodeError(f"a register is not a 16-bit value: {e}") from e
        return self._swapped


class PointCodec:
    """How one point's value is laid out: built once per point, used on every read."""

    __slots__ = (
        "_bit", "_byte_little", "_divisor", "_float32", "_identity", "_offset", "_same",
        "_scale", "_struct", "kind", "size",
    )

    def __init__(
        self,
        kind: DataType,
        *,
        byte_order: Order = "big",
        word_order: Order = "big",
        bit: int | None = None,
        length: int | None = None,
        scale: float = 1.0,
        offset: float = 0.0,
    ) -> None:
        """Compile a layout.

        Raises:
            ValueError: an unknown type or order, a bool without a bit 0..15 where one is
                needed (use bit=None for coils), a string without a valid length, or a
                scale of zero or not finite.
        """
        if byte_order not in ORDERS or word_order not in ORDERS:
            raise ValueError(f"orders must be 'big' or 'little': {byte_order!r}, {word_order!r}")
        if bit is not None and not 0 <= bit <= 15:
            raise ValueError(f"bit {bit} is out of range 0..15")
        if not (math.isfinite(scale) and math.isfinite(offset)) or scale == 0:
            raise ValueError(f"scale must be finite, not 0; offset finite: {scale!r}, {offset!r}")
        self.kind: DataType = kind
        self.size = register_count(kind, length)
        self._bit = bit or 0
        self._byte_little = byte_order == "little"
        # See the module docstring: the wire bytes read with the word order's endianness
        # when byte and word order agree, the byte-swapped registers when they differ.
        self._same = byte_order == word_order
        code = _STRUCT_CODE.get(kind)
        endian = ">" if word_order == "big" else "<"
        self._struct = struct.Struct(endian + code) if code else None
        self._float32 = kind == "float32"
        self._scale = float(scale)
        self._offset = float(offset)
        self._identity = scale == 1 and offset == 0
        inverse = 1.0 / self._scale
        whole = round(inverse)
        near = abs(whole) >= 2 and abs(inverse - whole) <= 1e-9 * abs(whole)
        self._divisor = float(whole) if near else 0.0

    # -- decoding ---------------------------------------------------------------------

    def decode_window(self, window: RegisterWindow, start: int) -> Value:
        """Decode the value that starts at register `start` of a response.

        Raises:
            DecodeError: the window is too short, or the registers are not a valid value.
        """
        try:
            if self._struct is not None:
                source = window.wire() if self._same else window.swapped()
                raw = self._struct.unpack_from(source, start * 2)[0]
                if self._float32:
                    raw = _shortest_float32(raw)
                return self._scaled(raw)
            if self.kind == "bool":
                register = window.registers[start]
                if self._byte_little:
                    register = _swap16(register)
                return bool((register >> self._bit) & 1)
            return self._decode_string(window, start)
        except (struct.error, IndexError) as e:
            raise DecodeError(f"{self.kind} at offset {start}: {e}") from e

    def decode_registers(self, registers: Sequence[int]) -> Value:
        """Decode a value from exactly its own registers.

        Raises:
            DecodeError: not exactly `size` registers, or not a valid value.
        """
        if len(registers) != self.size:
            raise DecodeError(f"{self.kind} needs {self.size} register(s), got {len(registers)}")
        return self.decode_window(RegisterWindow(registers), 0)

    def decode_bit(self, bits: Sequence[bool], start: int) -> bool:
        """Decode a coil or discrete input at index `start` of a bit read.

        Raises:
            DecodeError: `start` is past the end of the bits.
        """
        try:
            return bool(bits[start])
        except IndexError as e:
            raise DecodeError(f"bit {start} is past the end of {len(bits)} bits") from e

    def _decode_string(self, window: RegisterWindow, start: int) -> str:
        source = window.swapped() if self._byte_little else window.wire()
        data = source[start * 2 : (start + self.size) * 2]
        if len(data) != self.size * 2:
            raise DecodeError(f"string of {self.size} registers at {start}: window too short")
        try:
            return data.decode("ascii").strip("\x00 ")
        except UnicodeDecodeError as e:
            raise DecodeError(f"string is not ASCII: {data[:16]!r}") from e

    def _scaled(self, raw: float) -> float:
        if self._identity:
            return raw
        if self._divisor:
            return raw / self._divisor + self._offset
        return raw * self._scale + self._offset

    # -- encoding ---------------------------------------------------------------------

    def encode(self, value: Value) -> list[int]:
        """Encode a value into the point's registers (the inverse of `decode_window`).

        A bool gives its register with only its bit set (or 0): a writer that must keep
        the other bits reads, merges and writes. For a coil, write `bool(value)` as is.

        Raises:
            EncodeError: the value is of the wrong kind or does not fit the type.
        """
        if self.kind == "string":
            return self._encode_string(value)
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise EncodeError(f"bool point: {value!r} is not a bool")
            register = (1 << self._bit) if value else 0
            return [_swap16(register) if self._byte_little else register]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise EncodeError(f"{self.kind} point: {value!r} is not a number")
        raw = self._unscaled(value)
        if self._struct is None:  # pragma: no cover - every remaining kind has a struct
            raise EncodeError(f"cannot encode {self.kind}")
        if not self.kind.startswith("float"):
            if isinstance(raw, float):
                if not math.isfinite(raw):
                    raise EncodeError(f"{self.kind} point: {value!r} is not finite")
                raw = round(raw)
        else:
            raw = float(raw)
        try:
            data = self._struct.pack(raw)
        except (struct.error, OverflowError) as e:
            raise EncodeError(f"{self.kind} point: {value!r} is out of range ({e})") from e
        layout = ">" if self._same else "<"
        return list(struct.unpack(f"{layout}{self.size}H", data))

    def _unscaled(self, value: float) -> float:
        if self._identity:
            return value
        if self._divisor:
            return (value - self._offset) * self._divisor
        return (value - self._offset) / self._scale

    def _encode_string(self, value: Value) -> list[int]:
        if not isinstance(value, str):
            raise EncodeError(f"string point: {value!r} is not a str")
        try:
            data = value.encode("ascii")
        except UnicodeEncodeError as e:
            raise EncodeError(f"string point: {value[:16]!r}... is not ASCII") from e
        if len(data) > self.size * 2:
            raise EncodeError(f"string point: {len(data)} characters overflow {self.size} regs")
        layout = "<" if self._byte_little else ">"
        return list(struct.unpack(f"{layout}{self.size}H", data.ljust(self.size * 2, b"\x00")))


def decode(
    registers: Sequence[int],
    kind: DataType,
    *,
    byte_order: Order = "big",
    word_order: Order = "big",
    bit: int | None = None,
    length: int | None = None,
    scale: float = 1.0,
    offset: float = 0.0,
) -> Value:
    """Decode one value from exactly its registers (see the module docstring).

    Example: ``decode([0x3FC0, 0x0000], "float32") == 1.5``.

    Raises:
        DecodeError: wrong number of registers, or not a valid value.
        ValueError: an invalid layout (type, order, bit, length, scale).
    """
    codec = PointCodec(
        kind, byte_order=byte_order, word_order=word_order, bit=bit, length=length,
        scale=scale, offset=offset,
    )
    return codec.decode_registers(registers)


def encode(
    value: Value,
    kind: DataType,
    *,
    byte_order: Order = "big",
    word_order: Order = "big",
    bit: int | None = None,
    length: int | None = None,
    scale: float = 1.0,
    offset: float = 0.0,
) -> list[int]:
    """Encode one value into registers (the inverse of `decode`).

    Example: ``encode(1.5, "float32", word_order="little") == [0x0000, 0x3FC0]``.

    Raises:
        EncodeError: the value is of the wrong kind or does not fit the type.
        ValueError: an invalid layout (type, order, bit, length, scale).
    """
    codec = PointCodec(
        kind, byte_order=byte_order, word_order=word_order, bit=bit, length=length,
        scale=scale, offset=offset,
    )
    return codec.encode(value)
