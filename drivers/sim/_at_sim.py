"""The simulated 4G modem's behaviour: AT command lines in, answer lines out, with faults (pure).

A Quectel EC25-like modem (or, with ``vendor="generic"``, one that knows 3GPP TS 27.007 only):
identity, SIM and PIN (attempts counted, PUK after three wrong ones), registration (home, roaming,
denied, searching), the PDP context and its activation (the APN checked against the network's),
signal (+QCSQ, +CESQ, +CSQ), +QNWINFO, byte counters (+QGDCNT), +COPS deregistration and
automatic selection, AT+CFUN=1,1. What happens to the data path is told to a `Plant` (the shell's
network interface): up with an address, down, stalled.

Faults (each also a line of the simulator's control socket, `drivers.sim.at_modem`):

- ``stall``: the bearer says it is up and carries nothing (a reconnection mends it);
- ``detach``: the registration is lost until the modem registers again (AT+COPS=2 then 0);
- ``wedge``: the modem answers but no bearer comes up until it is reset (AT+CFUN=1,1) or power-cycled;
- ``stuck``: it answers nothing until it is power-cycled; ``silence``: nothing for a while;
- the SIM missing, a PIN required, the network denying or roaming, APNs refused, signal changes
  (the shell adds garbage, URC storms and the port going away under a new name).

Counters (`counts`) say what the Box did: resets, power-cycles, PIN attempts, registrations, bearer
activations. Does not: own a pty or a clock (the shell passes `now`).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

_CMD_RE = re.compile(r"AT([+$%^#&]?[A-Z0-9]*)(\?|=\?|=(.*))?", re.IGNORECASE)


class Plant(Protocol):
    """The data path the simulated modem drives."""

    def up(self, address: str) -> None:
        """The bearer is up with `address`: the interface gets it, a route, a carrier."""

    def down(self) -> None:
        """The bearer is down: no carrier."""

    def stall(self, stalled: bool) -> None:
        """The bearer stays up but nothing passes (or passes again)."""


class NoPlant:
    """A modem without a data path (the demo on loopback, unit tests)."""

    def up(self, address: str) -> None:
        """Nothing to do."""

    def down(self) -> None:
        """Nothing to do."""

    def stall(self, stalled: bool) -> None:
        """Nothing to do."""


@dataclass
class ModemModel:
    """The simulated modem's settings and state."""

    vendor: str = "quectel"
    imei: str = "867698041234567"
    iccid: str = "89490200001234567890"
    pin: str = "1234"
    pin_enabled: bool = False
    pin_attempts: int = 3
    puk_attempts: int = 10
    sim_present: bool = True
    network: str = "home"  # home, roaming, denied, searching
    operator: str = "Sim Telecom"
    plmn: str = "00101"
    band: str = "LTE BAND 3"
    cell: str = "01A2B3C4"
    tac: str = "1A2B"
    apns: tuple[str, ...] = ("internet.test",)
    address: str = "100.64.0.2"
    rsrp: int = -85
    rsrq: int = -9
    sinr: int = 15
    rssi: int = -60
    # state
    echo: bool = True
    unlocked: bool = False
    cops_auto: bool = True
    apn: str = ""
    bearer: bool = False
    stalled: bool = False
    detached: bool = False
    wedged: bool = False
    stuck: bool = False
    silent_until: float = 0.0
    rx: int = 0  # what +QGDCNT says (the shell adds the interface's counts)
    tx: int = 0
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def sim_ready(self) -> bool:
        """Present and unlocked (or without a PIN)."""
        return self.sim_present and (self.unlocked or not self.pin_enabled) and self.pin_attempts > 0

    @property
    def registered(self) -> bool:
        """Whether the modem is registered (home or roaming)."""
        return (self.sim_ready and self.network in ("home", "roaming") and self.cops_auto and not self.detached
                and not self.wedged)

    def reg_stat(self) -> int:
        """+CEREG <stat>."""
        if not self.sim_ready or not self.cops_auto:
            return 0
        if self.network == "denied":
            return 3
        if self.detached or self.wedged or self.network == "searching":
            return 2
        return 5 if self.network == "roaming" else 1


