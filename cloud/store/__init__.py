"""The reference cloud's storage: Boxes, tokens and certificates, status, point tables, samples,
configurations and commands, deployments, alerts.

SQLAlchemy Core (no ORM) over SQLite by default (`Store(path)`), or a database URL
(`Store("postgresql+psycopg://...")`, later): named columns, composable queries, one schema for
both. The package, by concern, each module with its tables and its part of `Store`:

- `_fleet` (Boxes, status, tags), `_credentials` (enrollment tokens, certificates);
- `_telemetry` (point tables, batches stored exactly once, samples, latest values, messages put
  aside), `_ingest` (batches stored, several a transaction), with `_points` (pure: a batch's rows);
- `_outbox` (configurations, commands, retained configurations to clear);
- `_deployments` (deployments and `ota` events), `_alerts` (alerts, health, devices);
- `_connectors` (webhooks: the feed of stored batches, each connector's outbox, dead letters);
- `_mqtt_queue` (the MQTT connectors' durable queues with their byte cap, and link state);
- `_users` (accounts, users, API keys, roles and bindings, Boxes' accounts), `_audit` (the
  hash-chained audit trail), `_history` (points' history and aggregates for the users' API);
- `_base` (metadata, connections, transactions), `_dialect` (the only place SQLite and
  PostgreSQL differ), `_migrate` with `migrations/` (Alembic: schema versions).

This package does no network I/O. See docs/architecture.md, "Storage in the cloud".
"""

from cloud.store._alerts import Alert
from cloud.store._audit import AuditRow
from cloud.store._base import metadata
from cloud.store._connectors import ConnectorRow, DeliveryRow, FeedRow
from cloud.store._credentials import CertChange, CertState, TokenRow
from cloud.store._deployments import DeploymentBoxRow, DeploymentRow
from cloud.store._fleet import BoxRow
from cloud.store._ingest import Incoming, Outcome
from cloud.store._mqtt_queue import MqttState, QueuedMessage
from cloud.store._outbox import CommandRow, ConfigRow
from cloud.store._points import PointTable
from cloud.store._store import Store
from cloud.store._telemetry import MAX_CACHED_POINTS, MAX_TABLES_PER_BOX
from cloud.store._users import AccountRow, BindingRow, BoxScope, KeyRow, UserRow
from cloud.store.errors import SchemaError, StoreError

__all__ = [
    "MAX_CACHED_POINTS",
    "MAX_TABLES_PER_BOX",
    "AccountRow",
    "Alert",
    "AuditRow",
    "BindingRow",
    "BoxRow",
    "BoxScope",
    "CertChange",
    "CertState",
    "CommandRow",
    "ConfigRow",
    "ConnectorRow",
    "DeliveryRow",
    "DeploymentBoxRow",
    "DeploymentRow",
    "FeedRow",
    "Incoming",
    "KeyRow",
    "MqttState",
    "Outcome",
    "PointTable",
    "QueuedMessage",
    "SchemaError",
    "Store",
    "StoreError",
    "TokenRow",
    "UserRow",
    "metadata",
]
