"""The Box's configuration files on disk: the running one, the last good one, the version handled.

A pushed configuration is applied atomically (`boxkit.files.write_atomic`: temporary file,
fsync, rename, fsync of the directory). Before the new text replaces the configuration file,
the text that was running is kept as ``<state>/config.last-good.toml``: a rollback (the
new configuration fails at run time) writes it back the same way. ``<state>/config.version``
holds the highest version the Box has handled (applied, rejected or rolled back): the
platform's retained push comes again at every connection and must not be applied twice.

At start, a configuration file that cannot be loaded falls back to the last good one
(`load_at_start`), so a Box that lost power during a bad configuration's probation comes
back with the configuration that worked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from pathlib import Path

import boxconfig as config
from boxconfig.errors import ConfigError
from boxkit.files import write_atomic

log = logging.getLogger("boxd.reconfig")

LAST_GOOD = "config.last-good.toml"
VERSION_FILE = "config.version"
VERSIONS_FILE = "config.versions.json"  # {sha256 of a pushed text: its version}, the last few applied
KEEP_VERSIONS = 8
DEFAULT_PROBATION_S = 60.0


def load_at_start(config_path: Path, state_dir: Path) -> tuple[config.BoxConfig, bytes]:
    """The configuration to start with, and its text: the configuration file, or the last
    good one when the file cannot be loaded (said in the log).

    Raises:
        ConfigError: neither can be loaded (the message is the configuration file's problem).
    """
    cache = state_dir / config.CACHE_FILE
    try:
        cfg = config.load(config_path, cache)
        return cfg, config_path.read_bytes()
    except (ConfigError, OSError) as e:
        first = e if isinstance(e, ConfigError) else ConfigError(f"cannot read the configuration {config_path}: {e}")
    last = state_dir / LAST_GOOD
    try:
        cfg = config.load(last, cache)
        text = last.read_bytes()
    except (ConfigError, OSError):
        raise first from None
    log.warning("%s; starting with the last good configuration %s instead", first, last)
    return cfg, text


class ConfigFiles:
    """The configuration file, its last good copy and the version handled, in one place."""

    def __init__(self, config_path: Path, state_dir: Path, running: bytes = b"") -> None:
        self.config_path = config_path
        self.last_good = state_dir / LAST_GOOD
        self.version_file = state_dir / VERSION_FILE
        self.versions_file = state_dir / VERSIONS_FILE
        self._running = b""
        self._digest = ""
        self.running = running

    @property
    def running(self) -> bytes:
        """The text of the configuration that runs now."""
        return zlib.decompress(self._running) if self._running else b""

    @running.setter
    def running(self, text: bytes) -> None:
        # held compressed: read only when a push or a rollback needs it, and 10,000 points of TOML
        # are 0.8 MB as text, ~30 kB compressed (docs/performance.md, "The whole service's memory")
        self._running = zlib.compress(text, 1) if text else b""
        self._digest = hashlib.sha256(text).hexdigest()

    def digest(self) -> str:
        """The SHA-256 (hex) of the running configuration's text."""
        return self._digest

    def _versions(self) -> dict[str, int]:
        try:
            held = json.loads(self.versions_file.read_bytes())
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in held.items() if isinstance(v, int)} if isinstance(held, dict) else {}

    def remember(self, text: bytes, version: int) -> None:
        """Note that `text` is the platform's configuration `version` (for status reports)."""
        held = self._versions()
        held.pop(hashlib.sha256(text).hexdigest(), None)
        held[hashlib.sha256(text).hexdigest()] = version
        try:
            write_atomic(self.versions_file, json.dumps(dict(list(held.items())[-KEEP_VERSIONS:])).encode(), 0o600)
        except OSError as e:
            log.warning("cannot keep the configuration versions in %s: %s", self.versions_file, e)

    def running_version(self) -> int | None:
        """The platform's version of the running configuration; None for a file written on the Box."""
        return self._versions().get(self.digest())

    def handled_version(self) -> int:
        """The highest version handled so far (0: none, or the file is unreadable)."""
        try:
            v = int(self.version_file.read_text().strip())
        except (OSError, ValueError):
            return 0
        return max(v, 0)

    def set_handled(self, version: int) -> None:
        """Remember that `version` was handled (durably)."""
        write_atomic(self.version_file, f"{version}\n".encode(), 0o600)

    def install(self, text: bytes, *, keep_running: bool = True) -> None:
        """Make `text` the configuration file; with `keep_running`, what ran until now becomes
        the last good one (without, the last good one stays as it was)."""
        if keep_running and self._running:
            write_atomic(self.last_good, self.running, 0o600)
        write_atomic(self.config_path, text, 0o600)
        self.running = text

    def restore(self) -> bytes:
        """Write the last good configuration back as the configuration file; its text.

        Raises:
            OSError: there is no last good configuration.
        """
        text = self.last_good.read_bytes()
        write_atomic(self.config_path, text, 0o600)
        self.running = text
        return text
