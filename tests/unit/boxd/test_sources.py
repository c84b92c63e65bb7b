"""How the daemon spreads Modbus TCP devices (one bus each) over the poll interval."""

from __future__ import annotations

import boxconfig as config
from bench.workload import layout
from boxd.fieldbus import SLOT_POINTS, make_sources, tcp_phase_slots
from drivers.modbus import ModbusTcpDevice, ModbusTcpSource


def _devices(count: int, points: int) -> tuple[ModbusTcpDevice, ...]:
    return tuple(ModbusTcpDevice(name=d.name, host="127.0.0.1", port=d.port, poll_interval_s=1.0, points=d.points)
                 for d in layout(count, points, 20000))


def test_a_small_site_is_polled_in_one_phase_and_a_large_one_spread() -> None:
    assert tcp_phase_slots(_devices(10, 100)) == 1  # 1,000 readings at once: no burst worth spreading
    assert tcp_phase_slots(_devices(50, 200)) == 5  # 10,000 readings: five phases of 2,000
    assert tcp_phase_slots(_devices(2, 5000)) == 2  # never more phases than devices
    assert tcp_phase_slots(()) == 1


def test_each_phase_carries_at_most_its_share_of_readings() -> None:
    cfg = config.BoxConfig(modbus_tcp=_devices(50, 200))
    offsets: dict[float, int] = {}
    for src in make_sources(cfg):
        assert isinstance(src, ModbusTcpSource)
        offsets[round(src.phase, 3)] = offsets.get(round(src.phase, 3), 0) + len(src.device.points)
    assert sorted(offsets) == [0.0, 0.2, 0.4, 0.6, 0.8]
    assert max(offsets.values()) <= SLOT_POINTS
