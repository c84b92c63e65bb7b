"""`boxd launch`: choose the software slot to run, then become its daemon.

A step, not a resident process: it reads the slots (`ota.slots`), decides which release runs,
counts a start of a trial, and replaces itself (``os.execve``, the same pid) with
``python -m boxd.cli run`` of that release (``releases/<version>`` first on the import path).
The service is then one process and one Python interpreter, as on the Box image (where the boot
loader chooses the slot): systemd's main process is the daemon itself (``NotifyAccess=main``),
and systemd's ``Restart=`` runs this step again whenever the daemon exits (image/boxd.service).
The launcher belongs to the factory software and is never replaced by an update.

A version on trial (just switched to by an update) proves itself within its ``health_s``: the
daemon supervises its own trial (`boxd.updates`): it commits once healthy, or at the deadline
writes the rollback, saying what it still lacked, and exits to be started again. Here, before
each start, the previous version comes back when:

- the trial's last start was in this boot and did not end in a planned stop: the daemon exited
  before it was healthy (its last words, written by `note_exit`, are the reason: a start error,
  a bug), or died without a word (killed, a crash in C, the watchdog);
- the trial has been started `ota.slots.MAX_STARTS` times in other boots without a commit
  (power cuts during the trial);
- the release on trial is damaged on disk (a damaged committed release: the factory software).

The previous version's daemon then reports the rollback to the platform.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

from boxkit.files import lock_holder
from ota import slots
from ota.errors import BundleError

log = logging.getLogger("boxd.launch")

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
STOPPED = "stopped"  # `Trial.ended` of a planned stop (systemctl stop, a restart command): not a failure
LOCK_FD = "BOXD_LOCK_FD"  # the state directory's lock, held across the exec


def boot_id() -> str:
    """This boot's id (a start in another boot is a power cut's or a reboot's, not a crash's)."""
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


class Launcher:
    """One launch: `prepare` chooses the slot (and writes what it decided); `exec` becomes its daemon."""

    def __init__(self, state_dir: Path, config_path: Path, *, verbose: bool = False,
                 software: Path | None = None, boot: str | None = None) -> None:
        self.state_dir = state_dir.resolve()
        self.config_path = config_path.resolve()
        self.sw = (software or slots.software_dir(self.state_dir)).resolve()
        self.verbose = verbose
        self.boot = boot

    def _prepare(self) -> slots.SlotState:
        """The slot to start, after a rollback if the trial failed or its release is broken."""
        boot = self.boot if self.boot is not None else boot_id()
        state = slots.load(self.sw)
        for problem in state.problems:
            log.error("%s", problem)
        for name in slots.prune(self.sw):
            log.info("removed the release %s (neither active nor previous)", name)
        trial = state.trial
        if trial is not None and trial.starts and boot and trial.boot == boot and trial.ended != STOPPED:
            return self._rollback(f"version {trial.version} {trial.ended}" if trial.ended else
                                  f"version {trial.version} stopped before it was healthy without saying why "
                                  "(killed, a crash, or the watchdog: see the journal)")
        if trial is not None and trial.starts >= slots.MAX_STARTS:
            return self._rollback(f"version {trial.version} was started {trial.starts} times without "
                                  f"becoming healthy")
        if state.active != slots.FACTORY:
            from ota.bundle import verify  # (here: the daemon takes `inherited_lock` from this module)

            try:
                verify(slots.release_dir(self.sw, state.active))
            except BundleError as e:
                if trial is not None:
                    return self._rollback(f"version {trial.version} is damaged on disk: {e}")
                log.error("the active release is damaged (%s): running the factory software", e)
                state = slots.SlotState()
                slots.save(self.sw, state)
        if trial is not None:
            state = replace(state, trial=replace(trial, starts=trial.starts + 1, boot=boot, ended=""))
            slots.save(self.sw, state)
        return state

    def _rollback(self, reason: str) -> slots.SlotState:
        log.error("rolling back: %s", reason)
        return slots.rollback(self.sw, reason)

    def command(self, state: slots.SlotState) -> tuple[list[str], dict[str, str], Path]:
        """The daemon of the chosen slot: its argv, environment and working directory."""
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

    def exec(self, lock_fd: int) -> int:
        """Choose the slot and become its daemon (returns only when that cannot start: status 1)."""
        state = self._prepare()
        argv, env, home = self.command(state)
        trial = state.trial
        log.info("starting boxd %s%s", state.active,
                 f" on trial (start {trial.starts} of {slots.MAX_STARTS}, {trial.health_s} s to become healthy)"
                 if trial else "")
        os.set_inheritable(lock_fd, True)  # one daemon per state directory, with no gap at the exec
        env[LOCK_FD] = str(lock_fd)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        try:
            os.chdir(home)
            os.execve(argv[0], argv, env)  # noqa: S606 - the daemon of the chosen slot, no shell
        except OSError as e:
            log.error("cannot start boxd %s: %s", state.active, e)
            if trial is not None:
                note_exit(self.sw, state.active, 1, f"could not be started: {e}")
        return 1


def inherited_lock(path: Path) -> int | None:
    """The state directory's lock when this process is a daemon its launcher exec'ed into (the
    descriptor is held across the exec, the file names this pid); else None."""
    raw = os.environ.get(LOCK_FD, "")
    if os.environ.get("BOXD_LAUNCHED") != "1" or not raw.isdigit() or lock_holder(path) != os.getpid():
        return None
    fd = int(raw)
    try:
        os.fstat(fd)
    except OSError:
        return None
    os.set_inheritable(fd, False)  # not for the daemon's own children
    return fd


def note_exit(sw: Path, version: str, status: int, words: str) -> None:
    """A launched daemon's last words as it exits, kept in its trial (if `version` is on trial) for the
    next launch: a planned stop (status 0 or 75) is a start like any other; any other status ends the
    trial there (the next launch rolls back, saying this)."""
    try:
        state = slots.load(sw)
        trial = state.trial
        if trial is None or trial.version != version or state.problems:
            return
        ended = STOPPED if status in (0, slots.RESTART_STATUS) else \
            f"exited with status {status} before it was healthy{f': {words[-300:]}' if words else ''}"
        slots.save(sw, replace(state, trial=replace(trial, ended=ended)))
    except OSError as e:  # the daemon is on its way out: say it, do not fail its exit
        log.error("cannot note the exit in %s: %s", sw, e)


def main(state_dir: Path, config_path: Path, verbose: bool, lock_fd: int) -> int:
    """`boxd launch`."""
    return Launcher(state_dir, config_path, verbose=verbose).exec(lock_fd)
