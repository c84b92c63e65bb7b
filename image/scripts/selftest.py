"""The Box image's own checks (box-selftest.service), run inside the booted image.

Started only when the machine passes the ``boxd.selftest`` system credential: a JSON object
``{"mode": "full" | "ready" | "boot", "box_id": "...", "knock_port": 7070}``. Each check prints one line
``BOXTEST {"check": ..., "ok": ..., ...}`` on the console (the test rig reads the serial port;
there is no login to scrape) and in the journal; all of them end up in
``/var/lib/box-selftest/result.json``. ``boot`` mode reports only which boot entry came up,
``ready`` also when boxd is up (bench/image.py).

The checks, in order (``full``): boot (entry, boot counting, read-only root), ready (boxd is
active under systemd, Type=notify, and connected), watchdog_fed, security (`systemd-analyze
security`), listeners (`ss -ltnu`), polkit (boxd, and only boxd, may reboot), firewall (a
listener here, a connection attempt from the host, the firewall's log of the drop), journal
(boxd's structured fields, no secret), trial (on a boot that systemd-boot counts:
boot-complete.target reached, the entry blessed), watchdog_restart (SIGSTOP: systemd's
watchdog restarts boxd), crash_restart (SIGSEGV: Restart= brings it back). The last two stop
and crash boxd on purpose; nothing else changes.
Standard library only.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CREDENTIALS = Path("/run/credentials/@system")
RESULT = Path("/var/lib/box-selftest/result.json")
STATUS = Path("/var/lib/boxd/run/status.json")
TRIAL_FAILED = Path("/var/lib/boxd/boot/trial-failed.json")
LOADER_GUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
Result = dict[str, Any]


def report(check: str, ok: bool, **details: Any) -> Result:
    """Print one check's result on the console (one write, one line) and return it."""
    doc = {"check": check, "ok": ok, **details}
    sys.stdout.write("BOXTEST " + json.dumps(doc, sort_keys=True) + "\n")
    sys.stdout.flush()
    return doc


def run(*cmd: str, timeout: float = 60) -> str:
    """A command's output (undecodable bytes replaced: the journal's export holds binary fields)."""
    return subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout).stdout


def unit(prop: str, name: str = "boxd.service") -> str:
    """A property of a unit (of the manager itself when `name` is "")."""
    return run("systemctl", "show", f"--property={prop}", "--value", *([name] if name else [])).strip()


def wait(cond: Callable[[], Any], timeout: float, step: float = 0.5) -> Any:
    """Poll `cond` until it returns something truthy or `timeout` passes (then its last value)."""
    deadline = time.monotonic() + timeout
    value = cond()
    while not value and time.monotonic() < deadline:
        time.sleep(step)
        value = cond()
    return value


def efi_string(name: str) -> str:
    try:
        raw = Path(f"/sys/firmware/efi/efivars/{name}-{LOADER_GUID}").read_bytes()[4:]
    except OSError:
        return ""
    return raw.decode("utf-16-le", "replace").rstrip("\0")


def journal(*args: str) -> list[dict[str, Any]]:
    out = run("journalctl", "--boot", "--no-pager", "--output=json", *args, timeout=120)
    docs = []
    for line in out.splitlines():
        try:
            docs.append(json.loads(line))
        except ValueError:
            continue
    return docs


def running_pid() -> int:
    """boxd's main pid once systemd has it active (READY received), else 0."""
    if unit("ActiveState") != "active" or unit("SubState") != "running":
        return 0
    pid = unit("MainPID")
    return int(pid) if pid.isdigit() else 0


# -- the checks ----------------------------------------------------------------------------------


def entries() -> list[str]:
    return sorted(p.name for p in Path("/efi/loader/entries").glob("*.conf"))


def check_boot() -> Result:
    mounts = run("findmnt", "--noheadings", "--output=SOURCE,OPTIONS", "/").split()
    try:
        trial_failed = json.loads(TRIAL_FAILED.read_text())
    except (OSError, ValueError):
        trial_failed = None
    return report("boot", True, entry=efi_string("LoaderEntrySelected"), entries=entries(),
                  counting=efi_string("LoaderBootCountPath"), root=mounts[0] if mounts else "",
                  root_ro="ro" in (mounts[1].split(",") if len(mounts) > 1 else []),
                  cmdline=Path("/proc/cmdline").read_text().strip(), trial_failed=trial_failed)


