"""A private BACnet/IP test network in Linux network namespaces, and simulators inside it.

BACnet/IP needs UDP broadcast (Who-Is) and port 47808 at both ends, which loopback
cannot give. `FieldNetwork` makes two network namespaces joined by a veth pair:

* "box": the Box's side; its end of the pair is the field-bus interface ``fbt0``,
  192.0.2.1/24. The driver under test runs there: `run_in_box()` runs a coroutine on
  an event loop in a thread that has entered the namespace (a network namespace is
  per thread on Linux, and every socket the loop makes is created in it);
* "field": the simulated devices' side (``fdev0``), one address per device
  (192.0.2.10, .11, ...); `start_sim()` runs ``python -m drivers.sim.bacnet_building``
  there with ``ip netns exec``.

Both ends are outside the root namespace on purpose: TEST-NET-1 (192.0.2.0/24) is a
documentation range that reaches nothing, but a machine may use it itself (a CI
machine here has eth0 on 192.0.2.2/24 with its default gateway at 192.0.2.1), so
the test network must not add routes to the root namespace. Traffic never leaves the
two namespaces. Names carry the process id and a counter, so parallel runs do not
clash; namespaces left by a killed run (its process gone) are removed on the next
start; `close()` (or leaving the ``with`` block, also on failure) stops the
simulators and deletes both namespaces, which deletes the veth pair.

Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) and iproute2; `available()` says why not.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
PREFIX = "boxdt"
BOX_INTERFACE = "fbt0"
BOX_ADDRESS = "192.0.2.1"
FIELD_INTERFACE = "fdev0"
_CLONE_NEWNET = 0x40000000
_counter = itertools.count(1)


def available() -> str | None:
    """None if this machine can make namespaces; otherwise the reason it cannot."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 ('ip') is not installed"
    return None


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def _remove_stale() -> None:
    """Delete namespaces of earlier runs whose process is gone."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=15).stdout
    for name in re.findall(rf"^({PREFIX}-(\d+)-\d+-(?:box|field))\b", out, re.M):
        if not Path(f"/proc/{name[1]}").exists():
            subprocess.run(["ip", "netns", "del", name[0]], capture_output=True, timeout=15)


def enter(namespace: str) -> None:
    """Put the calling thread into a network namespace (every socket it makes from now on is there)."""
    fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns failed")
    finally:
        os.close(fd)


class SimProcess:
    """One ``drivers.sim.bacnet_building`` process in the field namespace."""

    def __init__(self, namespace: str, address: str, instance: int, args: list[str], log: Path) -> None:
        self.namespace, self.address, self.instance = namespace, address, instance
        self.args = list(args)
        self.log = log
        self.proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()

    def start(self, timeout: float = 15.0) -> None:
        """Start the simulator and wait for its ``ready`` line."""
        cmd = ["ip", "netns", "exec", self.namespace, sys.executable, "-m", "drivers.sim.bacnet_building",
               "--address", f"{self.address}/24", "--instance", str(self.instance), *self.args]
        self._lines = queue.Queue()
        with self.log.open("a") as err:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1
            )
        threading.Thread(target=self._pump, args=(self.proc, self._lines), daemon=True).start()
        line = self._next(timeout, "its ready line")
        if not line.startswith("ready "):
            raise RuntimeError(f"simulator {self.instance}: {line!r}; see {self.log}")

    @staticmethod
    def _pump(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    def _next(self, timeout: float, what: str) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"simulator {self.instance}: timed out waiting for {what}") from None
        if line is None:
            raise AssertionError(f"simulator {self.instance} exited; see {self.log}: {self.log.read_text()[-800:]}")
        return line

    def command(self, line: str, timeout: float = 10.0) -> str:
        """Send one command (see the simulator's docstring); its answer after "ok ".

        Raises:
            AssertionError: the simulator answered "error ..." or not at all.
        """
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self._next(timeout, f"the answer to {line!r}")
        if not answer.startswith("ok"):
            raise AssertionError(f"simulator {self.instance}: {line!r} -> {answer!r}")
        return answer[3:]

    async def acommand(self, line: str) -> str:
        """`command()` without blocking the event loop."""
        return await asyncio.to_thread(self.command, line)

    def stats(self) -> dict[str, int]:
        """Requests the simulator received, by APDU class name."""
        return dict(json.loads(self.command("stats")))

    def stop(self, timeout: float = 10.0) -> int | None:
        """Ctrl-C the simulator (SIGINT); kill it if it does not exit. Its exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
        return proc.returncode

    def restart(self, *args: str) -> None:
        """Stop the process and start a new one, with other options if given."""
        self.stop()
        if args:
            self.args = list(args)
        self.start()


class FieldNetwork:
    """The box and field namespaces, joined by a veth pair; see the module docstring."""

    def __init__(self, workdir: Path) -> None:
        """Choose names; no I/O until `open()` (or ``with``)."""
        tag = f"{PREFIX}-{os.getpid()}-{next(_counter)}"
        self.box_ns, self.field_ns = f"{tag}-box", f"{tag}-field"
        self.interface, self.box_address = BOX_INTERFACE, BOX_ADDRESS
        self.workdir = workdir
        self.sims: list[SimProcess] = []
        self._created: list[str] = []

    def open(self) -> FieldNetwork:
        """Create both namespaces and the veth pair; clean up if any step fails."""
        _remove_stale()
        try:
            for ns in (self.box_ns, self.field_ns):
                _ip("netns", "add", ns)
                self._created.append(ns)
                _ip("-n", ns, "link", "set", "lo", "up")
            _ip("link", "add", BOX_INTERFACE, "netns", self.box_ns, "type", "veth",
                "peer", "name", FIELD_INTERFACE, "netns", self.field_ns)
            _ip("-n", self.box_ns, "addr", "add", f"{BOX_ADDRESS}/24", "dev", BOX_INTERFACE)
            _ip("-n", self.box_ns, "link", "set", BOX_INTERFACE, "up")
            _ip("-n", self.field_ns, "link", "set", FIELD_INTERFACE, "up")
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop every simulator and delete the namespaces (idempotent)."""
        for sim in self.sims:
            sim.stop()
        self.sims.clear()
        while self._created:
            subprocess.run(["ip", "netns", "del", self._created.pop()], capture_output=True, timeout=15)

    def __enter__(self) -> FieldNetwork:
        return self.open()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def add_address(self, address: str) -> None:
        """Give the field side one more address (a device's) in 192.0.2.0/24."""
        _ip("-n", self.field_ns, "addr", "add", f"{address}/24", "dev", FIELD_INTERFACE)

    def start_sim(self, address: str, instance: int, *args: str) -> SimProcess:
        """Add `address` to the field side and start a simulated device there."""
        self.add_address(address)
        sim = SimProcess(self.field_ns, address, instance, list(args), self.workdir / f"sim-{instance}.log")
        self.sims.append(sim)
        sim.start()
        return sim

    def run_in_box(self, factory: Callable[[], Coroutine[Any, Any, T]], timeout: float = 60.0) -> T:
        """Run ``factory()`` to completion on a fresh event loop inside the box namespace."""
        result: list[T] = []
        error: list[BaseException] = []

        def thread() -> None:
            try:
                enter(self.box_ns)
                result.append(asyncio.run(factory()))
            except BaseException as e:  # handed to the caller's thread
                error.append(e)

        worker = threading.Thread(target=thread, name=f"netns {self.box_ns}", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            raise AssertionError(f"the box-side coroutine did not finish within {timeout:.0f} s")
        if error:
            raise error[0]
        return result[0]

