"""What the platform sends a Box, checked against the Box's own state (pure code).

The messages themselves are `proto`'s (`proto.downlink`, `proto.commands`): decoded there, strictly.
Here: a configuration push checked by its meaning (`decode_config`, with `boxconfig.check_push`);
whether a command already ran (`SeenIds`, kept by the daemon across restarts) and whether it
expired (`is_expired`, against the daemon's clock). Every refusal is a `proto.errors.RejectedError`
whose message is the reason sent back to the platform. Whether a write may go to its point is
the point's bus's to say (`PointSource.check_write`): this layer knows no driver's format.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import boxconfig
from proto import names
from proto.commands import Command
from proto.downlink import ConfigPush, decode_command
from proto.downlink import decode_config as decode_push
from proto.errors import RejectedError
from proto.text import clip, show
from proto.topics import Down

MAX_SEEN: Final = 1000


@dataclass(frozen=True, slots=True)
class ValidConfig:
    """A configuration push, validated: the message and the configuration it carries."""

    push: ConfigPush
    config: boxconfig.BoxConfig

    @property
    def version(self) -> int:
        """The platform's version of it."""
        return self.push.version

    @property
    def toml_text(self) -> str:
        """Its TOML text, as sent."""
        return self.push.toml_text

    @property
    def allow_empty(self) -> bool:
        """Whether the operator meant a configuration without points."""
        return self.push.allow_empty


def decode(leaf: str, payload: bytes) -> ValidConfig | Command:
    """Decode (and, a configuration, validate) what arrived on ``boxes/<id>/down/<leaf>``.

    Raises:
        RejectedError: an unknown leaf, or the payload is not a valid message of that leaf.
    """
    if leaf == Down.CONFIG:
        return decode_config(payload)
    if leaf == Down.CMD:
        return decode_command(payload)
    raise RejectedError(f"unknown downlink topic leaf {show(leaf)}")


def decode_config(payload: bytes) -> ValidConfig:
    """Decode and validate a configuration push, by schema and by meaning.

    Raises:
        RejectedError: with every reason found in `reasons` (framing, fields, TOML, and
            each section's or device's configuration problem).
    """
    push = decode_push(payload)
    return ValidConfig(push, boxconfig.check_push(push))


# -- expiry and repeated ids --------------------------------------------------------------


def is_expired(cmd: Command, now: float) -> bool:
    """Whether the command's time has passed (`now` in unix seconds): it must not run."""
    return now >= cmd.expires


class SeenIds:
    """The ids of the last `limit` commands run, so that a repeated id runs once.

    Kept in order of arrival; the oldest are forgotten beyond the limit (a command repeated
    after 1,000 others would have expired long before). `to_json`/`from_json` persist it.
    """

    def __init__(self, ids: Iterable[str] = (), limit: int = MAX_SEEN) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._ids: OrderedDict[str, None] = OrderedDict()
        for i in ids:
            self.add(i)

    def __contains__(self, cmd_id: object) -> bool:
        return cmd_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, cmd_id: str) -> bool:
        """Remember an id; False if it was already there (the command must not run again)."""
        if cmd_id in self._ids:
            return False
        self._ids[cmd_id] = None
        while len(self._ids) > self.limit:
            self._ids.popitem(last=False)
        return True

    def to_json(self) -> bytes:
        """The ids, oldest first, as JSON."""
        return json.dumps({"v": 1, "ids": list(self._ids)}, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes, limit: int = MAX_SEEN) -> SeenIds:
        """Read what `to_json` wrote.

        Raises:
            RejectedError: not what `to_json` writes (the caller decides whether to start
                empty, at the risk of running a command twice).
        """
        try:
            held = json.loads(data)
        except (ValueError, RecursionError) as e:
            raise RejectedError(f"seen command ids: not JSON: {clip(str(e), 200)}") from None
        ids = held.get("ids") if isinstance(held, dict) and held.get("v") == 1 else None
        if not isinstance(ids, list) or not all(names.COMMAND_ID.fullmatch(i) for i in ids):
            raise RejectedError('seen command ids: expected {"v": 1, "ids": [id, ...]}')
        return cls(ids, limit)
