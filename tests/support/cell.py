"""A Box whose uplink is a (simulated) 4G modem: its network namespace, the modem, the platform's address.

- The Box lives in namespace ``boxc-<pid>-<n>`` (boxd, and the building it polls on its loopback).
- The platform (Mosquitto, receiver) stays in the root namespace, reached at `platform_ip`, an
  address of an interface there that stays up: the Box reaches it over whichever default route it has.
- The modem: `drivers.sim.at_modem.AtModemSimulator` on a pty (a thread of this process), its stable
  port name ``<dir>/by-id/usb-Quectel_EC25-if02-port0``, its control socket, and its data path, a
  `NetnsBearer` (``wwan0`` in the Box's namespace, 100.64.<k>.0/30) that goes up and down with it.
- With `wired=True` also a wired uplink ``eth0`` (198.18.<k>.0/30 via a veth to the root
  namespace), its default route at metric 100 (preferred over the modem's 700), which `wired_link`
  cuts on the far side (the Box keeps its carrier-less route: traffic is lost, as when a building's
  router dies), so that only the Box's failover moves it.

Addresses are picked unused (198.18.0.0/15 and 100.64.0.0/10 are not routed on the Internet);
namespaces and links are removed on exit, also on failure. Needs root.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

from drivers.sim._at_sim import ModemModel
from drivers.sim._cell import NetnsBearer
from drivers.sim.at_modem import AtModemSimulator, control
from tests.support.simthread import SimThread

_n = itertools.count(1)
PORT_NAME = "usb-Quectel_EC25-if02-port0"


def _ip(*args: str, check: bool = True) -> str:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15)
    if check and r.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def _free_block() -> int:
    used = _ip("-4", "-o", "addr")
    start = (os.getpid() * 7) % 250 + 1
    for k in itertools.chain(range(start, 251), range(1, start)):
        if f"198.18.{k}." not in used and f"100.64.{k}." not in used:
            return k
    raise RuntimeError("no free address block in 198.18.0.0/15 and 100.64.0.0/10")


def tally(counts: dict[str, object], *names: str) -> int:
    """The sum of the named counts of a `Cell.counts()` (0 for one not counted yet)."""
    total = 0
    for name in names:
        n = counts.get(name, 0)
        assert isinstance(n, int), f"{name}: {n!r}"
        total += n
    return total


class Cell:
    """The Box's namespace, the platform's address, the modem and its bearer. A context manager."""

    def __init__(self, workdir: Path, *, wired: bool = False, model: ModemModel | None = None,
                 boot_s: float = 1.0) -> None:
        n = next(_n)
        self.ns = f"boxc-{os.getpid()}-{n}"
        self.dummy = f"bxp{os.getpid() % 100000}{n}"[:14]
        self.wired_root = f"bxw{os.getpid() % 100000}{n}"[:15]
        self.workdir, self.wired = workdir, wired
        self.block = 0
        self.platform_ip = ""
        self.model = model or ModemModel()
        self.boot_s = boot_s
        self.port = workdir / "by-id" / PORT_NAME
        self.control_path = workdir / "modem.sock"
        self.bearer: NetnsBearer | None = None
        self.sim: AtModemSimulator | None = None
        self._thread: SimThread | None = None

    def __enter__(self) -> Cell:
        self.block = k = _free_block()
        self.platform_ip = f"198.18.{k}.77"
        try:
            _ip("netns", "add", self.ns)
            _ip("-n", self.ns, "link", "set", "lo", "up")
            # the platform's address on a veth pair of the root namespace that stays up (no dummy module here)
            _ip("link", "add", self.dummy, "type", "veth", "peer", "name", self.dummy + "p")
            _ip("addr", "add", f"{self.platform_ip}/32", "dev", self.dummy)
            for link in (self.dummy, self.dummy + "p"):
                _ip("link", "set", link, "up")
            if self.wired:
                _ip("link", "add", self.wired_root, "type", "veth", "peer", "name", "eth0", "netns", self.ns)
                _ip("addr", "add", f"198.18.{k}.1/30", "dev", self.wired_root)
                _ip("link", "set", self.wired_root, "up")
                _ip("-n", self.ns, "addr", "add", f"198.18.{k}.2/30", "dev", "eth0")
                _ip("-n", self.ns, "link", "set", "eth0", "up")
                _ip("-n", self.ns, "route", "add", "default", "via", f"198.18.{k}.1", "dev", "eth0", "metric", "100")
            self.bearer = NetnsBearer(self.ns, subnet=f"100.64.{k}")
            self.bearer.create()
            self.model.address = self.bearer.address
            self.sim = AtModemSimulator(self.port, self.control_path, model=self.model, plant=self.bearer,
                                        boot_s=self.boot_s)
            self._thread = SimThread(sim=self.sim)
            self._thread.__enter__()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._thread is not None:
            self._thread.__exit__()
            self._thread = None
        if self.bearer is not None:
            self.bearer.remove()
        for link in (self.dummy, self.wired_root):
            subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=15)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=15)

    def prefix(self) -> list[str]:
        """The command prefix that runs a program inside the Box's namespace."""
        return ["ip", "netns", "exec", self.ns]

    def control(self, command: str) -> str:
        """One command to the modem simulator (see drivers.sim.at_modem)."""
        return control(self.control_path, command)

    def counts(self) -> dict[str, object]:
        """What the Box did to the modem: resets, power_cycles, pin_tries, registrations, box_reboots..."""
        import json

        return dict(json.loads(self.control("counts")))

    def env(self) -> dict[str, str]:
        """boxd's environment: power-cycles and reboots go to the simulator."""
        ctl = f"{sys.executable} -m drivers.sim.at_modem control {self.control_path}"
        return {"BOXD_MODEM_POWER_COMMAND": f"{ctl} power-cycle", "BOXD_REBOOT_COMMAND": f"{ctl} reboot-box",
                "BOXD_ROUTE_COMMAND": f"{Path(__file__).resolve().parents[2]}/image/rootfs/usr/libexec/boxd/"
                                      "route-metric {interface} {metric}"}

    def wired_link(self, up: bool) -> None:
        """Cut the wired uplink beyond the Box (or mend it)."""
        _ip("link", "set", self.wired_root, "up" if up else "down")

    def modem_toml(self, *, apn: str = "internet.test", extra: str = "", ladder: str = "",
                   timeouts: tuple[int, int, int, int] = (5, 5, 8, 8)) -> str:
        """The Box's [modem] section for this modem, with compressed ladder timings (`timeouts`: bearer,
        register, reset, power)."""
        budgets = ladder or "resets_per_hour = 10\nresets_per_day = 20\nreboots_per_day = 1"
        bearer, register, reset, power = timeouts
        return (f'[modem]\nbackend = "at"\nport = "{self.port}"\ninterface = "wwan0"\napn = "{apn}"\n'
                f"signal_s = 1\nreport_s = 10\nweak_signal_s = 10\n{extra}\n"
                "[modem.ladder]\nsilent_s = 3\ncheck_s = 1\nat_timeout_s = 1\n"
                f"bearer_timeout_s = {bearer}\nregister_timeout_s = {register}\nreset_timeout_s = {reset}\n"
                f"power_timeout_s = {power}\nbackoff_s = 1\n{budgets}\n")