def check_trial() -> Result:
    """On a counted boot: boxd proves itself healthy, boot-complete.target is reached, the entry blessed."""
    counted = efi_string("LoaderBootCountPath")
    reached = wait(lambda: unit("ActiveState", "boot-complete.target") == "active"
                   and unit("Result", "systemd-bless-boot.service") == "success"
                   and unit("ActiveState", "systemd-bless-boot.service") == "active", 900, step=2)
    return report("trial", bool(counted) and bool(reached), counted=counted, entries=entries(),
                  boot_check=unit("Result", "boxd-boot-check.service"))


def check_ready() -> Result:
    pid = wait(running_pid, 600)
    connected = wait(lambda: json.loads(STATUS.read_text()).get("connected") if STATUS.exists() else False, 300)
    ready_us = int(unit("ActiveEnterTimestampMonotonic") or 0)
    # systemd-boot tells the firmware's and its own time (EFI variables), as systemd-analyze shows
    firmware_us, loader_us = (int(unit(f"{p}TimestampMonotonic", "") or 0) for p in ("Firmware", "Loader"))
    return report("ready", bool(pid) and bool(connected), type=unit("Type"), notify_access=unit("NotifyAccess"),
                  status_text=unit("StatusText"), connected=bool(connected), kernel_to_ready_s=round(ready_us / 1e6, 1),
                  firmware_s=round((firmware_us - loader_us) / 1e6, 1), loader_s=round(loader_us / 1e6, 1))


def check_watchdog_fed() -> Result:
    first = unit("WatchdogTimestampMonotonic")
    second = wait(lambda: (v := unit("WatchdogTimestampMonotonic")) != first and v, 60)
    third = wait(lambda: (v := unit("WatchdogTimestampMonotonic")) not in (first, second) and v, 60)
    return report("watchdog_fed", bool(second and third), watchdog_usec=unit("WatchdogUSec"),
                  pings=[first, second, third])


def check_security() -> Result:
    out = run("systemd-analyze", "security", "--no-pager", "boxd.service")
    m = re.search(r"Overall exposure level for boxd\.service: ([0-9.]+)", out)
    exposures = [re.sub(r"\s{2,}", " | ", line.strip()[2:]) for line in out.splitlines() if line.startswith("✗")]
    score = float(m.group(1)) if m else 99.0
    return report("security", score <= 2.0, score=score, exposures=exposures)


def check_listeners() -> Result:
    """Every TCP socket in LISTEN and every bound, unconnected UDP socket on the whole Box."""
    found = []
    for line in run("ss", "--no-header", "-ltnup").splitlines():
        f = line.split()
        if len(f) < 5:
            continue
        port = f[4].rsplit(":", 1)[-1]
        process = re.search(r'\(\("([^"]+)"', line)
        found.append({"proto": f[0], "local": f[4], "port": int(port) if port.isdigit() else port,
                      "process": process.group(1) if process else ""})
    return report("listeners", True, listening=found)


def check_polkit() -> Result:
    """logind lets boxd reboot the Box (50-boxd-reboot.rules), and not another unprivileged user."""
    def can_reboot(user: str) -> str:
        out = run("runuser", "-u", user, "--", "busctl", "call", "org.freedesktop.login1", "/org/freedesktop/login1",
                  "org.freedesktop.login1.Manager", "CanReboot")
        return out.strip().removeprefix("s ").strip('"')
    boxd, nobody = can_reboot("boxd"), can_reboot("nobody")
    return report("polkit", boxd == "yes" and nobody != "yes", boxd=boxd, nobody=nobody)


def check_firewall(port: int) -> Result:
    """Listen on `port`; the host tries to connect; the firewall must drop it, and say so in its log."""
    since = run("date", "+%Y-%m-%d %H:%M:%S").strip()
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))  # noqa: S104 - on purpose: the firewall must keep it unreachable
    srv.listen(4)
    srv.setblocking(False)
    report("knock", True, port=port)  # the host connects now
    accepted: list[str] = []

    def dropped() -> str:
        try:
            _conn, peer = srv.accept()
            accepted.append(f"{peer[0]}:{peer[1]}")
            _conn.close()
        except BlockingIOError:
            pass
        for doc in journal("--dmesg", f"--since={since}"):
            msg = str(doc.get("MESSAGE", ""))
            if msg.startswith("box-fw drop") and f"DPT={port} " in msg:
                return msg
        return ""

    log = wait(dropped, 180, step=1)
    srv.close()
    return report("firewall", bool(log) and not accepted, dropped=log, accepted=accepted)


