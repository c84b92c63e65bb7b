"""The HIL target: which parts are real and which are simulated (see tests/hil/README.md)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support.simthread import SimThread

TARGETS = Path(__file__).parent / "targets"


@dataclass(frozen=True)
class Target:
    name: str
    box_mode: str
    cloud_mode: str
    modbus_mode: str
    points_file: Path | None


def load_target() -> Target:
    path = Path(os.environ.get("BOX_HIL_TARGET", TARGETS / "sim.yaml"))
    raw = yaml.safe_load(path.read_text())
    modbus = raw.get("modbus_tcp", {})
    return Target(
        name=raw.get("name", path.stem),
        box_mode=raw.get("box", {}).get("mode", "local"),
        cloud_mode=raw.get("cloud", {}).get("mode", "local"),
        modbus_mode=modbus.get("mode", "sim"),
        points_file=Path(modbus["points_file"]) if modbus.get("points_file") else None,
    )


@pytest.fixture(scope="session")
def target() -> Target:
    t = load_target()
    if t.box_mode != "local":
        pytest.skip(f"target {t.name}: box.mode {t.box_mode!r} is not driven by this runner yet; run on the Box")
    if t.cloud_mode != "local":
        pytest.skip(f"target {t.name}: cloud.mode {t.cloud_mode!r} is not supported yet")
    return t


@pytest.fixture(scope="session")
def field_devices(target: Target) -> Iterator[str]:
    """The [[modbus_tcp]] tables of the target's devices (simulated, or the lab's)."""
    if target.modbus_mode == "sim":
        with SimThread() as sim:
            yield sim.sim.points_toml(1.0)
    elif target.points_file is not None:
        yield target.points_file.read_text()
    else:
        pytest.skip(f"target {target.name}: modbus_tcp.mode real needs points_file")
