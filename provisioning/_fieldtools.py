"""Installer tools for field buses: scan, discover, read a point live, import a point list.

`scan` (Modbus TCP host or RTU line: which units answer, which registers they have),
`discover` (BACnet/IP: Who-Is, then each device's objects with names and units), both
with progress on stderr and an optional export as an editable point list (TOML);
`read` (one configured point, live, to check wiring and addressing); `import`
(append exported tables to the Box's configuration, after validating the result).
The bus libraries are reached only through `drivers`. Errors raise `ProvisionError`
in an installer's words.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tomllib
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import boxconfig
from boxconfig.errors import ConfigError
from boxd.fieldbus import make_sources
from boxkit.files import write_atomic
from drivers import PointSource, Quality, Sample
from drivers.errors import DriverError
from provisioning.errors import ProvisionError

T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except DriverError as e:
        raise ProvisionError(str(e)) from e
    except OSError as e:
        raise ProvisionError(f"{e.strerror or e}") from e


def _progress(label: str) -> Callable[[int, int], None]:
    tty = sys.stderr.isatty()

    def show(done: int, total: int) -> None:
        end = "\r" if tty and done < total else "\n"
        if tty or done == total or done % max(1, total // 10) == 0:
            print(f"{label}: {done}/{total}", end=end, file=sys.stderr, flush=True)

    return show


def parse_range(text: str, lo: int, hi: int, what: str) -> list[int]:
    """'1-10,17' -> [1..10, 17], each within lo..hi."""
    out: list[int] = []
    try:
        for part in text.split(","):
            a, _, b = part.partition("-")
            first, last = int(a), int(b or a)
            if not lo <= first <= last <= hi:
                raise ValueError
            out.extend(range(first, last + 1))
    except ValueError:
        raise ProvisionError(f"{what} {text!r}: expected numbers or ranges within {lo}..{hi}, e.g. 1-10,17") from None
    return out


def scan_modbus(target: object, units: list[int], table: str, addresses: list[int], *,
                export: Path | None, device: str, rtu: bool) -> int:
    """Probe units, then scan each unit's registers; print what answers; optionally export."""
    from drivers.modbus.scan import points_to_toml, probe_units, scan_registers, suggest_points

    found_units = _run(probe_units(target, units, on_progress=_progress("probing unit ids")))  # type: ignore[arg-type]
    if not found_units:
        print("No unit answered.")
        return 1
    print(f"Units answering: {', '.join(map(str, found_units))}")
    exports = []
    for unit in found_units:
        regs = _run(scan_registers(target, unit, table, addresses[0], addresses[-1],  # type: ignore[arg-type]
                                   on_progress=_progress(f"unit {unit} {table} registers")))
        print(f"Unit {unit}: {len(regs)} {table} address(es) answer")
        for address, value in regs[:50]:
            print(f"  {address:>5}  {value:>6}  (0x{value:04x})")
        if len(regs) > 50:
            print(f"  ... and {len(regs) - 50} more")
        if export and regs:
            name = device if len(found_units) == 1 else f"{device}-u{unit}"
            header = "modbus_rtu.devices.points" if rtu else "modbus_tcp.points"
            exports.append(_device_header(name, unit, target, rtu)
                           + points_to_toml(name, suggest_points(regs, table=table), header=header))  # type: ignore[arg-type]
    if export:
        _write_export(export, "\n".join(exports))
    return 0


def _device_header(name: str, unit: int, target: object, rtu: bool) -> str:
    if rtu:
        return (f'\n[[modbus_rtu.devices]]\nname = "{name}"\nunit_id = {unit}\npoll_interval_s = 5.0\n')
    host, port = getattr(target, "host", ""), getattr(target, "port", 502)
    return (f'\n[[modbus_tcp]]\nname = "{name}"\nhost = "{host}"\nport = {port}\nunit_id = {unit}\n'
            'poll_interval_s = 5.0\n')


def discover_bacnet(interface: str, timeout_s: float, objects: bool, export: Path | None) -> int:
    """Who-Is on the field-bus interface; list devices (and their objects); optionally export."""
    from drivers.bacnet.discover import discover_devices, objects_to_toml, read_objects

    def seen(dev: Any) -> None:
        print(f"  I-Am: device {dev.instance} at {dev.address} (vendor {dev.vendor_id}, {dev.segmentation})",
              file=sys.stderr, flush=True)

    if not Path("/sys/class/net", interface).is_dir() or "/" in interface:
        raise ProvisionError(f"field-bus interface {interface!r} does not exist on this machine ('ip link' lists them)")
    print(f"Who-Is on {interface}, listening {timeout_s:.0f} s ...", file=sys.stderr)
    devices = _run(discover_devices(interface, timeout_s=timeout_s, on_progress=seen))
    if not devices:
        print(f"No BACnet device answered on {interface}.")
        return 1
    print(f"{len(devices)} device(s):")
    for d in devices:
        print(f"  device {d.instance:<8} {d.address:<22} max APDU {d.max_apdu}, {d.segmentation}")
    exports = []
    if objects or export:
        for d in devices:
            progress = _progress(f"device {d.instance} objects")

            def each(done: int, total: int, _obj: object, show: Callable[[int, int], None] = progress) -> None:
                show(done, total)

            objs = _run(read_objects(interface, d, on_progress=each))
            print(f"Device {d.instance}: {len(objs)} object(s)")
            for o in objs:
                print(f"  {o.object:<26} {o.name:<28} {o.units:<20} {o.present_value!s:>10} {o.error}")
            exports.append(objects_to_toml(f"dev{d.instance}", d, objs))
    if export:
        _write_export(export, "\n".join(exports))
    return 0


