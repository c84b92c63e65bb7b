"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}

What it changes, and what it does to the rows already there (say it: an upgrade runs in place
on customers' data). Portable: SQLAlchemy and Alembic operations only (batch mode for what
SQLite cannot ALTER), nothing of one database outside `cloud/store/_dialect.py`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}
revision = ${repr(up_revision)}
down_revision: str | None = ${repr(down_revision)}
branch_labels: str | None = ${repr(branch_labels)}
depends_on: str | None = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    raise NotImplementedError("the cloud store does not downgrade: restore a backup")
