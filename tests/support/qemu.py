"""A Box image booted under QEMU: UEFI firmware (OVMF), the serial console in a file, QMP for power.

Software emulation (TCG): this machine's KVM does not work, and CI machines may have none.
The disk is the built image itself behind a copy-on-write overlay (the image stays pristine), or
a copy of it when the test rewrites its boot partition (`copy_disk`). The machine's firmware
variables (where systemd-boot keeps its boot-time figures) live in a copy of OVMF_VARS.

What a test gets from the VM: the console (kernel, systemd's status lines, and the image's own
checks, ``BOXTEST {json}`` lines, see image/scripts/selftest.py), and whatever the Box sends
to the reference cloud. Input to the VM: system credentials (SMBIOS type 11 strings, read by
systemd at boot) and TCP ports forwarded from the host's loopback to the guest (QEMU user
networking; the guest reaches the host's own addresses through it); optionally a field LAN of its
own (`field_net`: a second card, IPv6 only, to this machine's ::1) and serial lines (`serial_ports`:
terminals of this machine as the guest's ttyS2 and ttyS3). There is no shell.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.boxproc import stop_process
from tests.support.wait import wait_for

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
QEMU = "qemu-system-x86_64"
# this machine's loopback (::1) as the guest sees it on its field LAN (`Vm.field_net`): QEMU user networking's
# host address in its default IPv6 prefix (fec0::/64)
FIELD_HOST = "fec0::2"
SERIAL_IRQS = {2: 3, 3: 5}  # the guest's ttyS2 and ttyS3 (`Vm.serial_ports`): ISA index -> IRQ
_BOXTEST = re.compile(r"BOXTEST (\{.*\})\s*$")
_ANSI = re.compile(r"\x1b\[[0-9;=?]*[A-Za-z]")


def available() -> str | None:
    """None if a VM can be booted here, else why not."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} is not installed (scripts/bootstrap.sh installs qemu-system-x86)"
    if not OVMF_CODE.exists():
        return f"no UEFI firmware at {OVMF_CODE} (Debian package ovmf)"
    return None


