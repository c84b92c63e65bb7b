"""The Box's software slots (A/B) on a generic Linux: versioned release directories and one
state file switched atomically.

Layout (``$BOXD_SOFTWARE_DIR``, default ``<state-dir>/software``)::

    releases/<version>/     an unpacked, checksum-verified bundle (`ota.bundle`)
    releases/.<version>.tmp one being unpacked (removed by `prune`)
    slot.json               {"active": "<version>" | "factory", "previous": ... | null,
                             "trial": {...} | null, "report": {...} | null}

"factory" is the software installed with the image (the launcher's own packages); it is
always there to fall back to. At most two releases are kept: the active one and the previous
one (A and B). Every change of ``slot.json`` is a write to a temporary file, fsync, rename,
fsync of the directory: after a power cut it is the old state or the new, never a mix.

The update sequence: `install` (unpack into ``releases/<version>``), `switch` (the new
version becomes active, on trial), restart; the new daemon `commit`\\ s once healthy, or
`rollback`\\ s at its deadline, or the launcher does (exited before healthy, too many starts). A
rollback leaves a `report` for the previous version's daemon to send to the platform.

Only one process writes ``slot.json`` at a time: the launcher while no daemon runs, the
daemon while it runs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from boxkit.files import fsync_dir, write_atomic
from ota.errors import BundleError, SlotError
from proto import names

if TYPE_CHECKING:
    from proto.release import Manifest

log = logging.getLogger("boxd.ota")

FACTORY = "factory"
SLOT_FILE = "slot.json"
MAX_STARTS = 3  # starts on trial, each in another boot, without a commit (power cuts) before a rollback
RESTART_STATUS = 75  # a daemon's planned exit to be started again (`boxd.supervisor`)


@dataclass(frozen=True)
class Trial:
    """A newly switched version that has not proven itself yet."""

    version: str
    previous: str
    deployment: str
    health_s: int
    starts: int = 0
    since: float = 0.0  # wall time of the switch
    boot: str = ""  # the boot id of the last start (`ota.launcher`)
    ended: str = ""  # how the last start ended: "" (running, or died without a word), "stopped", or why


@dataclass(frozen=True)
class SlotState:
    """What runs, what ran before, and what is on trial."""

    active: str = FACTORY
    previous: str | None = None
    trial: Trial | None = None
    report: dict[str, str] | None = None  # an outcome for the platform, sent by the next daemon
    problems: list[str] = field(default_factory=list)  # why the file was not taken as it is (not saved)


def software_dir(state_dir: Path) -> Path:
    """Where the software slots live: $BOXD_SOFTWARE_DIR, else ``<state_dir>/software``."""
    env = os.environ.get("BOXD_SOFTWARE_DIR", "")
    return Path(env) if env else state_dir / "software"


def release_dir(sw: Path, version: str) -> Path:
    """The directory of an unpacked release."""
    return sw / "releases" / version


def load(sw: Path) -> SlotState:
    """Read ``slot.json``; a missing file is the factory state, and so is an unreadable one
    (said in `SlotState.problems`): the factory software is always good to run."""
    try:
        raw = json.loads((sw / SLOT_FILE).read_bytes())
        trial = raw.get("trial")
        report = raw.get("report")
        state = SlotState(
            active=_name(raw.get("active")), previous=_name(raw["previous"]) if raw.get("previous") else None,
            trial=Trial(**trial) if trial is not None else None,
            report={str(k): str(v) for k, v in report.items()} if report is not None else None,
        )
    except FileNotFoundError:
        return SlotState()
    except (OSError, ValueError, TypeError, AttributeError, KeyError) as e:
        return SlotState(problems=[f"{sw / SLOT_FILE} is unreadable ({e}): running the factory software"])
    return state


def _name(value: object) -> str:
    if not (value == FACTORY or names.VERSION.fullmatch(value)):
        raise ValueError(f"not a release name: {value!r}")
    return str(value)


def save(sw: Path, state: SlotState) -> None:
    """Write ``slot.json`` atomically."""
    doc = asdict(state)
    doc.pop("problems")
    sw.mkdir(parents=True, exist_ok=True)
    write_atomic(sw / SLOT_FILE, json.dumps(doc, indent=1).encode(), 0o644)


def install(sw: Path, bundle: Path, version: str, hardware: str) -> Manifest:
    """Unpack `bundle` into ``releases/<version>``, checked file by file; the active and the
    previous releases are never touched.

    Raises:
        SlotError: the bundle is not the announced version, not for this hardware, damaged, or
            the version is the one running.
    """
    from ota.bundle import extract  # gzip and tarfile: only while an update installs (not resident)

    state = load(sw)
    if version == state.active:
        raise SlotError(f"version {version} is the one running")
    releases = sw / "releases"
    releases.mkdir(parents=True, exist_ok=True)
    tmp = releases / f".{version}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        manifest = extract(bundle, tmp)
    except BundleError as e:
        raise SlotError(f"cannot install {bundle.name}: {e}") from e
    if manifest.version != version:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SlotError(f"the bundle says it is version {manifest.version}, the deployment says {version}")
    if hardware not in manifest.hardware:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SlotError(f"the bundle is for {', '.join(manifest.hardware)}, this Box is {hardware}")
    final = release_dir(sw, version)
    if final.exists():  # an older copy (an earlier try, or the release rolled back from): replaced
        shutil.rmtree(final)
    tmp.replace(final)
    fsync_dir(releases)
    return manifest


def switch(sw: Path, version: str, deployment: str, health_s: int) -> SlotState:
    """Make the installed `version` the active one, on trial; the running one becomes previous.

    Raises:
        SlotError: the release is not installed (or fails its check).
    """
    from ota.bundle import verify

    try:
        verify(release_dir(sw, version))
    except BundleError as e:
        raise SlotError(f"cannot switch to {version}: {e}") from e
    state = load(sw)
    new = SlotState(active=version, previous=state.active,
                    trial=Trial(version, state.active, deployment, health_s, 0, time.time()))
    save(sw, new)
    return new


def commit(sw: Path) -> Trial | None:
    """The version on trial is healthy: it stays. Returns the trial that ended (None if none)."""
    state = load(sw)
    if state.trial is None:
        return None
    save(sw, replace(state, trial=None))
    return state.trial


def rollback(sw: Path, reason: str) -> SlotState:
    """Go back to the previous version; the failed release is removed; a report is left for
    the platform. Nothing happens without a trial."""
    state = load(sw)
    trial = state.trial
    if trial is None:
        return state
    new = SlotState(active=trial.previous, previous=None, trial=None,
                    report={"deployment": trial.deployment, "version": trial.version, "state": "rolled_back",
                            "detail": reason})
    save(sw, new)
    shutil.rmtree(release_dir(sw, trial.version), ignore_errors=True)
    return new


def clear_report(sw: Path) -> None:
    """Forget the report (it is in the daemon's durable queue now)."""
    state = load(sw)
    if state.report is not None:
        save(sw, replace(state, report=None))


def prune(sw: Path) -> list[str]:
    """Remove releases other than the active, previous and on-trial ones, and leftovers of an
    unpacking cut short. Returns what was removed."""
    state = load(sw)
    keep = {state.active, state.previous, state.trial.version if state.trial else None}
    removed = []
    releases = sw / "releases"
    if releases.is_dir():
        for p in releases.iterdir():
            if p.name not in keep:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
    return removed

