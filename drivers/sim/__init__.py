"""Simulators of field devices, shared by the tests, the demo and the HIL target.

- `drivers.sim.modbus_building.BuildingSimulator`: a Modbus TCP building controller
  (units 1 ahu1, 2 meter1, 3 room1) on a real socket; also its CLI.
- `building_points_toml(host, port)`: the matching Box configuration (TOML text), and
  `building_devices(host, port)` the same as typed values.

This package's import stays light (no pymodbus): the server lives in
`modbus_building`, which is also run as ``python -m drivers.sim.modbus_building``.
"""

from drivers.sim._building import UNITS, WRITABLE, building_devices, building_points_toml

__all__ = ["UNITS", "WRITABLE", "building_devices", "building_points_toml"]
