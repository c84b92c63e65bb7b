"""The 4G modem: each Box's latest modem report (issue 16).

Revision ID: 0003
Revises: 0002

Adds the table ``modem`` (box_id, received, doc): the modem's part of a Box's heartbeat, kept
apart from ``health`` because a Box sends it only when something changed (the cloud compares a
new report with the last one: a SIM change is an alert). Every row of every other table stays.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    secs: sa.types.TypeEngine[float] = sa.Double().with_variant(sa.REAL(), "sqlite")
    op.create_table("modem",
                    sa.Column("box_id", sa.Text(), nullable=False),
                    sa.Column("received", secs, nullable=False),
                    sa.Column("doc", sa.Text(), nullable=False),
                    sa.PrimaryKeyConstraint("box_id", name="pk_modem"))


def downgrade() -> None:
    op.drop_table("modem")
