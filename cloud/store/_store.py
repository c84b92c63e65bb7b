"""`Store`: the cloud's database, the sum of its concerns, and what spans all of them.

Each concern (fleet, credentials, telemetry, outbox, deployments, alerts, history, users, audit) is a part of `Store`
in its own module, with its tables; what touches every one of them, forgetting a Box, is here.
No network I/O.
"""

from __future__ import annotations

import sqlalchemy as sa

from cloud.store._acks import StoredAcks, stored_acks
from cloud.store._alerts import Alerts, alerts, devices, health, modem
from cloud.store._audit import Audit
from cloud.store._connectors import Connectors
from cloud.store._credentials import Credentials, superseded_certs
from cloud.store._deployments import Deployments
from cloud.store._fleet import Fleet, box_tags, boxes, status_history
from cloud.store._history import History
from cloud.store._ingest import Ingest
from cloud.store._mqtt_queue import MqttQueues
from cloud.store._outbox import Outbox, commands, configs
from cloud.store._telemetry import (
    Telemetry,
    batches,
    conflicts,
    evicted,
    latest,
    parked_batches,
    point_tables,
    samples,
    spans,
)
from cloud.store._users import Users, box_accounts

# what `delete_box` deletes (revoked certificates stay on the CRL; deployments keep their history)
_A_BOXS_DATA = (samples, spans, latest, batches, conflicts, parked_batches, point_tables, health, modem, evicted,
                devices, alerts, status_history, stored_acks, configs, commands, box_tags, superseded_certs,
                box_accounts, boxes)


class Store(Fleet, Credentials, Telemetry, Ingest, Outbox, Deployments, Alerts, History, Users, Audit, Connectors,
            MqttQueues, StoredAcks):
    """The cloud database: a SQLite file (a path) or a database URL. The constructor does no I/O;
    a connection opens on first use in each thread, and the schema is checked (or upgraded) then."""

    def delete_box(self, box_id: str) -> None:
        """Forget a Box and everything stored about it (its revoked certificates stay on the CRL)."""
        with self._tx() as db:
            for table in _A_BOXS_DATA:
                db.execute(sa.delete(table).where(table.c.box_id == box_id))
