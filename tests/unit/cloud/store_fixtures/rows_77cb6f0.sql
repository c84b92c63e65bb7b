-- Rows in what the code after c69b057 added (up to 77cb6f0, the last before schema versions):
-- tables deferred, pending_certs, clear_retained; columns alerts.acked, configs.allow_empty.
INSERT INTO deferred (id, box_id, leaf, payload, received) VALUES (1, 'BOX-1', 'data', X'0102', 1700000270.0);
INSERT INTO deferred (id, box_id, leaf, payload, received) VALUES (2, 'BOX-1', 'health', X'0304', 1700000271.0);
INSERT INTO pending_certs VALUES ('BOX-1', '888', 4102444800.0, 1700000280.0);
INSERT INTO clear_retained VALUES ('BOX-2', 1700000290.0);
UPDATE alerts SET acked = 1700000245.0 WHERE id = 1;
UPDATE configs SET allow_empty = 1 WHERE box_id = 'BOX-1' AND version = 2;
