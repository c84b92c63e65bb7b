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

A reset of the guest (a reboot, the kernel's restart after a panic, the firmware's own) is a cold
one: QEMU quits (``-no-reboot``) and the harness starts it again on the same disk and firmware
variables, as a board whose reset line cycles its power; the console runs on across it. Under
TCG, QEMU's warm reset hung now and then here, the console silent after "reboot: Restarting
system" (once in four suite runs with two vCPUs, and again with one, in CI on 2026-12-07): a
new QEMU carries nothing of the old run. What boots next is the firmware's and systemd-boot's
choice alone, from what the disk and the variables hold: the harness does not choose.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import socket
import subprocess
import threading
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
    # one vCPU: a Box's worth under emulation, and QEMU's warm reset hung here with two (the module's text)
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
    resets: int = 0  # the guest's resets since power-on, each served by a new QEMU
    _seen: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _powered: bool = False  # between `start` and `stop`: a QEMU that quits on the guest's reset starts again
    _resetting: bool = False  # the guest asked for a reset: its QEMU is ending, the next one is on its way
    _watcher: threading.Thread | None = None

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

    @property
    def events_socket(self) -> Path:
        """A second QMP monitor, the harness's own: QEMU waits at start-up until the harness listens, so
        that no reset goes unheard."""
        return self.workdir / "events.sock"

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
            "-chardev", f"file,id=console,path={self.console_file},append=on", "-serial", "chardev:console",
            "-qmp", f"unix:{self.qmp_socket},server=on,wait=off",
            "-no-reboot", "-qmp", f"unix:{self.events_socket},server=on,wait=on",
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
        if self.console_file.exists():  # each power-on's console is its own; the earlier ones kept to read
            self.console_file.rename(self.workdir / f"console.{len(list(self.workdir.glob('console.*.log'))) + 1}.log")
        self._seen.clear()
        self.started = time.monotonic()
        self.resets = 0
        with self._lock:
            self._powered, self._resetting = True, False
            self._launch()
        self._watcher = threading.Thread(target=self._serve_resets, name="vm-resets", daemon=True)
        self._watcher.start()

    def stop(self, cut: bool = False) -> None:
        """Pull the plug: QEMU ends at once, the guest does not shut down. With `cut`, the machine stops
        through QMP and QEMU is killed (nothing it holds is written: a power cut under ``writeback``);
        otherwise QEMU is asked to end (SIGTERM) and writes what it holds."""
        with self._lock:
            self._powered = False
            proc, self.proc = self.proc, None
        if proc is not None:
            if cut and proc.poll() is None:
                try:
                    qmp(self.qmp_socket, "stop")
                except OSError:
                    pass  # QEMU went away by itself
                proc.kill()
                proc.wait(30)
            else:
                stop_process(proc, 10)
        if self._watcher is not None:
            self._watcher.join(30)
            self._watcher = None

    def alive(self) -> bool:
        """Powered and running (also between the two QEMUs of a reset)."""
        proc = self.proc
        return self._powered and proc is not None and (self._resetting or proc.poll() is None)

    def _launch(self) -> None:
        """One QEMU process (the lock held)."""
        for s in (self.qmp_socket, self.events_socket):
            s.unlink(missing_ok=True)
        with (self.workdir / "qemu.log").open("ab") as log:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def _serve_resets(self) -> None:
        """Until `stop`: hear each QEMU's events; when the guest reset it, start the next one."""
        while True:
            with self._lock:
                proc = self.proc
                if not self._powered or proc is None:
                    return
            reset = self._hear_reset(proc)
            proc.wait()
            with self._lock:
                self._resetting = False
                if not self._powered or self.proc is not proc or not reset:
                    return  # stopped, or QEMU ended otherwise (the guest powered off, or it failed): `alive` says so
                self.resets += 1
                self._launch()

    def _hear_reset(self, proc: subprocess.Popen[bytes]) -> bool:
        """Listen to QEMU's events until it ends; True if the guest reset it (QEMU then quits: -no-reboot)."""
        deadline = time.monotonic() + 60
        while True:
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(str(self.events_socket))
                break
            except OSError:
                sock.close()
                if proc.poll() is not None or time.monotonic() > deadline:
                    return False
                time.sleep(0.05)  # QEMU is still making its socket (it then waits for this connection)
        reset = False
        with sock, sock.makefile("rwb") as f:
            f.write(b'{"execute": "qmp_capabilities"}\n')
            f.flush()
            for line in f:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if message.get("event") == "SHUTDOWN" and message.get("data", {}).get("reason") == "guest-reset":
                    self._resetting = reset = True
        return reset

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


def qmp(path: Path, command: str, timeout: float = 10.0, **arguments: Any) -> dict[str, Any]:
    """One QMP command on QEMU's machine-protocol socket; returns QEMU's reply (`quit` may get none)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        f = s.makefile("rwb")
        json.loads(f.readline())  # the greeting
        for cmd in ({"execute": "qmp_capabilities"}, {"execute": command, "arguments": arguments}):
            f.write(json.dumps(cmd).encode() + b"\n")
            f.flush()
            while True:
                line = f.readline()
                if not line:
                    return {}
                reply: dict[str, Any] = json.loads(line)
                if "return" in reply or "error" in reply:
                    break
        return reply
