"""Which machine this is, for what a release must fit (`proto.names.HARDWARE`).

`hardware_id()`: ``$BOXD_HARDWARE``, else the first line of ``/etc/boxd/hardware`` (written into a
Box image), else ``generic-<machine>`` (``generic-x86-64``, ``generic-aarch64``). A Box reports it
and checks releases against it; `boxcloud release build` uses it when no ``--hardware`` is given.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

HARDWARE_FILE = Path("/etc/boxd/hardware")


def hardware_id() -> str:
    """This machine's hardware id: $BOXD_HARDWARE, else /etc/boxd/hardware, else generic-<machine>."""
    value = os.environ.get("BOXD_HARDWARE", "").strip()
    if not value:
        try:
            value = HARDWARE_FILE.read_text().split("\n", 1)[0].strip()
        except OSError:
            value = ""
    if not value:
        value = "generic-" + platform.machine().lower().replace("_", "-")
    return value
