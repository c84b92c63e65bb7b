"""The boot trial's verdict (boxd-boot-check.service): is the release booted on trial healthy?

Runs only on a boot that systemd-boot counts (see the unit). It waits until the running boxd
says it is healthy in its status file (``health_missing`` empty: connected to the platform, a good
reading from every field bus, a batch acknowledged), for at most the trial's time: ``boxd.trial_s=``
on the kernel command line (written with the entry by whoever installed the slot), 600 s by
default. Healthy: exit 0, boot-complete.target is reached, systemd-bless-boot blesses the entry.
Not healthy in time: the reason is written to ``/var/lib/boxd/boot/trial-failed.json`` (for the
daemon of the slot that runs next to report it) and the console, and the exit status is 1: the
unit's FailureAction reboots, and the boot counter decides which slot comes up.

It does not touch the boot entries (systemd-boot and systemd-bless-boot do) and does not stop
boxd. Standard library only (it runs with /usr/bin/python3, whatever the slot's boxd is).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

STATE = Path("/var/lib/boxd")
STATUS = STATE / "run" / "status.json"
RECORD = STATE / "boot" / "trial-failed.json"
DEFAULT_TRIAL_S = 600
LOADER_GUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
EFIVARS = Path("/sys/firmware/efi/efivars")


def trial_seconds(cmdline: str) -> int:
    """The trial's time from the kernel command line (``boxd.trial_s=N``, 10..86400)."""
    for word in cmdline.split():
        if word.startswith("boxd.trial_s="):
            try:
                return min(86400, max(10, int(word.split("=", 1)[1])))
            except ValueError:
                break
    return DEFAULT_TRIAL_S


def efi_string(name: str) -> str:
    """A systemd-boot EFI variable (UTF-16, after 4 bytes of attributes), or "" when unset."""
    try:
        raw = (EFIVARS / f"{name}-{LOADER_GUID}").read_bytes()[4:]
    except OSError:
        return ""
    return raw.decode("utf-16-le", "replace").rstrip("\0")


def verdict(status: dict[str, object] | None, main_pid: int, now: float) -> str:
    """What keeps the booted release from being healthy ("" when nothing does)."""
    if main_pid <= 0:
        return "boxd is not running"
    if status is None:
        return "boxd has not written its status yet"
    if status.get("pid") != main_pid:
        return "boxd has not written its status yet"
    ts = status.get("ts")
    if not isinstance(ts, (int, float)) or now - ts > 10:
        return "boxd's status is stale (its loop may be stuck)"
    missing = status.get("health_missing")
    if not isinstance(missing, str):
        return "boxd does not report its health"
    return missing


def _main_pid() -> int:
    out = subprocess.run(["systemctl", "show", "--property=MainPID", "--value", "boxd.service"],
                         capture_output=True, text=True, timeout=30).stdout.strip()
    return int(out) if out.isdigit() else 0


def _status() -> dict[str, object] | None:
    try:
        doc = json.loads(STATUS.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _say(text: str) -> None:
    print(f"box: {text}", flush=True)


def main() -> int:
    entry = efi_string("LoaderEntrySelected") or "(unknown entry)"
    limit = trial_seconds(Path("/proc/cmdline").read_text())
    _say(f"boot trial of {entry}: waiting up to {limit} s for boxd to prove itself healthy")
    deadline = time.monotonic() + limit
    why = "not checked"
    while time.monotonic() < deadline:
        why = verdict(_status(), _main_pid(), time.time())
        if not why:
            _say(f"{entry} is healthy: boot complete, the entry is kept")
            return 0
        time.sleep(2)
    _say(f"{entry} failed its boot trial: {why}; rebooting (the other slot boots once its tries are spent)")
    RECORD.parent.mkdir(mode=0o700, exist_ok=True)
    tmp = RECORD.with_suffix(".tmp")
    tmp.write_text(json.dumps({"entry": entry, "reason": why, "trial_s": limit, "ts": int(time.time())}))
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    tmp.replace(RECORD)
    return 1


if __name__ == "__main__":
    sys.exit(main())
