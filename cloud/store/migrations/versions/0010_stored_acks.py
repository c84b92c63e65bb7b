"""The end-to-end acknowledgement (issue 20): the Boxes that keep batches until stored.

Revision ID: 0010
Revises: 0009

Adds the table ``stored_acks`` (`cloud.store._acks`): per Box that asked for stored notices, its
interval, its queue epoch and the oldest batch it holds (from its heartbeat), the last seq it was
told, whether a notice is due, and when the last one went. Nothing else changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    big: sa.types.TypeEngine[int] = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    seconds: sa.types.TypeEngine[float] = sa.Double().with_variant(sa.REAL(), "sqlite")
    op.create_table("stored_acks",
                    sa.Column("box_id", sa.Text(), primary_key=True),
                    sa.Column("every_s", sa.Integer(), nullable=False),
                    sa.Column("epoch", big, nullable=False, server_default=sa.text("0")),
                    sa.Column("start", big, nullable=False, server_default=sa.text("0")),
                    sa.Column("upto", big, nullable=False, server_default=sa.text("0")),
                    sa.Column("due", sa.Boolean(), nullable=False, server_default=sa.false()),
                    sa.Column("again", sa.Boolean(), nullable=False, server_default=sa.false()),
                    sa.Column("sent", seconds, nullable=False, server_default=sa.text("0")))


def downgrade() -> None:
    op.drop_table("stored_acks")