@dataclass
class Vm:
    """One virtual Box. `start()` boots it; `stop()` pulls the plug (QEMU ends, no shutdown)."""

    image: Path
    workdir: Path
    credentials: dict[str, str] = field(default_factory=dict)
    forwards: dict[int, int] = field(default_factory=dict)  # host port on 127.0.0.1 -> guest port
    copy_disk: bool = False
    # "unsafe": the guest's flushes are ignored (fast; what QEMU holds is written when it quits).
    # "writeback": a flush from the guest reaches this machine's disk (qcow2 metadata and the
    # file's data), so QEMU may die at any moment and the disk holds what the guest had flushed:
    # a real disk's volatile cache, for power cuts (tests/hil)
    cache: str = "unsafe"
    memory_mib: int = 512
    # one vCPU: under TCG, OVMF's start-up of the other vCPUs after a warm reset (a guest reboot: the A/B
    # fallback tests reboot by themselves) hung once in four suite runs here, the console silent after
    # "reboot: Restarting system" (TCG's CPU hotplug register block misbehaves, tianocore/edk2#9298, and
    # the firmware's SIPI wake-up of the other vCPUs is where such resets hang); one vCPU has none to wake
    cpus: int = 1
    watch: tuple[str, ...] = ()  # console texts whose first appearance `seen` times at every read
    # terminals of this machine (e.g. a field-bus simulator's pty) attached as the guest's serial ports ttyS2 and
    # ttyS3 (QEMU's tty backend: the guest's line settings reach the terminal's termios). Not COM2 (ttyS1): OVMF
    # makes COM1 and COM2 its consoles, so its menus would go down the line and a device's bytes coming back
    # would be key presses to the boot menu (it stopped systemd-boot's timeout). COM3 and COM4 on IRQs of their
    # own (the ISA defaults share COM1's and COM2's)
    serial_ports: tuple[str, ...] = ()
    # a field-bus LAN of its own (a second network card), so that the WAN's link can go out while the field
    # devices stay reachable, as on a Box with an uplink port and a field port: QEMU user networking with IPv6
    # only, where the guest reaches this machine's loopback (::1) at FIELD_HOST; the WAN is then IPv4 only
    # (one IPv6 prefix, one route: the field's). IPv4 has no way to the field: the platform is the WAN's
    field_net: bool = False
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    _seen: dict[str, float] = field(default_factory=dict)

    @property
    def console_file(self) -> Path:
        return self.workdir / "console.log"

    @property
    def disk(self) -> Path:
        return self.workdir / ("disk.img" if self.copy_disk else "disk.qcow2")

    @property
    def qmp_socket(self) -> Path:
        """QEMU's machine protocol (power, reset): for the HIL suite's power driver."""
        return self.workdir / "qmp.sock"

    def prepare(self) -> None:
        """The disk (overlay or copy) and the firmware variables, before the first boot."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.copy_disk:
            subprocess.run(["cp", "--sparse=always", str(self.image), str(self.disk)], check=True, timeout=120)
        else:
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(self.image),
                            str(self.disk)], check=True, timeout=60)
        shutil.copyfile(OVMF_VARS, self.workdir / "vars.fd")

    def command(self) -> list[str]:
        fmt = "raw" if self.copy_disk else "qcow2"
        net = "user,id=wan0" + (",ipv6=off" if self.field_net else "")
        net += "".join(f",hostfwd=tcp:127.0.0.1:{h}-:{g}" for h, g in self.forwards.items())
        cmd = [
            QEMU, "-machine", "q35", "-accel", "tcg", "-cpu", "max", "-m", str(self.memory_mib),
            "-smp", str(self.cpus), "-nodefaults", "-display", "none", "-vga", "none",
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,unit=1,file={self.workdir / 'vars.fd'}",
            "-drive", f"if=virtio,format={fmt},file={self.disk},cache={self.cache}",
            "-netdev", net, "-device", "virtio-net-pci,netdev=wan0",
            "-serial", f"file:{self.console_file}",
            "-qmp", f"unix:{self.qmp_socket},server=on,wait=off",
        ]
        if self.field_net:
            cmd += ["-netdev", "user,id=field0,ipv4=off", "-device", "virtio-net-pci,netdev=field0"]
        if len(self.serial_ports) > len(SERIAL_IRQS):
            raise ValueError(f"at most {len(SERIAL_IRQS)} serial ports besides the console")
        for path, (index, irq) in zip(self.serial_ports, SERIAL_IRQS.items(), strict=False):
            cmd += ["-chardev", f"serial,id=ttyS{index},path={path}",
                    "-device", f"isa-serial,chardev=ttyS{index},index={index},irq={irq}"]
        for name, value in self.credentials.items():
            b64 = base64.b64encode(value.encode()).decode()
            cmd += ["-smbios", f"type=11,value=io.systemd.credential.binary:{name}={b64}"]
        return cmd

    def start(self) -> None:
        """Power on (the disk is prepared on the first start)."""
        if not (self.workdir / "vars.fd").exists():
            self.prepare()
        self.console_file.unlink(missing_ok=True)
        self._seen.clear()
        self.started = time.monotonic()
        with (self.workdir / "qemu.log").open("ab") as log:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def stop(self) -> None:
        """Pull the plug: QEMU ends at once (SIGTERM), the guest does not shut down."""
        if self.proc is not None:
            stop_process(self.proc, 10)
            self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def console(self) -> str:
        """What the serial console printed so far, without terminal escapes (colours)."""
        try:
            text = _ANSI.sub("", self.console_file.read_text(errors="replace"))
        except FileNotFoundError:
            return ""
        now = time.monotonic() - self.started
        for w in self.watch:
            if w not in self._seen and w in text:
                self._seen[w] = now
        return text

    def results(self) -> list[dict[str, Any]]:
        """The image's own check results printed so far (``BOXTEST`` lines), in order."""
        found = []
        for line in self.console().splitlines():
            m = _BOXTEST.search(line)
            if m:
                try:
                    found.append(json.loads(m.group(1)))
                except ValueError:
                    continue
        return found

    def result(self, check: str) -> dict[str, Any] | None:
        return next((r for r in self.results() if r.get("check") == check), None)

    def seen(self, text: str) -> float | None:
        """Seconds from power-on until `text` first appeared on the console (None if not yet).

        Measured when the console is read (for the texts in `watch`, at every read; others when
        this is called), so the figure is as fine as the caller's polling.
        """
        if text not in self._seen and text in self.console():
            self._seen[text] = time.monotonic() - self.started
        return self._seen.get(text)

    def wait_console(self, text: str, timeout: float) -> float:
        """Wait until `text` is on the console; fails early (with the console's tail) if QEMU ended."""
        def check() -> float:
            if not self.alive():
                raise AssertionError(f"QEMU ended before {text!r}:\n{self.console()[-3000:]}")
            return self.seen(text) or 0.0
        try:
            return wait_for(check, timeout, f"{text!r} on the VM's console", step=0.2)
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- console (tail) ---\n{self.console()[-3000:]}") from None
