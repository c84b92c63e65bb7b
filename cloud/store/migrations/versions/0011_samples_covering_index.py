"""A point's history read from the index alone (issue 20): ``samples_by_time`` carries the point,
and on PostgreSQL the value and quality.

Revision ID: 0011
Revises: 0010

``samples_by_time`` was (box_id, ts_ms): a point's history read every row of its Box in the
range from the table, a table page for each poll (the rows of one instant of all Boxes share
pages). It becomes (box_id, ts_ms, point), which is the order history pages are read in, and
on PostgreSQL it also INCLUDEs value and quality: the query reads only the index, a few pages a
day of a Box, and never the table (docs/performance.md, "A point's history over 100 million
rows"). It still grows at its end with each batch, as before: no write in another page per
point. On PostgreSQL the index is made on every partition (and on each made later, by
`cloud.store._partitions`): on a large database this migration takes time in proportion to the
rows (docs/production.md).
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.drop_index("samples_by_time", table_name="samples")
    op.create_index("samples_by_time", "samples", ["box_id", "ts_ms", "point"],
                    postgresql_include=["value", "quality"])


def downgrade() -> None:
    op.drop_index("samples_by_time", table_name="samples")
    op.create_index("samples_by_time", "samples", ["box_id", "ts_ms"])
