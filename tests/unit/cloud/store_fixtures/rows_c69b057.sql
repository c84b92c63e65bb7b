-- Rows in every table of release c69b057's schema, as its code wrote them (the values of a small fleet):
-- a database to upgrade in place (tests/unit/cloud/test_store_migrations.py).
INSERT INTO tokens VALUES ('5f1c0d', 'SN-3', 1700000000.5, 4102444800.0, NULL);
INSERT INTO tokens VALUES ('9a2b7e', 'BOX-1', 1699990000.0, 1700076400.0, 1699990100.25);
INSERT INTO boxes VALUES ('BOX-1', 'BOX-1', 1699990100.25, '651236985412365478963214569874563214569874', 1731526100.0,
                          NULL, 1, 1700000100.0, 'online', 1700000200.5, '0.1.0');
INSERT INTO boxes VALUES ('BOX-2', 'BOX-2', 1699990200.0, '42', 1731526200.0, 1700000300.0, 0, 1700000300.0,
                          'revoked', NULL, NULL);
INSERT INTO revoked_certs VALUES ('42', 'BOX-2', 1700000300.0);
INSERT INTO revoked_certs VALUES ('123456789', 'server:broker', 1700000400.0);
INSERT INTO status_history VALUES ('BOX-1', 1700000100.0, 1, 'online');
INSERT INTO status_history VALUES ('BOX-2', 1700000300.0, 0, 'revoked');
INSERT INTO point_tables VALUES ('BOX-1', 305419896, '[["m.energy", "kWh", "uint32"], ["m.power", "kW", "float32"]]');
INSERT INTO point_tables VALUES ('BOX-1', 4000000000, '[["x.on", "", "bool"]]');
INSERT INTO batches VALUES ('BOX-1', 8070450532247928832, 1, 1700000150.0, 2, X'00112233445566778899aabbccddeeff');
INSERT INTO batches VALUES ('BOX-1', 8070450532247928832, 2, 1700000151.0, 2, X'ffeeddccbbaa99887766554433221100');
INSERT INTO conflicts VALUES ('BOX-1', 8070450532247928832, 2, 1700000152.0);
INSERT INTO parked_batches VALUES ('BOX-1', 4000000000, X'a1b2c3', 1700000160.0);
INSERT INTO samples VALUES ('BOX-1', 'm.energy', 1700000000000, '1', 0);
INSERT INTO samples VALUES ('BOX-1', 'm.power', 1700000000000, '0.5', 0);
INSERT INTO samples VALUES ('BOX-1', 'm.energy', 1700000001000, '2', 0);
INSERT INTO samples VALUES ('BOX-1', 'm.power', 1700000001000, NULL, 3);
INSERT INTO health VALUES ('BOX-1', 1700000200.5, '{"v": 1, "ts": 1700000200000, "epoch": 8070450532247928832}');
INSERT INTO evicted VALUES ('BOX-1', 8070450532247928832, 3, 4, 200, 1700000170.0);
INSERT INTO devices VALUES ('BOX-1', 'm', NULL, NULL, 1700000200.0);
INSERT INTO devices VALUES ('BOX-1', 'x', 1700000180.0, 'no answer', NULL);
INSERT INTO alerts (id, box_id, kind, subject, message, opened, closed)
    VALUES (1, 'BOX-1', 'device', 'x', 'device x does not answer', 1700000240.0, NULL);
INSERT INTO alerts (id, box_id, kind, subject, message, opened, closed)
    VALUES (2, 'BOX-2', 'offline', '', 'no heartbeat for 61 s', 1700000250.0, 1700000260.0);
INSERT INTO superseded_certs VALUES ('BOX-1', '777', 1731526000.0, 1700000050.0);
INSERT INTO configs (box_id, version, toml, created, published, status, reasons, answered)
    VALUES ('BOX-1', 1, '[[modbus_tcp]]\nname = "m"\n', 1700000010.0, 1700000011.0, 'applied', '[]', 1700000012.0);
INSERT INTO configs (box_id, version, toml, created, published, status, reasons, answered)
    VALUES ('BOX-1', 2, '# nothing yet', 1700000020.0, NULL, NULL, NULL, NULL);
INSERT INTO commands VALUES ('cmd-1', 'BOX-1', 'reboot', '{}', 4102444800.0, 1700000030.0, NULL, NULL, NULL, NULL);
INSERT INTO commands VALUES ('cmd-2', 'BOX-1', 'read', '{"point": "m.power"}', 4102444800.0, 1700000031.0,
                             1700000032.0, 'ok', '{"status": "ok", "detail": "read", "result": {"value": 0.5}}',
                             1700000033.0);
INSERT INTO latest VALUES ('BOX-1', 'm.energy', 1700000001000, '2', 0, 'kWh');
INSERT INTO latest VALUES ('BOX-1', 'm.power', 1700000001000, NULL, 3, 'kW');
INSERT INTO box_tags VALUES ('BOX-1', 'lab');
INSERT INTO box_tags VALUES ('BOX-1', 'floor-2');
INSERT INTO deployments VALUES ('dep-1', 'boxd-0.2.0.tar', '0.2.0', '{"tag": "lab"}', '[1]', 0, 60, 600.0,
                                'running', NULL, 1700000040.0, 1700000041.0);
INSERT INTO deployment_boxes VALUES ('dep-1', 'BOX-1', 1, 'downloading', '', 'cmd-3', 1700000042.0, 1700000043.0);
INSERT INTO ota_events VALUES ('dep-1', 'BOX-1', 1700000043.0, '{"v": 1, "kind": "ota", "state": "downloading"}');
