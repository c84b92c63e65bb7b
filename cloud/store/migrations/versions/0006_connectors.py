"""Connectors (issue 19): webhooks and their durable outbox.

Revision ID: 0006
Revises: 0004

Adds the tables ``connectors`` (an account's connectors: kind, service account, configuration,
sealed secrets, state, place in the feed), ``feed`` (batches as stored, for the connectors),
``hook_items`` (each connector's items, signed) and ``hook_deliveries`` (items grouped into a
delivery, its attempts; dead letters). Nothing else changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    big: sa.types.TypeEngine[int] = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    seconds: sa.types.TypeEngine[float] = sa.Double().with_variant(sa.REAL(), "sqlite")
    op.create_table("connectors",
                    sa.Column("id", big, primary_key=True),
                    sa.Column("account_id", big, nullable=False),
                    sa.Column("name", sa.Text(), nullable=False),
                    sa.Column("kind", sa.Text(), nullable=False),
                    sa.Column("service_account_id", big, nullable=False),
                    sa.Column("config", sa.Text(), nullable=False),
                    sa.Column("secrets", sa.Text(), nullable=False),
                    sa.Column("state", sa.Text(), nullable=False),
                    sa.Column("feed_pos", big, nullable=False),
                    sa.Column("failing_since", seconds),
                    sa.Column("last_error", sa.Text(), nullable=False, server_default=""),
                    sa.Column("delivered", big, nullable=False, server_default=sa.text("0")),
                    sa.Column("created", seconds, nullable=False))
    op.create_index("ix_connectors_account_id", "connectors", ["account_id"])
    op.create_table("feed",
                    sa.Column("id", big, primary_key=True),
                    sa.Column("box_id", sa.Text(), nullable=False),
                    sa.Column("table_id", big, nullable=False),
                    sa.Column("base_ts_ms", big, nullable=False),
                    sa.Column("payload", sa.LargeBinary(), nullable=False))
    op.create_table("hook_items",
                    sa.Column("id", big, primary_key=True),
                    sa.Column("connector_id", big, nullable=False),
                    sa.Column("delivery_id", big),
                    sa.Column("box_id", sa.Text(), nullable=False),
                    sa.Column("body", sa.Text(), nullable=False),
                    sa.Column("created", seconds, nullable=False))
    op.create_index("hook_items_by_connector", "hook_items", ["connector_id", "delivery_id", "id"])
    op.create_table("hook_deliveries",
                    sa.Column("id", big, primary_key=True),
                    sa.Column("connector_id", big, nullable=False),
                    sa.Column("state", sa.Text(), nullable=False),
                    sa.Column("created", seconds, nullable=False),
                    sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
                    sa.Column("next_at", seconds, nullable=False),
                    sa.Column("last_error", sa.Text(), nullable=False, server_default=""),
                    sa.Column("n_items", sa.Integer(), nullable=False))
    op.create_index("hook_deliveries_by_connector", "hook_deliveries", ["connector_id", "state", "id"])


def downgrade() -> None:
    op.drop_index("hook_deliveries_by_connector", "hook_deliveries")
    op.drop_table("hook_deliveries")
    op.drop_index("hook_items_by_connector", "hook_items")
    op.drop_table("hook_items")
    op.drop_table("feed")
    op.drop_index("ix_connectors_account_id", "connectors")
    op.drop_table("connectors")
