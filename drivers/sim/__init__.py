"""Simulators of field devices, shared by the tests, the demo and the HIL target.

- `drivers.sim.modbus_building.BuildingSimulator`: a Modbus TCP building controller
  (units 1 ahu1, 2 meter1, 3 room1) on a real socket, with fault injection; also its CLI.
- `drivers.sim.modbus_rtu_building.RtuBuildingSimulator`: an RS-485 line (units 7
  meter2, 8 meter3, 9 room2) on a pseudo-terminal pair, with the same faults; also its
  CLI (``python -m drivers.sim.modbus_rtu_building``).
- `building_points_toml(host, port)` / `building_rtu_points_toml(port_path)`: the
  matching Box configuration (TOML text); `building_devices(host, port)` /
  `building_rtu_line(port_path)` the same as typed values.

For loss proofs the TCP building can add a "reads" counter point to every unit and record every
read it answers with the values in it (`BuildingSimulator(counters=True, record=True)`, the log
in `drivers.sim._served`).

This package's import stays light (no pymodbus, no pty): the servers live in
`modbus_building` and `modbus_rtu_building`.
"""

from drivers.sim._building import (
    RTU_UNITS,
    TCP_UNITS,
    UNITS,
    WRITABLE,
    building_devices,
    building_points_toml,
    building_rtu_line,
    building_rtu_points_toml,
)

__all__ = [
    "RTU_UNITS",
    "TCP_UNITS",
    "UNITS",
    "WRITABLE",
    "building_devices",
    "building_points_toml",
    "building_rtu_line",
    "building_rtu_points_toml",
]
