-- The cloud store's schema as the code of commit 77cb6f0 created it (cloud/store.py, _SCHEMA),
-- copied verbatim: a database made by that code, before schema versions (tests/unit/cloud/test_store_migrations.py).
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY, serial TEXT NOT NULL, created REAL NOT NULL,
    expires REAL NOT NULL, used REAL);
CREATE TABLE IF NOT EXISTS boxes (
    box_id TEXT PRIMARY KEY, serial TEXT NOT NULL, enrolled REAL NOT NULL,
    cert_serial TEXT NOT NULL, cert_not_after REAL NOT NULL, revoked REAL,
    online INTEGER NOT NULL DEFAULT 0, status_ts REAL, status_reason TEXT,
    last_seen REAL, version TEXT);
CREATE TABLE IF NOT EXISTS revoked_certs (
    cert_serial TEXT PRIMARY KEY, box_id TEXT NOT NULL, revoked REAL NOT NULL);
CREATE TABLE IF NOT EXISTS status_history (
    box_id TEXT NOT NULL, ts REAL NOT NULL, online INTEGER NOT NULL, reason TEXT);
CREATE TABLE IF NOT EXISTS point_tables (
    box_id TEXT NOT NULL, table_id INTEGER NOT NULL, points TEXT NOT NULL,
    PRIMARY KEY (box_id, table_id));
CREATE TABLE IF NOT EXISTS batches (
    box_id TEXT NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL, received REAL NOT NULL,
    n INTEGER NOT NULL, digest BLOB, PRIMARY KEY (box_id, epoch, seq));
CREATE TABLE IF NOT EXISTS conflicts (
    box_id TEXT NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL, received REAL NOT NULL);
CREATE TABLE IF NOT EXISTS deferred (
    id INTEGER PRIMARY KEY, box_id TEXT NOT NULL, leaf TEXT NOT NULL, payload BLOB NOT NULL,
    received REAL NOT NULL);
CREATE INDEX IF NOT EXISTS deferred_by_box ON deferred (box_id, id);
CREATE TABLE IF NOT EXISTS parked_batches (
    box_id TEXT NOT NULL, table_id INTEGER NOT NULL, payload BLOB NOT NULL, received REAL NOT NULL);
CREATE TABLE IF NOT EXISTS samples (
    box_id TEXT NOT NULL, point TEXT NOT NULL, ts_ms INTEGER NOT NULL, value TEXT,
    quality INTEGER NOT NULL);
DROP INDEX IF EXISTS samples_by_point;
CREATE INDEX IF NOT EXISTS samples_by_time ON samples (box_id, ts_ms);
CREATE TABLE IF NOT EXISTS health (
    box_id TEXT PRIMARY KEY, received REAL NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS evicted (
    box_id TEXT NOT NULL, epoch INTEGER NOT NULL, seq_from INTEGER NOT NULL, seq_to INTEGER NOT NULL,
    samples INTEGER NOT NULL, received REAL NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    box_id TEXT NOT NULL, device TEXT NOT NULL, bad_since REAL, reason TEXT, last_good REAL,
    PRIMARY KEY (box_id, device));
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY, box_id TEXT NOT NULL, kind TEXT NOT NULL, subject TEXT NOT NULL,
    message TEXT NOT NULL, opened REAL NOT NULL, closed REAL, acked REAL);
CREATE INDEX IF NOT EXISTS open_alerts ON alerts (box_id, kind, subject) WHERE closed IS NULL;
CREATE TABLE IF NOT EXISTS pending_certs (
    box_id TEXT PRIMARY KEY, cert_serial TEXT NOT NULL, not_after REAL NOT NULL, issued REAL NOT NULL);
CREATE TABLE IF NOT EXISTS superseded_certs (
    box_id TEXT NOT NULL, cert_serial TEXT NOT NULL, not_after REAL NOT NULL, superseded REAL NOT NULL);
CREATE TABLE IF NOT EXISTS configs (
    box_id TEXT NOT NULL, version INTEGER NOT NULL, toml TEXT NOT NULL, created REAL NOT NULL,
    published REAL, status TEXT, reasons TEXT, answered REAL, allow_empty INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (box_id, version));
CREATE TABLE IF NOT EXISTS commands (
    id TEXT PRIMARY KEY, box_id TEXT NOT NULL, name TEXT NOT NULL, args TEXT NOT NULL,
    expires REAL NOT NULL, created REAL NOT NULL, published REAL, status TEXT, reply TEXT, answered REAL);
CREATE INDEX IF NOT EXISTS unsent_commands ON commands (created) WHERE published IS NULL;
CREATE TABLE IF NOT EXISTS latest (
    box_id TEXT NOT NULL, point TEXT NOT NULL, ts_ms INTEGER NOT NULL, value TEXT,
    quality INTEGER NOT NULL, unit TEXT NOT NULL, PRIMARY KEY (box_id, point));
CREATE TABLE IF NOT EXISTS box_tags (
    box_id TEXT NOT NULL, tag TEXT NOT NULL, PRIMARY KEY (box_id, tag));
CREATE TABLE IF NOT EXISTS deployments (
    id TEXT PRIMARY KEY, target TEXT NOT NULL, version TEXT NOT NULL, selector TEXT NOT NULL,
    waves TEXT NOT NULL, max_failures INTEGER NOT NULL, health_s INTEGER NOT NULL,
    box_timeout_s REAL NOT NULL, status TEXT NOT NULL, reason TEXT, created REAL NOT NULL,
    updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS deployment_boxes (
    deployment TEXT NOT NULL, box_id TEXT NOT NULL, wave INTEGER NOT NULL, state TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '', cmd_id TEXT, sent REAL, updated REAL NOT NULL,
    PRIMARY KEY (deployment, box_id));
CREATE INDEX IF NOT EXISTS boxes_deployments ON deployment_boxes (box_id);
CREATE TABLE IF NOT EXISTS clear_retained (box_id TEXT PRIMARY KEY, requested REAL NOT NULL);
CREATE TABLE IF NOT EXISTS ota_events (
    deployment TEXT NOT NULL, box_id TEXT NOT NULL, received REAL NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (deployment, box_id));
