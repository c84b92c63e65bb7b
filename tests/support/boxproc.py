"""boxd as a real process, the way systemd runs it (sockets it holds: tests.support.sockwatch)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support.wait import wait_for

_REPO = Path(__file__).resolve().parents[2]


@dataclass
class BoxProcess:
    """A running `boxd`; its stderr goes to `log`."""

    proc: subprocess.Popen[bytes]
    state: Path
    log: Path

    @classmethod
    def start(cls, state: Path, config: Path, *extra: str, prefix: list[str] | None = None,
              env: dict[str, str] | None = None, crashpoint: str | None = None) -> BoxProcess:
        """Start `boxd run`; with `crashpoint`, under `tests.support.crashpoint` (it freezes itself there)."""
        log = state / "boxd.log"
        module = "boxd.cli"
        if crashpoint is not None:
            module, env = "tests.support.crashpoint", {**(env or {}), "BOXD_TEST_CRASHPOINT": crashpoint,
                                                       "PYTHONPATH": str(_REPO)}
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [*(prefix or []), sys.executable, "-m", module, "--state-dir", str(state), "--config", str(config),
                 *extra, "run"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **env} if env else None,
            )
        return cls(proc, state, log)

    def status(self) -> dict[str, object]:
        """The daemon's runtime status file ({} until it exists)."""
        try:
            st = json.loads((self.state / "run" / "status.json").read_text())
        except (OSError, ValueError):
            return {}
        return st if st.get("pid") == self.proc.pid else {}

    def queue_samples(self, default: int | None = None) -> int:
        """The status file's `queue_samples` (`default` until it says; without one it must say)."""
        status = self.status()
        value = status["queue_samples"] if default is None else status.get("queue_samples", default)
        assert isinstance(value, int | float | str), f"queue_samples: {value!r}"
        return int(value)

    def wait_connected(self, timeout: float = 30) -> None:
        wait_for(lambda: self.status().get("connected") or self._dead(), timeout, "boxd to connect")
        assert self.proc.poll() is None, self.log.read_text()

    def _dead(self) -> bool:
        return self.proc.poll() is not None

    def stop(self) -> int:
        return stop_process(self.proc, 20)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def freeze(self) -> None:
        """SIGSTOP: the process stops at once, every thread (the first instant of a crash or power cut)."""
        self.proc.send_signal(signal.SIGSTOP)


def stop_process(proc: subprocess.Popen[bytes], grace_s: float) -> int:
    """SIGTERM, then SIGKILL after `grace_s`; the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)
