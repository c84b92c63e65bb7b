"""The topic namespace: the one place that builds and parses topic names (pure).

Each Box has its own subtree keyed by its certificate identity (`proto.names.BOX_ID`)::

    boxes/<id>/up/<leaf>     what the Box publishes (`Up`), and the broker's `limits` notice
    boxes/<id>/down/<leaf>   what the platform sends it (`Down`)

`UP_RULES` says, for each uplink leaf, its largest payload and whether it may be retained; the
broker's guard plugin (`cloud/boxguard.c`) is compiled with a table generated from it
(`guard_header`), and the broker's ACL patterns come from `up_filter` and `down_filter`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from proto import names
from proto.errors import TopicError

__all__ = ["ANY", "DOWN", "ROOT", "UP", "UP_RULES", "Down", "LeafRule", "Topic", "TopicError", "Up",
           "down", "down_filter", "guard_header", "parse", "shared_up_filter", "up", "up_filter"]
from proto.text import show
from proto.wire import MAX_DOC, MAX_PAYLOAD, MAX_STATUS

ROOT: Final = "boxes"
UP: Final = "up"
DOWN: Final = "down"
ANY: Final = "+"  # one level, in a subscription or ACL pattern


class Up(enum.StrEnum):
    """The leaves of a Box's uplink."""

    DATA = "data"  # batches (`proto.wire`)
    META = "meta"  # the point table, retained
    STATUS = "status"  # online/offline, retained, and the Last Will
    HEALTH = "health"  # heartbeats
    EVENTS = "events"  # evictions, updates, the modem's and the uplink choice's (`proto.modem`)
    REPLIES = "replies"  # answers to commands and configurations
    LIMITS = "limits"  # published by the broker (never by a Box): the Box went over its rate


class Down(enum.StrEnum):
    """The leaves of a Box's downlink."""

    CONFIG = "config"  # a whole configuration, retained
    CMD = "cmd"  # a command
    TIME = "time"  # the platform's time
    CRL = "crl"  # the platform's revocation list
    TABLE = "table"  # "send your point table": the platform got a batch whose table it lacks
    STORED = "stored"  # "your batches up to (epoch, seq) are stored": the Box may forget them


@dataclass(frozen=True, slots=True)
class LeafRule:
    """What may be published on an uplink leaf."""

    max_bytes: int
    retain: bool = False
    from_box: bool = True  # False: only the broker publishes there


UP_RULES: Final[Mapping[Up, LeafRule]] = {
    Up.DATA: LeafRule(MAX_PAYLOAD),
    Up.META: LeafRule(MAX_PAYLOAD, retain=True),
    Up.STATUS: LeafRule(MAX_STATUS, retain=True),
    Up.HEALTH: LeafRule(MAX_DOC),
    Up.EVENTS: LeafRule(MAX_DOC),
    Up.REPLIES: LeafRule(MAX_PAYLOAD),
    Up.LIMITS: LeafRule(MAX_STATUS, from_box=False),
}
RETAINED_UP: Final = tuple(leaf for leaf, rule in UP_RULES.items() if rule.retain)


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed topic: whose, which way, which leaf (`leaf` is None when this version does not know it)."""

    box_id: str
    direction: str  # UP or DOWN
    leaf: Up | Down | None
    raw_leaf: str


def up(box_id: str, leaf: Up) -> str:
    """The topic of a Box's uplink leaf."""
    return f"{ROOT}/{box_id}/{UP}/{leaf}"


def down(box_id: str, leaf: Down) -> str:
    """The topic of a Box's downlink leaf."""
    return f"{ROOT}/{box_id}/{DOWN}/{leaf}"


def up_filter(box_id: str = ANY) -> str:
    """The filter of a Box's whole uplink (every Box's with `ANY`)."""
    return f"{ROOT}/{box_id}/{UP}/#"


def shared_up_filter(group: str) -> str:
    """The MQTT 5 shared subscription of every Box's uplink for receivers of `group` (`ANY` in an
    ACL pattern: any group)."""
    return f"$share/{group}/{up_filter()}"


def down_filter(box_id: str = ANY) -> str:
    """The filter of a Box's whole downlink (every Box's with `ANY`)."""
    return f"{ROOT}/{box_id}/{DOWN}/#"


def parse(topic: str) -> Topic:
    """Split a topic of the namespace.

    Raises:
        TopicError: not ``boxes/<Box id>/up|down/<leaf>``.
    """
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != ROOT or parts[2] not in (UP, DOWN) or not names.BOX_ID.fullmatch(parts[1]):
        raise TopicError(f"unexpected topic {show(topic)}")
    box_id, direction, raw = parts[1], parts[2], parts[3]
    leaves: type[Up] | type[Down] = Up if direction == UP else Down
    leaf = leaves(raw) if raw in leaves._value2member_map_ else None
    return Topic(box_id, direction, leaf, raw)


def guard_header() -> str:
    """The C header that `cloud/boxguard.c` is compiled with: the namespace and `UP_RULES`."""
    rows = "\n".join(f'\t{{"{leaf}", {rule.max_bytes}u, {str(rule.retain).lower()}}},'
                     for leaf, rule in UP_RULES.items() if rule.from_box)
    return (
        "/* Generated from proto.topics by cloud.broker: do not edit. */\n"
        f'#define TOPIC_ROOT "{ROOT}"\n'
        f'#define TOPIC_UP "{UP}"\n'
        f'#define LIMITS_LEAF "{Up.LIMITS}"\n'
        f"#define MAX_ID {names.MAX_BOX_ID}\n"
        "struct leaf_rule {\n\tconst char *name;\n\tuint32_t max_bytes;\n\tbool retain;\n};\n"
        f"static const struct leaf_rule RULES[] = {{\n{rows}\n}};\n"
    )
