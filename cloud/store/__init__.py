"""The reference cloud's storage: Boxes, tokens and certificates, status, point tables, samples,
configurations and commands, deployments, alerts.

SQLAlchemy Core (no ORM) over SQLite by default (`Store(path)`), or a database URL
(`Store("postgresql+psycopg://...")`, later): named columns, composable queries, one schema for
both. The package, by concern, each module with its tables and its part of `Store`:

- `_fleet` (Boxes, status, tags), `_credentials` (enrollment tokens, certificates);
- `_telemetry` (point tables, batches stored exactly once, samples, latest values, messages put
  aside), with `_points` (pure: a batch's rows);
- `_outbox` (configurations, commands, retained configurations to clear);
- `_deployments` (deployments and `ota` events), `_alerts` (alerts, health, devices);
- `_base` (metadata, connections, transactions), `_dialect` (the only place SQLite and
  PostgreSQL differ), `_migrate` with `migrations/` (Alembic: schema versions).

This package does no network I/O. See docs/architecture.md, "Storage in the cloud".
"""

from cloud.store._alerts import Alert
from cloud.store._base import metadata
from cloud.store._credentials import CertChange, CertState, TokenRow
from cloud.store._deployments import DeploymentBoxRow, DeploymentRow
from cloud.store._fleet import BoxRow
from cloud.store._outbox import CommandRow, ConfigRow
from cloud.store._points import PointTable
from cloud.store._store import Store
from cloud.store._telemetry import MAX_CACHED_POINTS, MAX_TABLES_PER_BOX
from cloud.store.errors import SchemaError, StoreError

__all__ = [
    "MAX_CACHED_POINTS", "MAX_TABLES_PER_BOX", "Alert", "BoxRow", "CertChange", "CertState", "CommandRow",
    "ConfigRow", "DeploymentBoxRow", "DeploymentRow", "PointTable", "SchemaError", "Store", "StoreError",
    "TokenRow", "metadata",
]
