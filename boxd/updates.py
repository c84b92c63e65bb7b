"""The daemon's side of an update: the ``update`` and ``update_abort`` commands, the trial's
commit, and the ``ota`` events that tell the platform how it went (docs/architecture.md, "OTA").
It was ``ota/agent.py``; it is the daemon's owner of updates, so it lives in ``boxd``.

An ``update`` is answered at once ("ok": accepted; the outcome comes as events) and runs as a
job of the supervisor, one at a time::

    downloading  ota.client: TUF-verified download over the Box's mTLS identity, retried on a
                 flaky link; refused: tampered, rolled back, frozen, mixed, under-signed
                 metadata, downgrade, other hardware -> "failed", nothing installed
    installing   ota.slots.install: unpacked into releases/<version>, file by file against the
                 bundle's manifest -> "failed" on any mismatch, nothing switched
    restarting   ota.slots.switch (the point of no return), then the job raises `Stop` (75): the
                 daemon exits; systemd runs `boxd launch`, which starts the new version on trial
    committed    sent by the new version once healthy (`watch_trial`, a job started by `at_start`), or
    rolled_back  sent by the previous version, from the rollback's report (written by the version on
                 trial at its deadline, or by the launcher when it exited before it was healthy)

On a Box image (`on_image`) the unit of update is the root file system: the verified bundle is
handed to the image's installer (`ota.image`), which writes the other slot and reboots on trial;
the boot loader's counting and the boot check decide, and the next boot reports.

``update_abort`` stops a download (the file is removed, "aborted"); once the switch is
under way it is "too late". Events go through the daemon's durable queue: none is lost
across restarts or outages (one may come twice; the platform takes the first).

The TUF client runs as a process of its own (``python -m ota.client download``): python-tuf
and its crypto never enter the daemon's memory, and a crash in them cannot take the daemon down.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from boxd.clock import boot_id
from boxd.supervisor import RESTART_STATUS, Stop, Supervisor
from boxkit.files import write_atomic
from boxkit.machine import hardware_id
from ota import image, slots
from ota.errors import DownloadFailedError, OtaError
from proto.commands import Update, UpdateAbort
from proto.errors import RejectedError
from proto.uplink import OtaEvent
from trust import identity
from trust.errors import IdentityError

log = logging.getLogger("boxd.ota")

PutEvent = Callable[[OtaEvent], None]  # the daemon stamps its time and queues it durably
TRIAL_POLL_S = 0.5
JOB_FILE = "job.json"  # the update under way: {"deployment", "version"}, until it is switched or ended
IMAGE_ROOT = Path("/usr/share/boxd/tuf-root.json")  # the TUF root shipped in the Box image
PROGRESS_STEP = 0.25  # a "downloading" event at each quarter


@dataclass
class _Job:
    deployment: str
    version: str
    abort: threading.Event
    proc: asyncio.subprocess.Process | None = None
    switching: bool = False


class UpdateAgent:
    """Updates for one daemon. The constructor does no I/O."""

    def __init__(self, state_dir: Path, running: str, put_event: PutEvent, supervisor: Supervisor, *,
                 launched: bool, software: Path | None = None, hardware: str | None = None,
                 attempts: int = 5, backoff_s: float = 2.0, on_image: bool = False,
                 install_poll_s: float = 1.0) -> None:
        self.state_dir = state_dir
        self.running = running
        self.sw = software or slots.software_dir(state_dir)
        self.launched = launched
        self.on_image = on_image  # a Box image: an update writes the other root slot (ota.image)
        self._install_poll_s = install_poll_s
        self.hardware = hardware or hardware_id()
        self._put = put_event
        self._supervisor = supervisor
        self._attempts, self._backoff_s = attempts, backoff_s
        self._job: _Job | None = None
        self._aborted: set[str] = set()
        self.trial: slots.Trial | None = None

    def event(self, deployment: str, version: str, state: str, detail: str, progress: float | None = None) -> None:
        """Queue an ``ota`` event (durable)."""
        detail = detail[:1000]
        log.log(logging.WARNING if state in ("failed", "rolled_back", "aborted") else logging.INFO,
                "update %s to %s: %s: %s", deployment, version, state, detail)
        self._put(OtaEvent(deployment, version, state, detail, self.running, 0, progress))

    # -- at start -------------------------------------------------------------------------

    @property
    def past_no_return(self) -> str:
        """Why a restart or a reboot must not happen now ("" when it may): an update is being
        switched to (its point of no return is passed; it restarts the daemon itself)."""
        job = self._job
        if job is not None and job.switching:
            return f"the update to {job.version} is past its point of no return (being switched to)"
        return ""

    def at_start(self, missing: Callable[[], str]) -> None:
        """Send what the launcher left (a rollback), and note whether this version is on trial:
        then a job commits it once `missing()` says nothing is missing."""
        if self.on_image:
            self._image_at_start(missing)
            return
        if not self.launched:
            return
        state = slots.load(self.sw)
        if state.report is not None:
            r = state.report
            self.event(r.get("deployment", ""), r.get("version", ""), r.get("state", "rolled_back"),
                       r.get("detail", ""))
            slots.clear_report(self.sw)
        self._interrupted(state.trial.deployment if state.trial is not None else None)
        if state.trial is not None and state.trial.version == state.active:
            self.trial = state.trial
            log.warning("version %s is on trial: it must be healthy within %d s or the previous version (%s) "
                        "comes back", self.running, state.trial.health_s, state.trial.previous)
            self._supervisor.spawn("update trial", lambda: self.watch_trial(missing))

    def _image_at_start(self, missing: Callable[[], str]) -> None:
        """On a Box image: the installed release's trial is this boot, or the Box fell back from it."""
        outcome = image.boot_outcome(self.state_dir, self.running)
        request = image.requested(self.state_dir)
        self._interrupted(outcome.deployment if outcome is not None else request[0] if request else None)
        failed = image.take_install_failure_of(self.state_dir)
        if failed is not None:  # an install resumed at boot (a power cut during the switch) that failed
            self.event(failed[0], failed[1], "failed", f"{failed[2]}; {self.running} keeps running")
        elif request is not None:
            # boxd restarted (the watchdog, a crash) while the installer writes the other slot, or the
            # Box lost power then and the installer starts again at boot: the update goes on without
            # it; say so, and wait for its reboot or its failure as the job did
            self.event(request[0], request[1], "installing",
                       image.interrupted_install(self.state_dir, request[1], boot_id()))
            job = _Job(request[0], request[1], threading.Event(), switching=True)
            self._job = job
            self._supervisor.spawn(f"update {job.deployment}", lambda: self._await_installer(job))
        if outcome is None:
            return
        if outcome.on_trial:
            self.trial = slots.Trial(outcome.version, outcome.previous, outcome.deployment, outcome.trial_s)
            log.warning("release %s is on trial: it must be healthy within %d s or the Box boots %s again",
                        self.running, outcome.trial_s, outcome.previous)
            self._supervisor.spawn("update trial", lambda: self.watch_trial(missing))
            return
        self.event(outcome.deployment, outcome.version, "rolled_back", outcome.reason)
        image.end_trial(self.state_dir)

    @property
    def _job_file(self) -> Path:
        return self.state_dir / "ota" / JOB_FILE

    def _interrupted(self, switched_to: str | None) -> None:
        """An update cut before its switch by a power loss or a crash: say so, clean up what it left."""
        try:
            doc = json.loads(self._job_file.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            doc = {}
        if not isinstance(doc, dict):
            doc = {}
        switched = switched_to is not None and switched_to == doc.get("deployment")
        if not switched and isinstance(doc.get("deployment"), str) and isinstance(doc.get("version"), str):
            self.event(doc["deployment"], doc["version"], "failed",
                       "the Box restarted before the update was switched to (a power loss or a crash); "
                       "nothing installed: the update can be sent again")
        downloads = self.state_dir / "ota" / "downloads"
        if downloads.is_dir() and not (self.state_dir / image.REQUEST).exists():  # (else the installer's)
            for leftover in downloads.iterdir():
                leftover.unlink(missing_ok=True)
        if not self.on_image:
            slots.prune(self.sw)
        self._job_file.unlink(missing_ok=True)

    async def watch_trial(self, missing: Callable[[], str]) -> None:
        """Commit the version on trial as soon as `missing()` says nothing is missing.

        Launched (directory slots), the daemon supervises its own trial: not healthy within its
        ``health_s``, it goes back to the previous version itself (`ota.slots.rollback`, the reason
        saying what was missing) and stops to be started again (`Stop`, 75): the launcher then
        runs the previous version, which reports the rollback. On a Box image the boot check
        (image/scripts/boot_check.py) keeps the deadline.

        Raises:
            Stop: the trial's deadline passed (launched only).
        """
        trial = self.trial
        if trial is None:
            return
        deadline = time.monotonic() + trial.health_s
        while why := missing():
            if self.launched and not self.on_image and time.monotonic() >= deadline:
                reason = f"version {trial.version} was not healthy within {trial.health_s} s ({why})"
                log.error("rolling back: %s", reason)
                await asyncio.to_thread(slots.rollback, self.sw, reason)
                self.trial = None
                raise Stop(RESTART_STATUS, "restarting", f"rolling back to {trial.previous}: {reason}")
            await asyncio.sleep(TRIAL_POLL_S)
        self.event(trial.deployment, trial.version, "committed",
                   f"version {trial.version} is healthy (broker connected, field buses polling); "
                   f"{trial.previous} is kept as the previous version")
        if self.on_image:
            await asyncio.to_thread(image.end_trial, self.state_dir)
        else:
            await asyncio.to_thread(slots.commit, self.sw)
        self.trial = None

    # -- commands ---------------------------------------------------------------------------

    def start(self, cmd: Update) -> str:
        """Accept an ``update`` (returns the reply's detail); the work goes on in a task.

        Raises:
            RejectedError: refused (the reply says why).
        """
        deployment, version, target, health_s = cmd.deployment, cmd.version, cmd.target, cmd.health_s
        where = f"cmd {cmd.id} (update)"
        if not self.launched and not self.on_image:
            raise RejectedError(f"{where}: this boxd was not started by 'boxd launch', so it cannot switch its "
                                "software (image/README.md)")
        job = self._job
        if job is not None:
            if job.deployment == deployment:
                return f"deployment {deployment} is already in progress"
            raise RejectedError(f"{where}: busy with deployment {job.deployment} (version {job.version})")
        if deployment in self._aborted:
            raise RejectedError(f"{where}: deployment {deployment} was aborted on this Box")
        if self.trial is not None:
            raise RejectedError(f"{where}: version {self.running} is still on trial")
        if version == self.running:
            self.event(deployment, version, "committed", f"already running {version}")
            return f"already running {version}"
        job = _Job(deployment, version, threading.Event())
        self._job_file.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self._job_file, json.dumps({"deployment": deployment, "version": version}).encode())
        self._supervisor.spawn(f"update {deployment}", lambda: self._update(job, target, health_s))
        self._job = job
        return f"updating to {version} ({target}): progress follows as ota events"

    def abort(self, cmd: UpdateAbort) -> str:
        """Stop a deployment's download (returns the reply's detail).

        Raises:
            RejectedError: too late, the new version is being switched to.
        """
        deployment = cmd.deployment
        self._aborted.add(deployment)
        job = self._job
        if job is None or job.deployment != deployment:
            return f"nothing of deployment {deployment} is in progress"
        if job.switching:
            raise RejectedError(f"cmd {cmd.id} (update_abort): too late: version {job.version} is installed "
                                "and being switched to")
        job.abort.set()
        if job.proc is not None and job.proc.returncode is None:
            job.proc.terminate()  # the download process stops and removes its partial file
        return f"aborting the update to {job.version}"

    # -- the update ---------------------------------------------------------------------------

    async def _update(self, job: _Job, target: str, health_s: int) -> None:
        """The update job (its top: whatever happens, the platform hears of it)."""
        download: Path | None = None
        switched = False
        try:
            self.event(job.deployment, job.version, "downloading", f"fetching {target}", progress=0.0)
            download = await self._download(job, target)
            if job.abort.is_set():
                raise AbortedError("aborted before installing")
            if self.on_image:
                bundle, download = download, None  # the installer's from now on (it removes it)
                await self._install_image(job, bundle, health_s)
                return
            self.event(job.deployment, job.version, "installing", f"unpacking into releases/{job.version}")
            manifest = await asyncio.to_thread(slots.install, self.sw, download, job.version, self.hardware)
            if job.abort.is_set():
                await asyncio.to_thread(slots.prune, self.sw)
                raise AbortedError("aborted before the switch; the unpacked release is removed")
            job.switching = True  # the point of no return
            await asyncio.to_thread(slots.switch, self.sw, job.version, job.deployment, health_s)
            self.event(job.deployment, job.version, "restarting",
                       f"switched to {manifest.version} ({len(manifest.files)} files checked); restarting "
                       f"on trial for {health_s} s, {self.running} kept to come back to")
            switched = True
        except AbortedError as e:
            self.event(job.deployment, job.version, "aborted", f"{e}; nothing installed")
        except (OtaError, IdentityError, OSError) as e:
            self.event(job.deployment, job.version, "failed", f"{e}; nothing installed")
        except Exception as e:  # the job's top: a bug must not take the daemon down, and the platform must hear of it
            log.exception("update %s failed", job.deployment)
            self.event(job.deployment, job.version, "failed", f"{type(e).__name__}: {e}; nothing installed")
        finally:
            if download is not None:
                download.unlink(missing_ok=True)
            self._job_file.unlink(missing_ok=True)  # switched (slot.json says so) or ended
            if not job.switching:
                self._job = None
        if switched:
            log.warning("restarting into the new version")
            raise Stop(RESTART_STATUS, "restarting", f"restarting into version {job.version}")

    async def _install_image(self, job: _Job, bundle: Path, health_s: int) -> None:
        """Hand the verified bundle to the image's installer (root): it writes the other slot and
        reboots on trial; here, only its refusal or failure comes back (nothing switched)."""
        job.switching = True  # the point of no return: the installer may be writing the slot now
        self.event(job.deployment, job.version, "installing",
                   f"writing {job.version} into the other root slot; then the Box reboots on trial for "
                   f"{health_s} s, {self.running} kept to fall back to")
        await asyncio.to_thread(image.request_install, self.state_dir, job.deployment, job.version, bundle,
                                max(10, health_s))
        await self._await_installer(job)

    async def _await_installer(self, job: _Job) -> None:
        """Wait for the installer's refusal or failure (its success is a reboot, which ends this)."""
        try:
            while (why := await asyncio.to_thread(image.take_install_failure, self.state_dir)) is None:  # noqa: ASYNC110 - a file of another process; the reboot ends this wait
                await asyncio.sleep(self._install_poll_s)
        finally:
            job.switching = False
            self._job = None
        self.event(job.deployment, job.version, "failed", f"{why}; {self.running} keeps running")

    async def _download(self, job: _Job, target: str) -> Path:
        """Run the download as a process of its own (``python -m ota.client download``): python-tuf
        and its crypto never enter the daemon's memory, and nothing that happens in them can take
        the daemon down. Its JSON lines give the progress and the outcome."""
        identity.load(self.state_dir)  # fails in words before anything starts
        await asyncio.to_thread(_trust_image_root, self.state_dir)
        argv = [sys.executable, "-m", "ota.client", "download", "--state-dir", str(self.state_dir),
                "--base-url", identity.server_url(self.state_dir), "--running", self.running,
                "--hardware", self.hardware, "--target", target, "--attempts", str(self._attempts),
                "--backoff-s", str(self._backoff_s)]
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        job.proc = proc
        if job.abort.is_set():  # the abort came while the process started
            proc.terminate()
        try:
            outcome, stderr_tail = await asyncio.gather(self._follow(job, proc), _tail(proc.stderr))
            status = await proc.wait()
        finally:
            if proc.returncode is None:  # cancelled: the daemon stops
                proc.kill()
                await proc.wait()
            job.proc = None
        if "aborted" in outcome or job.abort.is_set():
            raise AbortedError(str(outcome.get("aborted") or "aborted: the download was stopped"))
        if "error" in outcome:
            raise DownloadFailedError(str(outcome["error"]))
        release, path = outcome.get("release"), outcome.get("path")
        if status != 0 or not isinstance(release, dict) or not isinstance(path, str):
            why = f"signal {-status}" if status < 0 else f"status {status}"
            tail = f": {stderr_tail}" if stderr_tail else ""
            raise DownloadFailedError(f"the download process ended with {why}{tail}")
        if release.get("version") != job.version:
            await asyncio.to_thread(Path(path).unlink, missing_ok=True)
            raise DownloadFailedError(f"{target} is version {release.get('version')} in the signed metadata, the "
                                 f"deployment says {job.version}")
        return Path(path)

    async def _follow(self, job: _Job, proc: asyncio.subprocess.Process) -> dict[str, object]:
        """Read the download process's lines: progress becomes events; returns its last other line."""
        marks = [PROGRESS_STEP * i for i in range(1, int(1 / PROGRESS_STEP))]
        outcome: dict[str, object] = {}
        assert proc.stdout is not None
        async for line in proc.stdout:
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if not isinstance(doc, dict):
                continue
            step = doc.get("progress")
            if not (isinstance(step, list) and len(step) == 2 and all(isinstance(n, int) for n in step)):
                outcome = doc
                continue
            done, total = step
            while marks and total and done / total >= marks[0]:
                share = marks.pop(0)
                self.event(job.deployment, job.version, "downloading", f"{int(share * 100)} % of {total} bytes",
                           progress=share)
        return outcome


async def _tail(stream: asyncio.StreamReader | None, keep: int = 3) -> str:
    """The last lines a process wrote (its stderr), for a report."""
    lines: list[str] = []
    if stream is None:
        return ""
    async for raw in stream:
        text = raw.decode("utf-8", "replace").strip()
        if text:
            lines = [*lines[-(keep - 1):], text[-300:]]
    return " | ".join(lines)


def _trust_image_root(state_dir: Path) -> None:
    """Before the first update: the TUF root the Box starts from is the one of its image."""
    shipped = state_dir / "ota" / "root.json"
    if not shipped.exists() and IMAGE_ROOT.exists():
        shipped.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(shipped, IMAGE_ROOT.read_bytes())


class AbortedError(OtaError):
    """An update stopped by ``update_abort`` (reported "aborted")."""

