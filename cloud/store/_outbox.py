"""The outbox: configurations and commands queued for Boxes, and retained configurations to clear.

`boxcloud config push` and `cmd` (any process) queue rows here; the running cloud publishes them
(`cloud.platform`) and stores each Box's answer. A command is *claimed* (marked published) in a
write transaction before it is published, so that a cancellation and a publication never both
happen. Tables `configs`, `commands`, `clear_retained`. No network I/O.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import sqlalchemy as sa

from cloud.store._base import SECONDS, AnyRow, StoreBase, metadata
from cloud.store._dialect import Upsert

configs = sa.Table(
    "configs", metadata,
    sa.Column("box_id", sa.Text, primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),  # 1, 2, ... per Box
    sa.Column("toml", sa.Text, nullable=False),
    sa.Column("created", SECONDS, nullable=False),
    sa.Column("published", SECONDS),
    sa.Column("status", sa.Text),
    sa.Column("reasons", sa.Text),  # JSON list
    sa.Column("answered", SECONDS),
    sa.Column("allow_empty", sa.Integer, nullable=False, server_default=sa.text("0")),
)
commands = sa.Table(
    "commands", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("box_id", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("args", sa.Text, nullable=False),  # JSON
    sa.Column("expires", SECONDS, nullable=False),
    sa.Column("created", SECONDS, nullable=False),
    sa.Column("published", SECONDS),
    sa.Column("status", sa.Text),
    sa.Column("reply", sa.Text),  # JSON: the Box's document
    sa.Column("answered", SECONDS),
)
sa.Index("unsent_commands", commands.c.created, sqlite_where=commands.c.published.is_(None),
         postgresql_where=commands.c.published.is_(None))
clear_retained = sa.Table(
    "clear_retained", metadata,
    sa.Column("box_id", sa.Text, primary_key=True),
    sa.Column("requested", SECONDS, nullable=False),
)
_CLEAR = Upsert(clear_retained)  # asked already: nothing


@dataclass(frozen=True)
class ConfigRow:
    """A configuration pushed to a Box, and what the Box answered."""

    box_id: str
    version: int
    toml: str
    created: float
    published: float | None
    status: str | None  # None until the Box answers: "applied", "rejected", "rolled_back"
    reasons: list[str]
    answered: float | None
    allow_empty: bool = False

    @classmethod
    def of(cls, r: AnyRow) -> ConfigRow:
        m = r._mapping
        return cls(m["box_id"], m["version"], m["toml"], m["created"], m["published"], m["status"],
                   json.loads(m["reasons"]) if m["reasons"] else [], m["answered"], bool(m["allow_empty"]))


@dataclass(frozen=True)
class CommandRow:
    """A command sent to a Box, and its reply (the Box's document: status, detail, result...)."""

    id: str
    box_id: str
    name: str
    args: dict[str, object]
    expires: float
    created: float
    published: float | None
    status: str | None  # None until the Box answers
    reply: dict[str, object]
    answered: float | None

    @classmethod
    def of(cls, r: AnyRow) -> CommandRow:
        m = r._mapping
        return cls(m["id"], m["box_id"], m["name"], json.loads(m["args"]), m["expires"], m["created"],
                   m["published"], m["status"], json.loads(m["reply"]) if m["reply"] else {}, m["answered"])

    @property
    def detail(self) -> str:
        return str(self.reply.get("detail", ""))

    @property
    def result(self) -> dict[str, object]:
        r = self.reply.get("result")
        return r if isinstance(r, dict) else {}

    @property
    def lines(self) -> list[str]:
        r = self.reply.get("lines")
        return [str(x) for x in r] if isinstance(r, list) else []


class Outbox(StoreBase):
    """Configurations and commands to Boxes (a part of `Store`)."""

    # -- configurations ---------------------------------------------------------------------------

    def add_config(self, box_id: str, toml_text: str, allow_empty: bool = False) -> int:
        """Record a new configuration for a Box; returns its version (1, 2, ...)."""
        c = configs.c
        with self._tx() as db:
            last = db.execute(sa.select(sa.func.coalesce(sa.func.max(c.version), 0)).where(c.box_id == box_id)).scalar()
            version = int(last or 0) + 1
            db.execute(configs.insert().values(box_id=box_id, version=version, toml=toml_text, created=time.time(),
                                               allow_empty=int(allow_empty)))
        return version

    def unpublished_configs(self) -> list[ConfigRow]:
        """The newest configuration of each Box, when it is not published yet."""
        newer = configs.alias("newer")
        query = sa.select(configs).where(configs.c.published.is_(None), ~sa.exists().where(
            newer.c.box_id == configs.c.box_id, newer.c.version > configs.c.version))
        with self._read() as db:
            return [ConfigRow.of(r) for r in db.execute(query)]

    def mark_config_published(self, box_id: str, version: int) -> None:
        with self._tx() as db:
            db.execute(configs.update().where(configs.c.box_id == box_id, configs.c.version == version)
                       .values(published=time.time()))

    def config_answered(self, box_id: str, version: int, status: str, reasons: list[str]) -> bool:
        """The Box's answer to configuration `version`; False when there is no such version."""
        with self._tx() as db:
            return db.execute(configs.update().where(configs.c.box_id == box_id, configs.c.version == version)
                              .values(status=status, reasons=json.dumps(reasons), answered=time.time())).rowcount > 0

    def configs(self, box_id: str, limit: int = 10) -> list[ConfigRow]:
        """A Box's configurations, newest first."""
        with self._read() as db:
            return [ConfigRow.of(r) for r in db.execute(sa.select(configs).where(configs.c.box_id == box_id)
                                                        .order_by(configs.c.version.desc()).limit(limit))]

    def config_state(self, box_id: str) -> ConfigRow | None:
        """The newest configuration pushed to a Box, with its answer if any."""
        rows = self.configs(box_id, 1)
        return rows[0] if rows else None

    def request_clear_retained(self, box_id: str) -> None:
        """Ask the running cloud to clear the retained configuration on a Box's downlink."""
        with self._tx() as db:
            db.execute(_CLEAR(db), {"box_id": box_id, "requested": time.time()})

    def retained_to_clear(self) -> list[str]:
        with self._read() as db:
            return [str(b) for b in db.execute(sa.select(clear_retained.c.box_id)).scalars()]

    def retained_cleared(self, box_id: str) -> None:
        with self._tx() as db:
            db.execute(clear_retained.delete().where(clear_retained.c.box_id == box_id))

    # -- commands ---------------------------------------------------------------------------------

    def add_command(self, cmd_id: str, box_id: str, name: str, args: dict[str, object], expires: float) -> None:
        with self._tx() as db:
            db.execute(commands.insert().values(id=cmd_id, box_id=box_id, name=name, args=json.dumps(args),
                                                expires=expires, created=time.time()))

    def unpublished_commands(self, now: float) -> list[CommandRow]:
        """Commands not sent yet, not expired and not cancelled, oldest first."""
        c = commands.c
        with self._read() as db:
            return [CommandRow.of(r) for r in db.execute(
                sa.select(commands).where(c.published.is_(None), c.status.is_(None), c.expires > now)
                .order_by(c.created))]

    def mark_command_published(self, cmd_id: str) -> None:
        with self._tx() as db:
            db.execute(commands.update().where(commands.c.id == cmd_id).values(published=time.time()))

    def claim_command(self, cmd_id: str) -> bool:
        """Mark a queued command published before publishing it; False when it was cancelled (or
        claimed) meanwhile: then it must not be published. `unclaim_command` when publishing fails."""
        c = commands.c
        with self._tx() as db:
            return db.execute(commands.update().where(c.id == cmd_id, c.published.is_(None), c.status.is_(None))
                              .values(published=time.time())).rowcount > 0

    def unclaim_command(self, cmd_id: str) -> None:
        """A claimed command could not be published: queue it again."""
        c = commands.c
        with self._tx() as db:
            db.execute(commands.update().where(c.id == cmd_id, c.status.is_(None)).values(published=None))

    def cancel_command(self, cmd_id: str) -> bool:
        """Cancel a queued command so that it is never published (status "cancelled").

        Returns:
            True when it was cancelled; False when it was already published (or is unknown).
        """
        c = commands.c
        with self._tx() as db:
            return db.execute(commands.update().where(c.id == cmd_id, c.published.is_(None), c.status.is_(None))
                              .values(status="cancelled", answered=time.time())).rowcount > 0

    def command_answered(self, box_id: str, cmd_id: str, reply: dict[str, object]) -> bool:
        """Store the Box's reply to one of its commands; False when the id is not this Box's.

        The first answer stays: a Box re-sending a reply (after a reconnection) changes nothing."""
        c = commands.c
        with self._tx() as db:
            return db.execute(commands.update().where(c.id == cmd_id, c.box_id == box_id, c.answered.is_(None))
                              .values(status=str(reply.get("status")), reply=json.dumps(reply),
                                      answered=time.time())).rowcount > 0

    def command(self, cmd_id: str) -> CommandRow | None:
        with self._read() as db:
            r = db.execute(sa.select(commands).where(commands.c.id == cmd_id)).first()
        return CommandRow.of(r) if r else None

    def commands(self, box_id: str, limit: int = 20) -> list[CommandRow]:
        """A Box's commands, newest first."""
        c = commands.c
        with self._read() as db:
            return [CommandRow.of(r) for r in db.execute(sa.select(commands).where(c.box_id == box_id)
                                                         .order_by(c.created.desc()).limit(limit))]
