"""The pure half of scanning: naive points from what a scan found, and their TOML export."""

from __future__ import annotations

import tomllib

from drivers.modbus import ModbusPoint, parse_modbus_rtu_line, parse_modbus_tcp_device
from drivers.modbus.scan import points_to_toml, suggest_points


def test_suggested_points_are_named_the_modicon_way() -> None:
    points = suggest_points([(3, 7), (0, 1), (9998, 0), (9999, 5)])
    assert [(p.name, p.address, p.type, p.table) for p in points] == [
        ("hr_40001", 0, "uint16", "holding"), ("hr_40004", 3, "uint16", "holding"),
        ("hr_49999", 9998, "uint16", "holding"), ("hr_410000", 9999, "uint16", "holding"),
    ]
    assert [p.name for p in suggest_points([(0, 1)], table="input")] == ["ir_30001"]
    assert [(p.name, p.type) for p in suggest_points([(4, 1)], table="coil")] == [("co_00005", "bool")]
    assert [p.name for p in suggest_points([(65535, 1)], table="discrete")] == ["di_165536"]


def test_exported_points_parse_back_under_a_tcp_device_or_an_rtu_device() -> None:
    points = [*suggest_points([(0, 1), (1, 2)]),
              ModbusPoint(name="sp", address=8, type="float32", unit="degC", scale=0.5, writable=True, max=30.0)]
    text = points_to_toml('meter "2"\n[[x]]', points)
    assert text.startswith('# points of device "meter \\"2\\"\\n[[x]]" (3)\n')
    device = tomllib.loads('[[modbus_tcp]]\nname = "m"\nhost = "h"\npoll_interval_s = 1\n' + text)
    assert parse_modbus_tcp_device(device["modbus_tcp"][0]).points == tuple(points)
    rtu = points_to_toml("m", points, header="modbus_rtu.devices.points")
    line = tomllib.loads('[[modbus_rtu]]\nname = "l"\nport = "/dev/ttyUSB0"\n'
                        '[[modbus_rtu.devices]]\nname = "m"\nunit_id = 7\npoll_interval_s = 1\n' + rtu)
    assert parse_modbus_rtu_line(line["modbus_rtu"][0]).devices[0].points == tuple(points)
