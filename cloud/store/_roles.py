"""Storage isolation on PostgreSQL: one database role a service, each with the least it needs.

- ``<p>_owner`` (migrations and partition maintenance: ``boxcloud init``, and ``boxcloud run``'s
  upgrade and hourly `Store.maintain`): owns the tables, the only role that changes the schema.
- ``<p>_receiver`` (the receiver and its monitor): reads Box identities (``boxes``: which Box,
  revoked or not) and sets their status; inserts telemetry (batches, samples, spans, latest
  values, point tables, the connectors' feed), puts messages aside and takes them back; alerts, health, devices; a
  Box's answer to a configuration or command. Nothing of users, keys, tokens, certificates or
  the audit trail; reads no samples, deletes no telemetry.
- ``<p>_api`` (the users' API): reads what users may see (Boxes, telemetry, alerts,
  deployments, configurations, commands); writes its own rows: users, keys, roles, bindings, 2FA,
  an alert acknowledged, a Box assigned to an account; appends to the audit trail (never changes
  or deletes it). No tokens or certificates; writes no telemetry.
- ``<p>_admin`` (the ``boxcloud`` commands and the running cloud's control: enrollment, outbox,
  deployments, CRL): reads and writes every table's rows (the operator's tool); appends to the
  audit trail, never changes it; changes no schema.

`<p>` is the settings' ``database_role_prefix`` (``boxcloud``). None is a superuser, and none but
the owner may create, alter or drop anything. The roles are made once by the database's
administrator (`setup_sql`, README "PostgreSQL"); `grant` (run by the owner after each upgrade)
gives each its privileges on the tables as they are now, and revokes what it no longer needs.

Nothing here on SQLite: one file, one process's (its mode 0600 is the isolation).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

SERVICES = ("owner", "admin", "receiver", "api")
RUN_TIME = ("admin", "receiver", "api")  # the roles the running services connect as

_ALL = "SELECT, INSERT, UPDATE, DELETE"
_TELEMETRY = ("point_tables", "batches", "conflicts", "samples", "spans", "latest", "evicted")
_USERS = ("accounts", "users", "recovery_codes", "api_keys", "roles", "role_bindings")

# table -> privileges, per run-time role; a table not named is out of the role's reach
PRIVILEGES: dict[str, dict[str, str]] = {
    "receiver": {
        "boxes": "SELECT, UPDATE",  # identities; online, status, last seen, version
        "status_history": "INSERT",
        "point_tables": "SELECT, INSERT", "batches": "SELECT, INSERT", "conflicts": "SELECT, INSERT",
        "samples": "INSERT", "spans": "INSERT", "latest": "SELECT, INSERT, UPDATE",
        "evicted": "SELECT, INSERT",
        "parked_batches": "SELECT, INSERT, DELETE", "deferred": "SELECT, INSERT, DELETE",
        "alerts": "SELECT, INSERT, UPDATE", "health": "SELECT, INSERT, UPDATE", "devices": "SELECT, INSERT, UPDATE",
        "modem": "SELECT, INSERT, UPDATE",
        "configs": "SELECT, UPDATE", "commands": "SELECT, UPDATE",  # a Box's answer
        "connectors": "SELECT", "feed": "INSERT",  # a stored batch fed to the connectors (cloud.hooks)
        "stored_acks": "SELECT, INSERT, UPDATE, DELETE",  # the Boxes' stored notices (cloud.store._acks)
    },
    "api": {
        **dict.fromkeys(("boxes", "box_tags", "status_history", "health", "devices", "modem", "configs", "commands",
                         "deployments", "deployment_boxes", "ota_events", *_TELEMETRY), "SELECT"),
        "alerts": "SELECT, UPDATE",  # acknowledged
        "box_accounts": "SELECT, INSERT, UPDATE, DELETE",  # a Box assigned to an account
        **dict.fromkeys(_USERS, _ALL),
        "audit": "SELECT, INSERT",  # appended, never changed
        # connectors (cloud.api._connectors): made, confirmed, rotated, deleted with their outbox; dead
        # letters listed and replayed; the feed's newest row read (a new connector starts there)
        "connectors": _ALL, "feed": "SELECT",
        "hook_items": "SELECT, DELETE", "hook_deliveries": "SELECT, UPDATE, DELETE",
        # MQTT connectors (cloud.api._mqtt_connectors): their link and queue shown, deleted with them
        "mqtt_items": "SELECT, DELETE", "mqtt_state": "SELECT, DELETE",
    },
    "admin": {},  # every table but the audit trail's: filled in by `privileges`
}


def role(prefix: str, service: str) -> str:
    """The database role of `service`."""
    return f"{prefix}_{service}"


def privileges(service: str, tables: list[str]) -> dict[str, str]:
    """Table -> privileges of a run-time `service` over `tables` (the store's)."""
    if service == "admin":
        return {t: ("SELECT, INSERT" if t == "audit" else _ALL) for t in tables}
    return {t: p for t, p in PRIVILEGES[service].items() if t in tables}


def setup_sql(prefix: str, database: str) -> list[str]:
    """What the database's administrator runs once (as ``postgres``): the roles, none a superuser,
    and the database owned by the owner role, reachable by the service roles only."""
    owner = role(prefix, "owner")
    others = ", ".join(role(prefix, s) for s in RUN_TIME)
    return [*(f"CREATE ROLE {role(prefix, s)} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE" for s in SERVICES),
            f"CREATE DATABASE {database} OWNER {owner}",
            f"REVOKE ALL ON DATABASE {database} FROM PUBLIC",
            f"GRANT CONNECT ON DATABASE {database} TO {others}"]


def grant(conn: Connection, prefix: str) -> list[str]:
    """Give each run-time role its privileges on the store's tables and nothing more (run by the
    owner, in its transaction); returns the roles found (a role not made yet is skipped)."""
    if conn.dialect.name != "postgresql":
        return []
    from cloud.store._base import metadata

    tables = sorted(metadata.tables)
    found = []
    for service in RUN_TIME:
        name = role(prefix, service)
        if not conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": name}).scalar():
            continue
        found.append(name)
        conn.exec_driver_sql(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {name}")
        conn.exec_driver_sql(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {name}")
        conn.exec_driver_sql(f"GRANT SELECT ON alembic_version TO {name}")  # the schema's revision, checked
        for table, what in privileges(service, tables).items():
            conn.exec_driver_sql(f"GRANT {what} ON {table} TO {name}")
            if "INSERT" in what:  # a generated key's sequence
                for seq in conn.execute(sa.text(
                        "SELECT pg_get_serial_sequence(:t, a.attname) FROM pg_attribute a "
                        "WHERE a.attrelid = to_regclass(:t) AND a.attnum > 0 AND NOT a.attisdropped"),
                        {"t": table}).scalars():
                    if seq:
                        conn.exec_driver_sql(f"GRANT USAGE ON SEQUENCE {seq} TO {name}")
    return found
