"""Report on change (issue 15): spans of points polled and unchanged, and what resolves them.

Revision ID: 0004
Revises: 0003

Adds the table ``spans`` (box_id, epoch, seq, table_id, ts_ms, first, n): a batch's spans
(`proto.wire`), indexed by (Box, time) as ``samples`` is; the column ``batches.ts_max`` (the
newest reading of a batch: after a batch lost or evicted, a span is resolved only past it). Every
row of every other table stays; the new column is empty for what was stored before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    big: sa.types.TypeEngine[int] = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table("spans",
                    sa.Column("box_id", sa.Text(), nullable=False),
                    sa.Column("epoch", big, nullable=False),
                    sa.Column("seq", big, nullable=False),
                    sa.Column("table_id", big, nullable=False),
                    sa.Column("ts_ms", big, nullable=False),
                    sa.Column("first", sa.Integer(), nullable=False),
                    sa.Column("n", sa.Integer(), nullable=False))
    op.create_index("spans_by_time", "spans", ["box_id", "ts_ms"])
    op.add_column("batches", sa.Column("ts_max", big, nullable=True))  # no copy of the table: ALTER TABLE ADD


def downgrade() -> None:
    with op.batch_alter_table("batches") as b:
        b.drop_column("ts_max")
    op.drop_index("spans_by_time", "spans")
    op.drop_table("spans")
