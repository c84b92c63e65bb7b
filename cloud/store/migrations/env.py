"""Alembic's environment for the cloud store: the migrations run on the connection the store hands
over (``config.attributes["connection"]``), inside the store's write transaction, which commits
them all at once. There is no URL of its own and no offline (SQL script) mode."""

from __future__ import annotations

from alembic import context

from cloud.store import metadata
from cloud.store._partitions import is_partition

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("the cloud store's migrations run through cloud.store (Store.migrate), "
                       "or python -m cloud.store.migrations")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True, compare_type=True,
                  transactional_ddl=True,  # a day's partition of the time series is not in the metadata
                  include_name=lambda name, kind, _: not (kind == "table" and is_partition(str(name))))
with context.begin_transaction():
    context.run_migrations()