def check_journal(box_id: str) -> Result:
    records = wait(lambda: [d for d in journal("--identifier=boxd") if d.get("BOX_POINT")], 300, step=2)
    mine = journal("--identifier=boxd")
    ids = sorted({str(d.get("BOX_ID")) for d in mine if d.get("BOX_ID")})
    components = sorted({str(d.get("BOX_COMPONENT")) for d in mine if d.get("BOX_COMPONENT")})
    everything = run("journalctl", "--no-pager", "--output=export", timeout=120)
    secrets = _secrets()
    leaked = [name for name, value in secrets.items() if value and value in everything]
    sample = {k: v for k, v in records[0].items() if k.startswith("BOX_") or k == "MESSAGE"} if records else {}
    ok = bool(records) and ids == [box_id] and bool(components) and not leaked and bool(secrets)
    return report("journal", ok, box_ids=ids, components=components, point_record=sample,
                  secrets_checked=sorted(secrets), leaked=leaked)


def _secrets() -> dict[str, str]:
    """What must never reach the journal: the enrollment token, the Box's private key."""
    found: dict[str, str] = {}
    try:
        found["enrollment token"] = json.loads((CREDENTIALS / "boxd.enroll").read_text())["token"]
    except (OSError, ValueError, KeyError):
        pass
    try:
        pem = Path("/var/lib/boxd/identity/box.key").read_text().splitlines()
        found["private key"] = "".join(line for line in pem if not line.startswith("-----"))[:48]
    except OSError:
        pass
    return found


def check_restart(name: str, sig: signal.Signals, evidence: str) -> Result:
    """Send `sig` to boxd; systemd must bring up a new one (READY again) by itself."""
    pid, restarts = wait(running_pid, 300), int(unit("NRestarts") or 0)
    if not pid:  # never kill(0): that is this process's own group
        return report(name, False, error="boxd is not running", state=unit("ActiveState"))
    since = run("date", "+%Y-%m-%d %H:%M:%S").strip()
    t0 = time.monotonic()
    os.kill(pid, sig)
    new = wait(lambda: (p := running_pid()) != pid and p, 300)
    took = round(time.monotonic() - t0, 1)
    said = [str(d.get("MESSAGE")) for d in journal("--unit=boxd.service", f"--since={since}")
            if evidence in str(d.get("MESSAGE", ""))]
    return report(name, bool(new) and bool(said) and int(unit("NRestarts") or 0) > restarts,
                  old_pid=pid, new_pid=new, seconds=took, systemd_said=said[:2],
                  restarts=int(unit("NRestarts") or 0))


def main() -> int:
    try:
        spec = json.loads((CREDENTIALS / "boxd.selftest").read_text())
    except (OSError, ValueError) as e:
        print(f"box-selftest: unusable boxd.selftest credential: {e}", file=sys.stderr)
        return 2
    checks: list[tuple[str, Callable[[], Result]]] = [("boot", check_boot)]
    if spec.get("mode") == "ready":
        checks.append(("ready", check_ready))
    if spec.get("mode") == "full":
        checks += [
            ("ready", check_ready), ("watchdog_fed", check_watchdog_fed), ("security", check_security),
            ("listeners", check_listeners), ("polkit", check_polkit),
            ("firewall", lambda: check_firewall(int(spec.get("knock_port", 7070)))),
            ("journal", lambda: check_journal(str(spec.get("box_id", "")))),
            *([("trial", check_trial)] if efi_string("LoaderBootCountPath") else []),
            ("watchdog_restart", lambda: check_restart("watchdog_restart", signal.SIGSTOP, "Watchdog timeout")),
            ("crash_restart", lambda: check_restart("crash_restart", signal.SIGSEGV, "status=11/SEGV")),
        ]
    results = []
    for name, check in checks:
        try:
            results.append(check())
        except Exception as e:  # noqa: BLE001 - a broken check is reported, and the others still run
            results.append(report(name, False, error=f"{type(e).__name__}: {e}"))
    failed = [r["check"] for r in results if not r["ok"]]
    if failed:
        for line in run("journalctl", "--boot", "--no-pager", "-n", "80", "--unit=boxd.service").splitlines():
            print(f"BOXLOG {line}")
    RESULT.write_text(json.dumps(results, indent=1))
    report("done", not failed, failed=failed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
