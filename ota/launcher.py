"""`boxd launch`: run the active software slot, and take it back when a new one fails its trial.

The launcher belongs to the factory software and is never replaced by an update (on a Box
image, the bootloader plays this part: image/README.md). It runs ``python -m boxd.cli run``
from the active release (``releases/<version>`` first on the import path, `ota.slots`) as
its child and relays the child's output. Under systemd it is the service's main process
(``NotifyAccess=all``: the daemon, its child, sends READY and the watchdog pings).

A version on trial (just switched to by an update) must commit itself within its
``health_s`` (the daemon does once it is connected to the broker and every field bus has
polled: `boxd.daemon`). The launcher rolls back to the previous version when:

- the deadline passes without a commit (the child is stopped; the reason says what the
  daemon still lacked, from its ``run/status.json``);
- the child exits before it committed (the reason quotes its last output line);
- the trial has been started `ota.slots.MAX_STARTS` times without a commit (power cuts or
  the launcher itself killed during the trial).

The previous version's daemon then reports the rollback to the platform. Outside a trial
the child is restarted when it exits: at once for status 75 (a restart asked for, e.g. to
switch to a new version), otherwise after a growing delay. SIGTERM/SIGINT are passed on
to the child and the launcher exits with its status.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import IO

from ota import slots
from ota.bundle import verify
from ota.errors import BundleError

log = logging.getLogger("boxd.launch")

RESTART_STATUS = 75
STOP_GRACE_S = 15.0
BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
STABLE_S = 60.0  # a child that ran this long resets the restart delay


class Launcher:
    """One launcher; `run` returns the exit status of the last child when stopped."""

    def __init__(self, state_dir: Path, config_path: Path, *, verbose: bool = False,
                 software: Path | None = None) -> None:
        self.state_dir = state_dir.resolve()
        self.config_path = config_path.resolve()
        self.sw = (software or slots.software_dir(self.state_dir)).resolve()
        self.verbose = verbose
        self._stopping = threading.Event()
        self._child: subprocess.Popen[bytes] | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=8)

    # -- signals ------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._stopping.set()
        child = self._child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
            timer = threading.Timer(STOP_GRACE_S, self._kill_if_alive, (child,))
            timer.daemon = True
            timer.start()

    @staticmethod
    def _kill_if_alive(child: subprocess.Popen[bytes]) -> None:
        """A daemon that did not stop within `STOP_GRACE_S` of SIGTERM is killed (its queue is durable)."""
        if child.poll() is None:
            log.error("boxd did not stop within %.0f s: killing it", STOP_GRACE_S)
            child.kill()

    def run(self) -> int:
        """Run children until stopped."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        failures = 0
        status = 0
        while not self._stopping.is_set():
            state = self._prepare()
            started = time.monotonic()
            status = self._run_once(state)
            if self._stopping.is_set():
                break
            if status == RESTART_STATUS:
                failures = 0
                continue
            failures = 0 if time.monotonic() - started > STABLE_S else failures + 1
            if failures:
                delay = BACKOFF_S[min(failures, len(BACKOFF_S)) - 1]
                log.warning("boxd exited with status %d; starting it again in %.0f s", status, delay)
                self._stopping.wait(delay)
        return status

    # -- one start ------------------------------------------------------------------------

    def _prepare(self) -> slots.SlotState:
        """The slot to start, after a rollback if the trial is used up or its release is broken."""
        state = slots.load(self.sw)
        for problem in state.problems:
            log.error("%s", problem)
        for name in slots.prune(self.sw):
            log.info("removed the release %s (neither active nor previous)", name)
        trial = state.trial
        if trial is not None and trial.starts >= slots.MAX_STARTS:
            return self._rollback(f"version {trial.version} was started {trial.starts} times without "
                                  f"becoming healthy")
        if state.active != slots.FACTORY:
            try:
                verify(slots.release_dir(self.sw, state.active))
            except BundleError as e:
                if trial is not None:
                    return self._rollback(f"version {trial.version} is damaged on disk: {e}")
                log.error("the active release is damaged (%s): running the factory software", e)
                state = slots.SlotState()
                slots.save(self.sw, state)
        if trial is not None:
            state = replace(state, trial=replace(trial, starts=trial.starts + 1))
            slots.save(self.sw, state)
        return state

    def _rollback(self, reason: str) -> slots.SlotState:
        log.error("rolling back: %s", reason)
        return slots.rollback(self.sw, reason)

    def _command(self, state: slots.SlotState) -> tuple[list[str], dict[str, str], Path]:
        if state.active == slots.FACTORY:
            home = Path(__file__).resolve().parent.parent  # the launcher's own packages
        else:
            home = slots.release_dir(self.sw, state.active)
        env = dict(os.environ)
        env.update(BOXD_LAUNCHED="1", BOXD_SLOT=state.active, BOXD_SOFTWARE_DIR=str(self.sw),
                   PYTHONPATH=os.pathsep.join([str(home), *filter(None, [os.environ.get("PYTHONPATH")])]),
                   PYTHONDONTWRITEBYTECODE="1")
        argv = [sys.executable, "-m", "boxd.cli", "--state-dir", str(self.state_dir),
                "--config", str(self.config_path), *(["-v"] if self.verbose else []), "run"]
        return argv, env, home

    def _run_once(self, state: slots.SlotState) -> int:
        argv, env, home = self._command(state)
        trial = state.trial
        log.info("starting boxd %s%s", state.active,
                 f" on trial (start {trial.starts} of {slots.MAX_STARTS}, {trial.health_s} s to become healthy)"
                 if trial else "")
        self._tail.clear()
        try:
            child = subprocess.Popen(argv, env=env, cwd=home, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except OSError as e:
            log.error("cannot start boxd %s: %s", state.active, e)
            if trial is not None:
                self._rollback(f"version {trial.version} could not be started: {e}")
            return 1
        self._child = child
        if self._stopping.is_set():  # the stop came while it was being started
            child.terminate()
        relay = threading.Thread(target=self._relay, args=(child.stderr,), daemon=True)
        relay.start()
        try:
            if trial is not None:
                return self._run_trial(child, trial)
            return child.wait()
        finally:
            relay.join(5)
            self._child = None

    def _run_trial(self, child: subprocess.Popen[bytes], trial: slots.Trial) -> int:
        try:
            status = child.wait(timeout=trial.health_s)
        except subprocess.TimeoutExpired:
            if not self._still_on_trial(trial):  # committed in time: it simply runs on
                return child.wait()
            missing = self._what_was_missing()
            self._stop(child)
            self._rollback(f"version {trial.version} was not healthy within {trial.health_s} s{missing}")
            return RESTART_STATUS
        if not self._still_on_trial(trial) or self._stopping.is_set():
            return status  # committed (and perhaps restarting into a newer version), or stopped
        last = f": {self._tail[-1]}" if self._tail else ""
        self._rollback(f"version {trial.version} exited with status {status} before it was healthy{last}")
        return RESTART_STATUS

    def _still_on_trial(self, trial: slots.Trial) -> bool:
        now = slots.load(self.sw).trial
        return now is not None and now.version == trial.version and now.since == trial.since

    def _what_was_missing(self) -> str:
        try:
            doc = json.loads((self.state_dir / "run" / "status.json").read_text())
        except (OSError, ValueError):
            return " (the daemon never reported its status)"
        missing = doc.get("health_missing") if isinstance(doc, dict) else None
        return f" ({missing})" if isinstance(missing, str) and missing else ""

    def _stop(self, child: subprocess.Popen[bytes]) -> None:
        child.terminate()
        try:
            child.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    def _relay(self, stream: IO[bytes] | None) -> None:
        """Pass the child's stderr on (to the journal), keeping its last lines for a rollback report."""
        if stream is None:
            return
        out = sys.stderr.buffer
        for line in iter(stream.readline, b""):
            try:
                out.write(line)
                out.flush()
            except (OSError, ValueError):
                pass
            text = line.decode("utf-8", "replace").strip()
            if text:
                self._tail.append(text[-300:])
        stream.close()


def main(state_dir: Path, config_path: Path, verbose: bool) -> int:
    """`boxd launch`."""
    return Launcher(state_dir, config_path, verbose=verbose).run()
