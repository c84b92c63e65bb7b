"""Who acknowledged an alert and why (issue 18): kept with the alert, not only in the audit trail.

Revision ID: 0005
Revises: 0004

Adds the columns ``alerts.acked_by`` (the actor: ``user:NAME``, ``key:ID`` or ``operator``) and
``alerts.ack_note`` (the note given with it). Every row stays; alerts acknowledged before have
neither (their time, ``acked``, stays).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("alerts", sa.Column("acked_by", sa.Text(), nullable=True))  # ALTER TABLE ADD: no copy
    op.add_column("alerts", sa.Column("ack_note", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alerts") as b:
        b.drop_column("ack_note")
        b.drop_column("acked_by")
