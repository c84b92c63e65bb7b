"""What the modem's owner keeps on disk, and the SIM PIN it reads (small I/O shell).

- ``<state>/modem-usage.json``: the data counted (`_modem_usage.Usage`), written atomically every
  minute, before every reset the daemon does and at stop; not fsynced each time (a power cut loses
  at most the last minute's count of an interface that also restarted).
- ``<state>/modem-ladder.json``: the recovery ladder's budget ledger and the digest of a SIM PIN
  the SIM refused, written (fsynced) before each hardware rung: a reset loop stays bounded across
  reboots, and a refused PIN is never sent again.
- The SIM PIN: the file `pin_file` of the state directory, owned by the daemon's user, mode 0600
  (or stricter); anything else is refused with what to do. The PIN is never logged.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

from boxd._modem_ladder import Ledger
from boxd._modem_usage import Usage
from boxkit import files
from drivers.modem import PIN_RE

log = logging.getLogger("boxd.modem")
USAGE_FILE, LADDER_FILE = "modem-usage.json", "modem-ladder.json"
MAX_FILE = 64 * 1024


class ModemStore:
    """The owner's files. The constructor does no I/O."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.refused_pin = ""

    def _read(self, name: str) -> object:
        path = self.dir / name
        try:
            with path.open("rb") as f:
                return json.loads(f.read(MAX_FILE))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.warning("modem: %s is unreadable (%s): starting it afresh", path, e)
            return None

    def load_usage(self) -> Usage:
        """The data counted so far."""
        return Usage.from_doc(self._read(USAGE_FILE))

    def save_usage(self, usage: Usage, *, durable: bool = False) -> None:
        """Keep the data counted (logged, not raised, when the disk refuses)."""
        try:
            files.write_atomic(self.dir / USAGE_FILE, json.dumps(usage.to_doc()).encode(), 0o600, durable=durable)
        except OSError as e:
            log.warning("modem: cannot keep the data usage in %s: %s", self.dir / USAGE_FILE, e)

    def load_ladder(self) -> Ledger:
        """The budget ledger and the refused PIN's digest."""
        doc = self._read(LADDER_FILE)
        if isinstance(doc, dict) and isinstance(doc.get("refused_pin"), str):
            self.refused_pin = str(doc["refused_pin"])[:64]
        return Ledger.from_doc(doc)

    def save_ladder(self, ledger: Ledger) -> None:
        """Keep the ledger (durable: it bounds resets across reboots)."""
        doc = {**ledger.to_doc(), "refused_pin": self.refused_pin}
        try:
            files.write_atomic(self.dir / LADDER_FILE, json.dumps(doc).encode(), 0o600)
        except OSError as e:
            log.warning("modem: cannot keep the reset budget in %s: %s", self.dir / LADDER_FILE, e)

    def read_pin(self, name: str) -> tuple[str, str]:
        """(the PIN, "") or ("", why it cannot be used)."""
        if not name:
            return "", ""
        path = self.dir / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return "", f"the PIN file {path} does not exist"
        except OSError as e:
            return "", f"the PIN file {path} cannot be read ({e.strerror})"
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
                return "", (f"the PIN file {path} must be a file of the daemon's user with mode 0600 "
                            f"(it is {stat.filemode(st.st_mode)}): chmod 600 {path}")
            text = os.read(fd, 64).decode("ascii", "replace").strip()
        finally:
            os.close(fd)
        if not PIN_RE.fullmatch(text):
            return "", f"the PIN file {path} must hold 4 to 8 digits"
        return text, ""
