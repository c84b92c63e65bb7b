"""The choice of uplink: a preferred wired or Wi-Fi interface, 4G when it fails (pure), and the one
command that moves the routes.

`WanChooser.step` is called at every check with whether the preferred interface is up (carrier and
an address) and whether the uplink works over it; it returns a `Switch` when the Box should move:
to 4G when the preferred uplink has been down, or the platform silent over it, for `failover_s`;
back when it has been up again for `failback_s`. A link that keeps failing is given longer each
time before the Box goes back to it (the hold-down doubles per failure within an hour, to 16
times). Without a preferred interface the modem is the uplink and nothing moves.

Moving is a route metric: the preferred interface's default route gets `DEMOTED_METRIC` (above the
modem's, which networkd gives `CELLULAR_METRIC`), and `PREFERRED_METRIC` back. The daemon has no
right to change routes: `route_command` runs a command (by default it starts the root unit
``boxd-route@<interface>:<metric>.service``, which polkit lets boxd start and nothing else).
"""

from __future__ import annotations

import asyncio
import shlex
from dataclasses import dataclass

from boxconfig.modem import WanSettings
from drivers.modem._netif import IFNAME_RE

PREFERRED_METRIC, CELLULAR_METRIC, DEMOTED_METRIC = 100, 700, 2000
DEFAULT_ROUTE_COMMAND = "systemctl start boxd-route@{interface}:{metric}.service"
FLAP_WINDOW_S = 3600.0


@dataclass(frozen=True, slots=True)
class Switch:
    """A move of the uplink."""

    to: str  # "preferred" or "cellular"
    why: str


class WanChooser:
    """Which uplink the Box uses. No I/O."""

    def __init__(self, settings: WanSettings) -> None:
        self.settings = settings
        self.active = "preferred" if settings.prefer else "cellular"
        self._bad_since: float | None = None
        self._up_since: float | None = None
        self._failures: list[float] = []

    def step(self, now: float, preferred_up: bool, link_ok: bool, silent_s: float) -> Switch | None:
        """Where the uplink should be now (None: where it is)."""
        s = self.settings
        if not s.prefer:
            return None
        if self.active == "preferred":
            bad = not preferred_up or (not link_ok and silent_s >= s.failover_s)
            if not bad:
                self._bad_since = None
                return None
            self._bad_since = self._bad_since if self._bad_since is not None else now
            if not preferred_up and now - self._bad_since < s.failover_s:
                return None
            self.active, self._up_since = "cellular", None
            self._failures = [t for t in self._failures if now - t < FLAP_WINDOW_S] + [now]
            why = (f"{s.prefer} is down" if not preferred_up
                   else f"no acknowledgement from the platform over {s.prefer} for {silent_s:.0f} s")
            return Switch("cellular", why)
        if not preferred_up:
            self._up_since = None
            return None
        self._up_since = self._up_since if self._up_since is not None else now
        if now - self._up_since < self.hold_down(now):
            return None
        self.active, self._bad_since = "preferred", None
        return Switch("preferred", f"{s.prefer} has been up for {now - self._up_since:.0f} s")

    def hold_down(self, now: float) -> float:
        """How long the preferred uplink must be up before the Box goes back to it."""
        recent = sum(1 for t in self._failures if now - t < FLAP_WINDOW_S)
        return float(self.settings.failback_s * 2 ** min(max(recent - 1, 0), 4))


async def set_metric(template: str, interface: str, metric: int, timeout_s: float = 30.0) -> str:
    """Run the route command for `interface` and `metric`; "" when it worked, else why not. The
    template's words are split like a shell's, the values put in whole words (no shell runs)."""
    if not IFNAME_RE.fullmatch(interface) or not 0 <= metric <= 65535:
        return f"refused to set the metric {metric} of {interface!r}"
    argv = [w.replace("{interface}", interface).replace("{metric}", str(metric)) for w in shlex.split(template)]
    try:
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.PIPE)
    except OSError as e:
        return f"cannot run {argv[0]}: {e.strerror}"
    try:
        async with asyncio.timeout(timeout_s):
            _, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return f"{argv[0]} did not finish within {timeout_s:g} s"
    if proc.returncode:
        return f"{argv[0]} failed (exit {proc.returncode}): {err.decode(errors='replace').strip()[:200]}"
    return ""