def check_writable(path: Path) -> None:
    """Refuse an export file that could not be written, before the work that fills it.

    Raises:
        ProvisionError: its directory is missing or not writable, or it is a directory.
    """
    parent = path.parent if str(path.parent) else Path()
    if path.is_dir():
        raise ProvisionError(f"--export {path} is a directory: give a file name, e.g. {path / 'points.toml'}")
    if not parent.is_dir():
        raise ProvisionError(f"--export {path}: there is no directory {parent}")
    if not os.access(parent, os.W_OK):
        raise ProvisionError(f"--export {path}: the directory {parent} is not writable")


def _write_export(path: Path, text: str) -> None:
    head = "# exported by boxctl: edit names, types and units, then 'boxctl import-points FILE'\n"
    write_atomic(path, (head + text).encode())
    print(f"Point list written to {path}")


def read_point(config_path: Path, point: str) -> int:
    """Read one configured point now, through its bus."""
    try:
        cfg = boxconfig.load(config_path)
    except ConfigError as e:
        raise ProvisionError(str(e)) from e
    for src in make_sources(cfg):
        if any(p.name == point for p in src.points()):
            sample = _run(_first_reading(src, point))
            unit = next(p.unit for p in src.points() if p.name == point)
            if sample.quality == Quality.GOOD:
                print(f"{point} = {sample.value} {unit}".rstrip())
                return 0
            print(f"{point}: {_quality_words(sample.quality)}")
            return 1
    names = sorted(p.name for s in make_sources(cfg) for p in s.points())
    hint = f" (e.g. {', '.join(names[:3])})" if names else ""
    raise ProvisionError(f"no point {point!r} in {config_path}{hint}")


async def _first_reading(src: PointSource, point: str, timeout_s: float = 30.0) -> Sample:
    """Run the bus until it reports `point` once (its first poll reads every point)."""
    loop = asyncio.get_running_loop()
    first: asyncio.Future[Sample] = loop.create_future()

    async def emit(samples: Sequence[Sample]) -> None:
        for s in samples:
            if s.point == point and not first.done():
                first.set_result(s)

    bus = asyncio.create_task(src.run(emit))
    try:
        waiting: set[asyncio.Future[object]] = {first, bus}  # type: ignore[arg-type]
        await asyncio.wait(waiting, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if first.done():
            return first.result()
        if bus.done():
            bus.result()  # the bus failed to open: raise its error
        raise ProvisionError(f"{point}: no reading within {timeout_s:.0f} s")
    finally:
        bus.cancel()
        await asyncio.gather(bus, return_exceptions=True)


def _quality_words(q: Quality) -> str:
    return {
        Quality.NO_ANSWER: "no answer from the device: check wiring, address / unit id, baud rate and parity",
        Quality.DEVICE_EXCEPTION: "the device refused the request: wrong register address or table?",
        Quality.BAD_FRAME: "garbled answer: check termination, baud rate and parity, or interference",
        Quality.DECODE_ERROR: "the answer does not fit the point's type: check type, length and byte order",
        Quality.NOT_CONNECTED: "cannot reach the device (connection refused or no route)",
    }.get(q, q.name)


def import_points(config_path: Path, export: Path) -> int:
    """Append an exported point list to the configuration, if the result is valid."""
    if not config_path.is_file():
        raise ProvisionError(f"there is no configuration {config_path}: give the right --config (a new one must "
                             "exist first, even empty: nothing is created by mistake)")
    try:
        addition = export.read_text()
        current = config_path.read_text()
    except OSError as e:
        raise ProvisionError(f"cannot read {e.filename}: {e.strerror}") from e
    except UnicodeDecodeError:
        raise ProvisionError(f"{export} is not a text file (an exported point list is TOML)") from None
    merged = current.rstrip() + "\n\n" + addition
    try:
        boxconfig.parse(tomllib.loads(merged))
    except (tomllib.TOMLDecodeError, ConfigError) as e:
        raise ProvisionError(f"not imported, the configuration would be invalid: {e}") from e
    try:
        write_atomic(config_path, merged.encode(), config_path.stat().st_mode & 0o777)
    except OSError as e:
        raise ProvisionError(f"cannot write {config_path}: {e.strerror}") from e
    print(f"Imported {export} into {config_path}; boxd applies it at its next start.")
    return 0
