"""Baseline: the cloud store's schema as issue 14 found it.

Revision ID: 0001
Revises: (none)

On a new database: every table. On a database made before schema versions (no
``alembic_version``: release c69b057 and the code after it, which created its tables with
``CREATE TABLE IF NOT EXISTS`` and added columns when it opened the file): only what that
database lacks, i.e. the tables added since c69b057 (``deferred``, ``pending_certs``,
``clear_retained``), the columns (``alerts.acked``, ``configs.allow_empty``), missing indexes,
and the per-point index of ``samples`` an older release made is dropped. Every row stays.

The tables are written out here, frozen: a later change to the store's tables is a new
migration, never an edit of this one.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def tables() -> sa.MetaData:
    """The schema at this revision."""
    md = sa.MetaData(naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s", "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s", "fk": "fk_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s"})
    text, small, blob = sa.Text(), sa.Integer(), sa.LargeBinary()
    # SQLite's REAL and INTEGER are 8 bytes (and so the tables before schema versions declared them);
    # PostgreSQL's are 4: a time there is DOUBLE PRECISION, a number beyond 32 bits BIGINT
    secs: sa.types.TypeEngine[float] = sa.Double().with_variant(sa.REAL(), "sqlite")
    big: sa.types.TypeEngine[int] = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    row_id = big  # a generated key: on SQLite the rowid itself (an INTEGER primary key)

    def col(name: str, kind: sa.types.TypeEngine[Any], null: bool = False, key: bool = False,
            default: str | None = None) -> sa.Column[Any]:
        return sa.Column(name, kind, nullable=null, primary_key=key,
                         server_default=sa.text(default) if default is not None else None)

    # fleet: Boxes, their status, tags, enrollment tokens and certificates
    sa.Table("boxes", md, col("box_id", text, key=True), col("serial", text), col("enrolled", secs),
             col("cert_serial", text), col("cert_not_after", secs), col("revoked", secs, True),
             col("online", small, default="0"), col("status_ts", secs, True), col("status_reason", text, True),
             col("last_seen", secs, True), col("version", text, True))
    sa.Table("status_history", md, col("box_id", text), col("ts", secs), col("online", small),
             col("reason", text, True))
    sa.Table("box_tags", md, col("box_id", text, key=True), col("tag", text, key=True))
    sa.Table("tokens", md, col("token_hash", text, key=True), col("serial", text), col("created", secs),
             col("expires", secs), col("used", secs, True))
    sa.Table("revoked_certs", md, col("cert_serial", text, key=True), col("box_id", text), col("revoked", secs))
    sa.Table("pending_certs", md, col("box_id", text, key=True), col("cert_serial", text), col("not_after", secs),
             col("issued", secs))
    sa.Table("superseded_certs", md, col("box_id", text), col("cert_serial", text), col("not_after", secs),
             col("superseded", secs))
    # telemetry
    sa.Table("point_tables", md, col("box_id", text, key=True), col("table_id", big, key=True),
             col("points", text))
    sa.Table("batches", md, col("box_id", text, key=True), col("epoch", big, key=True), col("seq", big, key=True),
             col("received", secs), col("n", small), col("digest", blob, True))
    sa.Table("conflicts", md, col("box_id", text), col("epoch", big), col("seq", big), col("received", secs))
    sa.Table("parked_batches", md, col("box_id", text), col("table_id", big), col("payload", blob),
             col("received", secs))
    sa.Table("deferred", md, col("id", row_id, key=True), col("box_id", text), col("leaf", text),
             col("payload", blob), col("received", secs),
             sa.Index("deferred_by_box", "box_id", "id"))
    sa.Table("samples", md, col("box_id", text), col("point", text), col("ts_ms", big), col("value", text, True),
             col("quality", small), sa.Index("samples_by_time", "box_id", "ts_ms"))
    sa.Table("latest", md, col("box_id", text, key=True), col("point", text, key=True), col("ts_ms", big),
             col("value", text, True), col("quality", small), col("unit", text))
    sa.Table("evicted", md, col("box_id", text), col("epoch", big), col("seq_from", big), col("seq_to", big),
             col("samples", big), col("received", secs))
    # outbox: what the running cloud publishes to Boxes
    sa.Table("configs", md, col("box_id", text, key=True), col("version", small, key=True), col("toml", text),
             col("created", secs), col("published", secs, True), col("status", text, True),
             col("reasons", text, True), col("answered", secs, True), col("allow_empty", small, default="0"))
    commands = sa.Table(
        "commands", md, col("id", text, key=True), col("box_id", text), col("name", text), col("args", text),
        col("expires", secs), col("created", secs), col("published", secs, True), col("status", text, True),
        col("reply", text, True), col("answered", secs, True))
    sa.Index("unsent_commands", commands.c.created, sqlite_where=commands.c.published.is_(None),
             postgresql_where=commands.c.published.is_(None))
    sa.Table("clear_retained", md, col("box_id", text, key=True), col("requested", secs))
    # deployments
    sa.Table("deployments", md, col("id", text, key=True), col("target", text), col("version", text),
             col("selector", text), col("waves", text), col("max_failures", small), col("health_s", small),
             col("box_timeout_s", secs), col("status", text), col("reason", text, True), col("created", secs),
             col("updated", secs))
    sa.Table("deployment_boxes", md, col("deployment", text, key=True), col("box_id", text, key=True),
             col("wave", small), col("state", text), col("detail", text, default="''"), col("cmd_id", text, True),
             col("sent", secs, True), col("updated", secs), sa.Index("boxes_deployments", "box_id"))
    sa.Table("ota_events", md, col("deployment", text, key=True), col("box_id", text, key=True),
             col("received", secs), col("doc", text))
    # alerts and what they watch
    alerts = sa.Table(
        "alerts", md, col("id", row_id, key=True), col("box_id", text), col("kind", text), col("subject", text),
        col("message", text), col("opened", secs), col("closed", secs, True), col("acked", secs, True))
    sa.Index("open_alerts", alerts.c.box_id, alerts.c.kind, alerts.c.subject,
             sqlite_where=alerts.c.closed.is_(None), postgresql_where=alerts.c.closed.is_(None))
    sa.Table("health", md, col("box_id", text, key=True), col("received", secs), col("doc", text))
    sa.Table("devices", md, col("box_id", text, key=True), col("device", text, key=True),
             col("bad_since", secs, True), col("reason", text, True), col("last_good", secs, True))
    return md


def upgrade() -> None:
    bind = op.get_bind()
    seen = sa.inspect(bind)
    have = set(seen.get_table_names())
    for table in tables().sorted_tables:
        if table.name not in have:
            table.create(bind)
            continue
        # a table of a database made before schema versions: add what it lacks
        columns = {c["name"] for c in seen.get_columns(table.name)}
        for c in table.columns:
            if c.name not in columns:
                op.add_column(table.name, sa.Column(c.name, c.type, nullable=c.nullable,
                                                    server_default=c.server_default))
        indexes = {str(i["name"]) for i in seen.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexes:
                index.create(bind)
    if "samples" in have and "samples_by_point" in {i["name"] for i in seen.get_indexes("samples")}:
        op.drop_index("samples_by_point", "samples")  # superseded by samples_by_time (docs/performance.md)


def downgrade() -> None:
    raise NotImplementedError("the cloud store has no downgrade below its baseline: restore a backup")
