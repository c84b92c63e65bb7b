"""Time series partitioned by time on PostgreSQL (issue 20): ``samples`` and ``spans``.

Revision ID: 0007
Revises: 0004

On PostgreSQL, each of ``samples`` and ``spans`` becomes a table partitioned by range of
``ts_ms`` with a default partition; the rows already there move into the default partition (a
copy of the table, once), and `cloud.store._partitions.ensure` (run right after the upgrade, and
every hour by the running cloud) makes the day partitions and moves each day's rows into its
own. Same columns, same (Box, time) index (on each partition). On SQLite nothing changes (one
file: no partitions). The tables are written out here, frozen.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def _tables(md: sa.MetaData, suffix: str = "", **kw: Any) -> dict[str, sa.Table]:
    big = sa.BigInteger()
    return {
        "samples": sa.Table(f"samples{suffix}", md,
                            sa.Column("box_id", sa.Text(), nullable=False),
                            sa.Column("point", sa.Text(), nullable=False),
                            sa.Column("ts_ms", big, nullable=False),
                            sa.Column("value", sa.Text()),
                            sa.Column("quality", sa.Integer(), nullable=False),
                            sa.Index(f"samples_by_time{suffix}", "box_id", "ts_ms"), **kw),
        "spans": sa.Table(f"spans{suffix}", md,
                          sa.Column("box_id", sa.Text(), nullable=False),
                          sa.Column("epoch", big, nullable=False),
                          sa.Column("seq", big, nullable=False),
                          sa.Column("table_id", big, nullable=False),
                          sa.Column("ts_ms", big, nullable=False),
                          sa.Column("first", sa.Integer(), nullable=False),
                          sa.Column("n", sa.Integer(), nullable=False),
                          sa.Index(f"spans_by_time{suffix}", "box_id", "ts_ms"), **kw),
    }


def _relkind(table: str) -> str | None:
    kind = op.get_bind().exec_driver_sql("SELECT relkind FROM pg_class WHERE oid = to_regclass(%(t)s)",
                                         {"t": table}).scalar()
    return str(kind) if kind is not None else None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for table, new in _tables(sa.MetaData(), postgresql_partition_by="RANGE (ts_ms)").items():
        if _relkind(table) == "p":
            continue
        op.execute(f"ALTER TABLE {table} RENAME TO {table}_unpartitioned")
        op.execute(f"ALTER INDEX {table}_by_time RENAME TO {table}_by_time_unpartitioned")
        new.create(bind)
        op.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
        op.execute(f"INSERT INTO {table} SELECT * FROM {table}_unpartitioned")  # noqa: S608 - our names
        op.execute(f"DROP TABLE {table}_unpartitioned")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for table, plain in _tables(sa.MetaData(), "_plain").items():
        if _relkind(table) != "p":
            continue
        plain.create(bind)
        op.execute(f"INSERT INTO {table}_plain SELECT * FROM {table}")  # noqa: S608 - our names
        op.execute(f"DROP TABLE {table}")  # and its partitions
        op.execute(f"ALTER TABLE {table}_plain RENAME TO {table}")
        op.execute(f"ALTER INDEX {table}_by_time_plain RENAME TO {table}_by_time")
