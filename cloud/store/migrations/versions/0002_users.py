"""The platform's users (issue 18): accounts, users, recovery codes, API keys, roles, role bindings,
the Boxes' accounts, and the hash-chained audit trail.

Revision ID: 0002
Revises: 0001

New tables only: every row of the baseline stays as it is. The tables are written out here,
frozen: a later change is a new migration.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def tables() -> sa.MetaData:
    """The tables this revision adds."""
    md = sa.MetaData(naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s", "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s", "fk": "fk_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s"})
    text = sa.Text()
    secs: sa.types.TypeEngine[float] = sa.Double().with_variant(sa.REAL(), "sqlite")
    big: sa.types.TypeEngine[int] = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

    def col(name: str, kind: sa.types.TypeEngine[Any], null: bool = False, key: bool = False, *,
            default: str | None = None, index: bool = False, unique: bool = False) -> sa.Column[Any]:
        return sa.Column(name, kind, nullable=null, primary_key=key, index=index or None, unique=unique or None,
                         server_default=sa.text(default) if default is not None else None)

    sa.Table("accounts", md, col("id", big, key=True), col("name", text, unique=True),
             col("require_2fa", sa.Integer(), default="0"), col("created", secs))
    sa.Table("users", md, col("id", big, key=True), col("account_id", big, index=True),
             col("name", text, unique=True), col("kind", text), col("pw_hash", text, True), col("totp", text, True),
             col("totp_pending", text, True), col("totp_step", big, default="0"), col("created", secs))
    sa.Table("recovery_codes", md, col("user_id", big, key=True), col("code_hash", text, key=True))
    sa.Table("api_keys", md, col("id", text, key=True), col("user_id", big, index=True), col("name", text),
             col("secret_hash", text), col("scopes", text), col("created", secs), col("expires", secs),
             col("revoked", secs, True))
    sa.Table("roles", md, col("account_id", big, key=True), col("name", text, key=True), col("permissions", text))
    sa.Table("role_bindings", md, col("id", big, key=True), col("account_id", big), col("user_id", big, index=True),
             col("role", text), col("scope_kind", text), col("scope", text), col("created", secs))
    sa.Table("box_accounts", md, col("box_id", text, key=True), col("account_id", big, index=True))
    sa.Table("audit", md, sa.Column("seq", big, primary_key=True, autoincrement=False), col("ts", secs),
             col("account_id", big, True), col("actor", text), col("action", text), col("target", text),
             col("outcome", text), col("detail", text), col("prev", text), col("hash", text),
             sa.Index("audit_by_account", "account_id", "seq"))
    return md


def upgrade() -> None:
    bind = op.get_bind()
    have = set(sa.inspect(bind).get_table_names())
    for table in tables().sorted_tables:
        if table.name not in have:
            table.create(bind)


def downgrade() -> None:
    for name in ("audit", "box_accounts", "role_bindings", "roles", "api_keys", "recovery_codes", "users",
                 "accounts"):
        op.drop_table(name)
