"""Updates of the whole Box image (A/B root partitions): the daemon's half (image/README.md, "Updates").

On the Box image the unit of update is a root file system: a TUF target whose bundle is an image
release (`cloud.release.build_image`). boxd downloads it as any release (``ota.client``, as the
boxd user), then asks the image's installer (``boxd-install.service``, root, started by a path
unit) to write it by putting a request in its state directory; the installer writes the other
slot, its boot entry with a boot counter, records what the next boot is a trial of, and reboots.
Then either the new slot boots and proves itself (boxd sends "committed"; boxd-boot-check blesses
the entry) or the boot loader falls back and the old slot's boxd finds the record with the boot
check's reason (``trial-failed.json``) and sends "rolled_back" with it.

Files under the state directory (``/var/lib/boxd``, the data partition, kept across slots)::

    ota/install.json         the request: deployment, version, bundle, trial_s (boxd writes it)
    ota/install-failed.json  the installer's refusal or failure: nothing was switched
    ota/install-progress.json how far the installer got: deployment, version, slot, written, size, boot_id
    boot/pending.json        installed, booting on trial: deployment, version, slot, entry, previous
    boot/trial-failed.json   why the last trial failed (image/scripts/boot_check.py)

This module reads and writes those files; it does not download, write partitions or reboot.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from boxkit.files import write_atomic

RELEASE_FILE = Path("/usr/share/boxd/release.json")  # in each root file system: its release's version
REQUEST = Path("ota") / "install.json"
FAILED = Path("ota") / "install-failed.json"
PROGRESS = Path("ota") / "install-progress.json"
PENDING = Path("boot") / "pending.json"
TRIAL_FAILED = Path("boot") / "trial-failed.json"


def release_version(release_file: Path = RELEASE_FILE) -> str | None:
    """The version of the image release this boxd runs in, or None when not on a Box image."""
    try:
        doc = json.loads(release_file.read_text())
    except (OSError, ValueError):
        return None
    version = doc.get("version") if isinstance(doc, dict) else None
    return version if isinstance(version, str) and version else None


def request_install(state_dir: Path, deployment: str, version: str, bundle: Path, trial_s: int) -> None:
    """Ask the image's installer to write `bundle` into the other slot (durably: it survives a power cut)."""
    (state_dir / FAILED).unlink(missing_ok=True)
    write_atomic(state_dir / REQUEST, json.dumps({"deployment": deployment, "version": version,
                                                  "bundle": str(bundle), "trial_s": trial_s}).encode())


def requested(state_dir: Path) -> tuple[str, str] | None:
    """(deployment, version) of an install the installer has not finished (its request is still
    there: it is writing the other slot, or will when it starts again at boot), else None."""
    doc = _read(state_dir / REQUEST)
    if doc is None:
        return None
    return str(doc.get("deployment", ""))[:128], str(doc.get("version", ""))[:64]


def interrupted_install(state_dir: Path, version: str, boot: str) -> str:
    """For boxd started while an install of `version` is requested: what happened to it, in words,
    from the installer's progress record and the id of this boot (`boot`). A record of another
    boot, or one of this boot that keeps a cut write (``cut``: the installer started over), means
    the Box lost power or was reset mid-install; a record of this boot alone, that boxd restarted."""
    doc = _read(state_dir / PROGRESS)
    if doc is None or doc.get("version") != version:
        return (f"the Box or boxd restarted before the installer began writing {version}: it writes it now, "
                "then reboots on trial")
    slot = str(doc.get("slot", "?"))[:1].upper()
    cut = doc.get("cut")
    if doc.get("boot_id") != boot or isinstance(cut, dict):
        earlier = doc if doc.get("boot_id") != boot else cut
        assert isinstance(earlier, dict)
        return (f"the Box lost power or was reset with {_share(earlier)} of {version} written into slot {slot}: "
                "the installer writes it again from the start, then reboots on trial")
    return (f"boxd restarted while the installer writes {version} into slot {slot} ({_share(doc)} written): "
            "the install goes on")


def _share(doc: dict[str, object]) -> str:
    written, size = doc.get("written"), doc.get("size")
    return f"{100 * written // size} %" if isinstance(written, int) and isinstance(size, int) and size > 0 else "?"


def take_install_failure(state_dir: Path) -> str | None:
    """The installer's reason when it refused or failed (the record is removed), else None."""
    doc = _take(state_dir / FAILED)
    if doc is None:
        return None
    return _reason(doc)


def take_install_failure_of(state_dir: Path) -> tuple[str, str, str] | None:
    """(deployment, version, reason) of the installer's refusal or failure (the record is removed)."""
    doc = _take(state_dir / FAILED)
    if doc is None:
        return None
    return str(doc.get("deployment", ""))[:128], str(doc.get("version", ""))[:64], _reason(doc)


def _reason(doc: dict[str, object]) -> str:
    reason = doc.get("reason")
    return reason[:900] if isinstance(reason, str) and reason else "the installer failed without saying why"


@dataclass(frozen=True)
class Outcome:
    """What became of the last installed release, found at start."""

    deployment: str
    version: str
    previous: str
    trial_s: int
    on_trial: bool  # this boot is the new release's trial (else the Box fell back: `reason`)
    reason: str = ""


def boot_outcome(state_dir: Path, running: str) -> Outcome | None:
    """The release installed before this boot: on trial now (this boot runs it), or fallen back
    (another version runs: the reason from the boot check's record, or the tries spent by boots
    that never reached it). None when no installed release is pending."""
    try:
        doc = json.loads((state_dir / PENDING).read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        doc = None
    if not isinstance(doc, dict):
        (state_dir / PENDING).unlink(missing_ok=True)
        return None
    deployment, version = str(doc.get("deployment", ""))[:128], str(doc.get("version", ""))[:64]
    previous, trial_s = str(doc.get("previous", ""))[:64], doc.get("trial_s")
    trial_s = trial_s if isinstance(trial_s, int) and not isinstance(trial_s, bool) else 600
    if version == running:
        return Outcome(deployment, version, previous, trial_s, on_trial=True)
    failed = _read(state_dir / TRIAL_FAILED)
    entry = str(doc.get("entry", ""))
    if failed is not None and str(failed.get("entry", "")).startswith(entry.split("+", 1)[0]):
        reason = f"the boot trial of {version} failed: {str(failed.get('reason', '?'))[:500]}"
    else:
        reason = (f"{version} never completed a boot (its kernel or early boot failed on every try, e.g. a "
                  f"kernel panic): the boot loader fell back to {running}")
    return Outcome(deployment, version, previous, trial_s, on_trial=False, reason=reason)


def end_trial(state_dir: Path) -> None:
    """The outcome is reported: forget the pending release and the boot check's record."""
    (state_dir / PENDING).unlink(missing_ok=True)
    (state_dir / TRIAL_FAILED).unlink(missing_ok=True)


def _read(path: Path) -> dict[str, object] | None:
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _take(path: Path) -> dict[str, object] | None:
    doc = _read(path)
    if doc is not None or path.exists():
        path.unlink(missing_ok=True)
    return doc
