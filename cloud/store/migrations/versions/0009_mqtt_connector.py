"""The MQTT connector (issue 19): each connector's durable queue and link state.

Revision ID: 0009
Revises: 0008

Adds ``mqtt_items`` (a connector's messages for the customer's broker, oldest first, deleted on
the broker's PUBACK or evicted at the queue's byte cap) and ``mqtt_state`` (its link state, the
queue's size and bytes, messages evicted, commands received and refused). Nothing else changes:
an MQTT connector is a row of ``connectors`` (kind "mqtt") like a webhook.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    big: sa.types.TypeEngine[int] = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    seconds: sa.types.TypeEngine[float] = sa.Double().with_variant(sa.REAL(), "sqlite")
    op.create_table("mqtt_items",
                    sa.Column("id", big, primary_key=True),
                    sa.Column("connector_id", big, nullable=False),
                    sa.Column("topic", sa.Text(), nullable=False),
                    sa.Column("payload", sa.LargeBinary(), nullable=False),
                    sa.Column("bytes", sa.Integer(), nullable=False),
                    sqlite_autoincrement=True)  # ids never given again (a link sends "after the last id it sent")
    op.create_index("mqtt_items_by_connector", "mqtt_items", ["connector_id", "id"])
    op.create_table("mqtt_state",
                    sa.Column("connector_id", big, primary_key=True),
                    sa.Column("link", sa.Text(), nullable=False, server_default="connecting"),
                    sa.Column("since", seconds, nullable=False),
                    *(sa.Column(n, big, nullable=False, server_default=sa.text("0"))
                      for n in ("queued", "bytes", "evicted", "commands", "refused")))


def downgrade() -> None:
    op.drop_table("mqtt_state")
    op.drop_index("mqtt_items_by_connector", "mqtt_items")
    op.drop_table("mqtt_items")
