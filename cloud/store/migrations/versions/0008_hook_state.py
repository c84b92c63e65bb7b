"""Webhooks: each outbox's size and evictions, the circuit breaker's state (issue 19).

Revision ID: 0008
Revises: 0007

Adds to ``connectors``: ``outbox_items`` and ``outbox_bytes`` (the outbox's size, kept by the
transactions that change it; filled here from ``hook_items``), ``evicted`` and ``evicting_since``
(what the outbox's cap evicted), ``breaker_failures``, ``breaker_until`` and ``breaker_rest`` (the
circuit breaker, which a restart used to close), and the index ``hook_items_by_age``
(connector, id: a connector's oldest items, which its cap evicts). Nothing else changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None

_COLUMNS = ("outbox_items", "outbox_bytes", "evicted", "evicting_since", "breaker_failures", "breaker_until",
            "breaker_rest")


def upgrade() -> None:
    big: sa.types.TypeEngine[int] = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    seconds: sa.types.TypeEngine[float] = sa.Double().with_variant(sa.REAL(), "sqlite")
    with op.batch_alter_table("connectors") as t:
        for name in ("outbox_items", "outbox_bytes", "evicted"):
            t.add_column(sa.Column(name, big, nullable=False, server_default=sa.text("0")))
        t.add_column(sa.Column("evicting_since", seconds))
        t.add_column(sa.Column("breaker_failures", sa.Integer(), nullable=False, server_default=sa.text("0")))
        t.add_column(sa.Column("breaker_until", seconds, nullable=False, server_default=sa.text("0")))
        t.add_column(sa.Column("breaker_rest", seconds, nullable=False, server_default=sa.text("0")))
    op.execute("UPDATE connectors SET "
               "outbox_items = (SELECT count(*) FROM hook_items i WHERE i.connector_id = connectors.id), "
               "outbox_bytes = (SELECT coalesce(sum(length(i.body)), 0) FROM hook_items i "
               "WHERE i.connector_id = connectors.id)")
    op.create_index("hook_items_by_age", "hook_items", ["connector_id", "id"])


def downgrade() -> None:
    op.drop_index("hook_items_by_age", "hook_items")
    with op.batch_alter_table("connectors") as t:
        for name in reversed(_COLUMNS):
            t.drop_column(name)