class AtResponder:
    """Answers one command line at a time."""

    def __init__(self, model: ModemModel, plant: Plant | None = None) -> None:
        self.m = model
        self.plant: Plant = plant or NoPlant()

    def answers(self, now: float) -> bool:
        """Whether the modem answers at all now."""
        return not self.m.stuck and now >= self.m.silent_until

    def handle(self, line: str, now: float) -> list[str] | None:
        """The answer lines to one command line (None: silence; the last line is the result code)."""
        if not self.answers(now):
            return None
        text = line.strip()
        echo = [text] if self.m.echo else []
        if not text:
            return None
        m = _CMD_RE.fullmatch(text)
        if not m:
            return [*echo, "ERROR"]
        name, arg = m.group(1).upper(), m.group(3)
        query = m.group(2) == "?"
        try:
            out = self._dispatch(name, query, arg)
        except _Cme as e:
            return [*echo, f"+CME ERROR: {e.code}"]
        return [*echo, *out, "OK"] if out is not None else [*echo, "ERROR"]

    def _dispatch(self, name: str, query: bool, arg: str | None) -> list[str] | None:  # noqa: PLR0912
        m, quectel = self.m, self.m.vendor == "quectel"
        if name == "":
            return []
        if name in ("E0", "E1"):
            m.echo = name == "E1"
            return []
        if name in ("+CMEE", "+CEREG", "+CREG") and arg is not None:
            return []
        if name == "+CGMI":
            return ["Quectel" if quectel else "Generic Modems Inc"]
        if name == "+CGMM":
            return ["EC25" if quectel else "GM-4G"]
        if name == "+CGMR":
            return ["EC25EFAR06A09M4G"]
        if name == "+CGSN":
            return [m.imei]
        if name in ("+QCCID", "+CCID") and (quectel or name == "+CCID"):
            self._need_sim()
            return [f"{name}: {m.iccid}"]
        if name == "+CPIN":
            return self._cpin(query, arg)
        if name == "+QPINC" and quectel:
            return [f'+QPINC: "SC",{m.pin_attempts},{m.puk_attempts}']
        if name == "+CPINR" and not quectel:
            return [f"+CPINR: SIM PIN,{m.pin_attempts},3", f"+CPINR: SIM PUK,{m.puk_attempts},10"]
        if name in ("+CEREG", "+CREG") and query:
            where = f',"{m.tac}","{m.cell}",7' if m.registered else ""
            return [f"{name}: 2,{m.reg_stat()}{where}"]
        if name == "+COPS":
            return self._cops(query, arg)
        if name == "+QCSQ" and quectel:
            if not m.registered:
                return ['+QCSQ: "NOSERVICE"']
            return [f'+QCSQ: "LTE",{m.rssi},{m.rsrp},{(m.sinr + 20) * 5},{m.rsrq}']
        if name == "+CSQ":
            return [f"+CSQ: {max(0, min(31, (m.rssi + 113) // 2)) if m.registered else 99},99"]
        if name == "+CESQ":
            rsrq, rsrp = (int((m.rsrq + 20) * 2), m.rsrp + 141) if m.registered else (255, 255)
            return [f"+CESQ: 99,99,255,255,{rsrq},{rsrp}"]
        if name == "+QNWINFO" and quectel:
            return [f'+QNWINFO: "FDD LTE","{m.plmn}","{m.band}",1300'] if m.registered else ['+QNWINFO: "No Service"']
        if name == "+CGDCONT" and arg is not None:
            parts = [p.strip().strip('"') for p in arg.split(",")]
            if len(parts) < 3 or parts[0] != "1":
                return None
            m.apn = parts[2]
            return []
        if name == "+CGACT":
            return self._cgact(query, arg)
        if name == "+CGPADDR":
            return [f'+CGPADDR: 1,"{m.address}"' if m.bearer else '+CGPADDR: 1,"0.0.0.0"']
        if name == "+QGDCNT" and quectel and query:
            return [f"+QGDCNT: {m.tx},{m.rx}"]
        if name == "+CFUN" and arg == "1,1":
            m.counts["resets"] += 1
            return []
        return None

    def _need_sim(self) -> None:
        if not self.m.sim_present:
            raise _Cme(10)

    def _cpin(self, query: bool, arg: str | None) -> list[str]:
        m = self.m
        self._need_sim()
        if query:
            if m.pin_attempts <= 0:
                return ["+CPIN: SIM PUK"]
            return ["+CPIN: READY" if m.sim_ready else "+CPIN: SIM PIN"]
        if arg is None:
            raise _Cme(3)
        if m.sim_ready:
            raise _Cme(3)
        if m.pin_attempts <= 0:
            raise _Cme(12)
        m.counts["pin_tries"] += 1
        if arg.strip('"') != m.pin:
            m.pin_attempts -= 1
            raise _Cme(16 if m.pin_attempts > 0 else 12)
        m.unlocked, m.pin_attempts = True, 3
        return []

    def _cops(self, query: bool, arg: str | None) -> list[str]:
        m = self.m
        if query:
            return [f'+COPS: 0,0,"{m.operator}",7'] if m.registered else ["+COPS: 0"]
        if arg == "2":
            m.cops_auto = False
            self._drop()
            return []
        if arg in ("0", "3,0", "3,2"):
            if arg == "0":
                m.cops_auto = True
                m.counts["registrations"] += 1
                m.detached = False
                if m.network == "denied":
                    raise _Cme(111)
            return []
        raise _Cme(3)

    def _cgact(self, query: bool, arg: str | None) -> list[str]:
        m = self.m
        if query:
            return [f"+CGACT: 1,{int(m.bearer)}"]
        if arg in ("0,1", "0"):
            self._drop()
            return []
        if arg not in ("1,1", "1"):
            raise _Cme(3)
        m.counts["activations"] += 1
        if m.wedged:
            raise _Cme(148)
        if not m.registered:
            raise _Cme(30)
        if m.apn not in m.apns:
            raise _Cme(133)
        m.bearer, m.stalled = True, False
        self.plant.up(m.address)
        return []

    def _drop(self) -> None:
        if self.m.bearer:
            self.m.bearer = False
            self.plant.down()
        self.m.stalled = False

    # -- what the shell and the control socket do ---------------------------------------------

    def restart(self, *, power: bool, count: bool = True) -> None:
        """The modem restarts (AT+CFUN=1,1 once it has answered, or its power cut): the bearer is
        gone, the SIM asks for its PIN again; a power-cycle also ends a hang (and is counted, unless
        it came with a reboot of the Box)."""
        m = self.m
        self._drop()
        m.echo, m.unlocked, m.cops_auto, m.apn = True, False, True, ""
        m.detached = m.wedged = False
        if power:
            m.stuck = False
            m.silent_until = 0.0
            m.counts["power_cycles"] += count

    def fault(self, name: str, now: float, value: float = 0.0) -> None:
        """Inject a fault (see the module's docstring)."""
        m = self.m
        if name == "stall":
            if m.bearer:
                m.stalled = True
                self.plant.stall(True)
        elif name == "detach":
            m.detached = True
            self._drop()
        elif name == "wedge":
            m.wedged = True
            self._drop()
        elif name == "stuck":
            m.stuck = True
            self._drop()
        elif name == "silence":
            m.silent_until = now + value
        else:
            raise ValueError(f"no such fault: {name}")

    def set_network(self, network: str) -> None:
        """home, roaming, denied or searching; a bearer drops when the network goes."""
        if network not in ("home", "roaming", "denied", "searching"):
            raise ValueError(f"no such network state: {network}")
        self.m.network = network
        if not self.m.registered:
            self._drop()

    def set_sim(self, present: bool) -> None:
        """The SIM taken out (the bearer drops) or put back."""
        self.m.sim_present = present
        if not present:
            self._drop()
            self.m.unlocked = False


class _Cme(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code
