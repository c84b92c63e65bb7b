"""What the platform sends a Box, typed, encoded and decoded (pure code).

    down/config   `ConfigPush`   {"version": int >= 1, "toml": str(, "allow_empty": bool)}, retained
    down/cmd      `Command`      {"id": str, "name": str, "expires": unix seconds, "args": map}
    down/time     `TimeNotice`   JSON {"ts": ms(, "acks": 1)}: "acks" says the platform sends `StoredNotice`s
    down/stored   `StoredNotice` JSON {"e": epoch, "s": seq(, "b": base64)}: every batch of queue epoch `e` up
                  to `s` is stored, and batch s + 1 + i too where bit i of "b" is set (at most `MAX_AHEAD` bits)
    down/crl      the platform's CRL, PEM (`decode_crl`)
    down/table    `TableRequest` JSON {"table": uint32}: send your point table (the platform lacks it)

Payloads use the uplink's framing (`proto.wire`), decoded with `wire.unframe_untrusted`: sizes
bounded on the wire and inflated, at most `MAX_DEPTH` nested containers and `MAX_ITEMS` items,
no CBOR tags, no indefinite lengths, no duplicate keys. Every field is then checked for type,
length and range; unknown fields are refused; a boolean is never taken for an integer and NaN
or infinity never for a number. Anything wrong raises `WireError` with a message saying what,
for the reply to the platform. A configuration's *content* (its TOML against the schema) is
checked by `boxconfig`, not here.

Commands are a tagged union (`proto.commands`): one dataclass per command, decoded here from
its name and arguments, encoded back by `encode_command`.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Final

from proto import commands, names, wire
from proto.commands import Command
from proto.errors import WireError
from proto.text import clip, kind, show

MAX_CONFIG_PAYLOAD: Final = 256 * 1024  # on the wire
MAX_CONFIG_TEXT: Final = 4 * 1024 * 1024  # inflated, and the TOML text's UTF-8 size
MAX_CMD_PAYLOAD: Final = 16 * 1024  # on the wire
MAX_CMD_INFLATED: Final = 64 * 1024
MAX_DEPTH: Final = 4  # document > args > points list: 3 are used
MAX_ITEMS: Final = 1_000  # CBOR data items in one message
MAX_VERSION: Final = 2**63 - 1
MAX_EXPIRES: Final = 1e11  # unix seconds, year 5138: beyond is garbage
MAX_TIME: Final = 1024
MAX_CRL: Final = 1024 * 1024
MAX_AHEAD: Final = 256  # batches past a stored notice's hole it can say are stored (a 32-byte bitmap)
CRL_HEAD: Final = b"-----BEGIN X509 CRL-----"


@dataclass(frozen=True, slots=True)
class ConfigPush:
    """A configuration pushed by the platform: its version and its TOML text, as sent."""

    version: int
    toml_text: str
    allow_empty: bool = False  # the operator meant a configuration without points (boxcloud --allow-empty)

    def encode(self) -> bytes:
        """The framed message, for ``down/config``."""
        doc: dict[str, object] = {"version": self.version, "toml": self.toml_text}
        if self.allow_empty:
            doc["allow_empty"] = True
        return wire.encode_doc(doc)


@dataclass(frozen=True, slots=True)
class TimeNotice:
    """The platform's time, for a Box that may have booted without a real-time clock; `acks`: the
    platform acknowledges stored batches (`StoredNotice`), so the Box keeps a batch until then. An
    older Box reads only "ts"; a notice without "acks" (an older platform) tells the Box to forget a
    batch once the broker has it, as before."""

    ts_ms: int
    acks: bool = False

    def encode(self) -> bytes:
        """The message, for ``down/time``."""
        doc: dict[str, int] = {"ts": self.ts_ms}
        if self.acks:
            doc["acks"] = 1
        return json.dumps(doc, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class StoredNotice:
    """The end-to-end acknowledgement: every batch of the Box's queue `epoch` up to `seq` is stored
    (or was reported evicted), counted from the oldest batch the Box said it holds; and, past a hole
    (a batch lost with a receiver, or still on its way), the batches `ahead` says are stored too (the
    seqs above `seq`, at most `MAX_AHEAD` of them), so that the Box sends again only what is missing.
    Cumulative: a later notice covers an earlier one that was lost."""

    epoch: int
    seq: int
    ahead: frozenset[int] = frozenset()

    def encode(self) -> bytes:
        """The message, for ``down/stored`` (about 40 bytes; past a hole, 4 base64 characters more per
        24 batches)."""
        doc: dict[str, object] = {"e": self.epoch, "s": self.seq}
        if self.ahead:
            bits = bytearray((max(self.ahead) - self.seq + 7) // 8)
            for s in self.ahead:
                bits[(s - self.seq - 1) // 8] |= 1 << ((s - self.seq - 1) % 8)
            doc["b"] = base64.b64encode(bytes(bits)).decode()
        return json.dumps(doc, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class TableRequest:
    """The platform got a batch naming a point table it does not know: the Box is asked to send its own."""

    table_id: int

    def encode(self) -> bytes:
        """The message, for ``down/table``."""
        return json.dumps({"table": self.table_id}).encode()


# -- decoding ---------------------------------------------------------------------------


def decode_config(payload: bytes) -> ConfigPush:
    """Decode a configuration push (its fields; the TOML is `boxconfig`'s to check).

    Raises:
        WireError: framing, or a field missing or wrong.
    """
    doc = _document(payload, "config", MAX_CONFIG_PAYLOAD, MAX_CONFIG_TEXT, {"version", "toml"},
                    allowed={"version", "toml", "allow_empty"})
    version = doc["version"]
    if not commands.is_int(version) or not 1 <= version <= MAX_VERSION:
        raise WireError(f"config: version must be an integer from 1 to {MAX_VERSION}, not {show(version)}")
    text = doc["toml"]
    if not isinstance(text, str):
        raise WireError(f"config: toml must be text, not {kind(text)}")
    if len(text.encode("utf-8")) > MAX_CONFIG_TEXT:  # cannot be, inflated: said for the reader
        raise WireError(f"config: toml is over {MAX_CONFIG_TEXT} bytes")
    allow_empty = doc.get("allow_empty", False)
    if not isinstance(allow_empty, bool):
        raise WireError(f"config: allow_empty must be true or false, not {kind(allow_empty)}")
    return ConfigPush(version, text, allow_empty)


def decode_command(payload: bytes) -> Command:
    """Decode a command and its arguments into its dataclass.

    Raises:
        WireError: what is wrong; when the id could be read, the message starts with it.
    """
    doc = _document(payload, "cmd", MAX_CMD_PAYLOAD, MAX_CMD_INFLATED, {"id", "name", "expires", "args"})
    return command(doc["id"], doc["name"], doc["expires"], doc["args"])


def command(cmd_id: object, name: object, expires: object, args: object) -> Command:
    """The command of this id, name, expiry and arguments, every field checked (what the platform
    checks before it queues a command, and the Box when it receives one).

    Raises:
        WireError: what is wrong; when the id could be read, the message starts with it.
    """
    if not names.COMMAND_ID.fullmatch(cmd_id):
        raise WireError(f"cmd: id must be 1..64 of A-Z a-z 0-9 . _ : -, not {show(cmd_id)}")
    assert isinstance(cmd_id, str)
    where = f"cmd {cmd_id}"
    if not isinstance(name, str):
        raise WireError(f"{where}: name must be text, not {kind(name)}")
    build = commands.BUILDERS.get(name)
    if build is None:
        raise WireError(f"{where}: unknown command {show(name)} (known: {', '.join(sorted(commands.BUILDERS))})")
    if not (commands.is_number(expires) and 0 <= expires <= MAX_EXPIRES):
        raise WireError(f"{where}: expires must be unix seconds from 0 to {MAX_EXPIRES:.0f}, not {show(expires)}")
    if not isinstance(args, dict):
        raise WireError(f"{where}: args must be a map, not {kind(args)}")
    return build(cmd_id, float(expires), f"{where} ({name})", args)


def encode_command(cmd: Command) -> bytes:
    """The framed message of a command, for ``down/cmd``."""
    return wire.encode_doc({"id": cmd.id, "name": cmd.name, "expires": cmd.expires, "args": cmd.args()})


def peek(payload: bytes, key: str) -> object:
    """A field of a refused downlink message, if it can be read at all (for the reply), else None."""
    try:
        doc = wire.unframe_untrusted(payload, max_payload=MAX_CONFIG_PAYLOAD, max_inflated=MAX_CONFIG_TEXT,
                                     max_depth=MAX_DEPTH, max_items=MAX_ITEMS)
    except WireError:
        return None
    return doc.get(key) if isinstance(doc, dict) else None


def _small_json_uint(payload: bytes, key: str, bound: int, *, only: bool = False) -> int | None:
    """`{key: n}` (with `only`, no other key) with 0 <= n < bound, from at most `MAX_TIME` bytes; else None."""
    try:
        doc = json.loads(payload) if len(payload) <= MAX_TIME else None
    except (ValueError, RecursionError):
        doc = None
    v = doc.get(key) if isinstance(doc, dict) and (len(doc) == 1 or not only) else None
    return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < bound else None


def decode_time(payload: bytes) -> TimeNotice:
    """Decode the platform's time (and whether it acknowledges stored batches: "acks" 1).

    Raises:
        WireError: not {"ts": <ms>(, "acks": 0|1)}.
    """
    ts = _small_json_uint(payload, "ts", 2**63)
    if ts is None:
        raise WireError('time must be {"ts": <ms>}')
    acks = _small_json_uint(payload, "acks", 2)
    return TimeNotice(ts, acks == 1)


def decode_stored(payload: bytes) -> StoredNotice:
    """Decode the platform's "stored up to" acknowledgement.

    Raises:
        WireError: not {"e": <epoch>, "s": <seq>(, "b": <base64 bitmap>)}: integers from 0 to
            2**63 - 1, a bitmap of at most `MAX_AHEAD` bits.
    """
    epoch, seq = _small_json_uint(payload, "e", 2**63), _small_json_uint(payload, "s", 2**63)
    doc = json.loads(payload) if epoch is not None and seq is not None else {}
    raw = doc.get("b", "") if isinstance(doc, dict) and set(doc) <= {"e", "s", "b"} else None
    try:
        bits = base64.b64decode(raw, validate=True) if isinstance(raw, str) and len(raw) <= 4 * MAX_AHEAD // 24 + 4 \
            else None
    except ValueError:
        bits = None
    if epoch is None or seq is None or bits is None or len(bits) > MAX_AHEAD // 8:
        raise WireError('a stored notice must be {"e": <queue epoch>, "s": <sequence number>, "b": <base64 bitmap '
                        f"of at most {MAX_AHEAD} bits>}}")
    ahead = frozenset(seq + 1 + 8 * i + j for i, byte in enumerate(bits) for j in range(8) if byte >> j & 1)
    return StoredNotice(epoch, seq, ahead)


def decode_table_request(payload: bytes) -> TableRequest:
    """Decode the platform's request for the point table.

    Raises:
        WireError: not {"table": <uint32>}.
    """
    tid = _small_json_uint(payload, "table", 2**32, only=True)
    if tid is None:
        raise WireError('a table request must be {"table": <32-bit table id>}')
    return TableRequest(tid)


def decode_crl(payload: bytes) -> bytes:
    """Check that a payload is a PEM CRL of at most `MAX_CRL` bytes (its signature is checked by
    `trust.crl`, against the platform's CA, before the Box keeps it).

    Raises:
        WireError: not a PEM CRL, or too big.
    """
    if len(payload) > MAX_CRL or not bytes(payload).lstrip().startswith(CRL_HEAD):
        raise WireError(f"not a PEM CRL of at most {MAX_CRL} bytes")
    return bytes(payload)


def _document(payload: bytes, what: str, max_payload: int, max_inflated: int, keys: set[str], *,
              allowed: set[str] | None = None) -> dict[str, object]:
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise WireError(f"{what}: payload must be bytes, not {type(payload).__name__}")
    try:
        doc = wire.unframe_untrusted(bytes(payload), max_payload=max_payload, max_inflated=max_inflated,
                                     max_depth=MAX_DEPTH, max_items=MAX_ITEMS)
    except WireError as e:
        raise WireError(f"{what}: {clip(str(e), 300)}") from None
    if not isinstance(doc, dict):
        raise WireError(f"{what}: the message must be a map, not {kind(doc)}")
    commands.check_keys(doc, what, keys, allowed or keys)
    return doc
