"""A release ships every package the Box's programs import (`cloud.release.PACKAGES`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cloud import release

ROOT = Path(__file__).resolve().parents[3]
# what a Box runs from a release: the daemon, the launcher, and the processes the daemon starts
ENTRY_POINTS = ("boxd.cli", "boxd.daemon", "boxd.updates", "ota.launcher", "ota.client", "trust.enroll",
                "trust.renewal", "trust.crl")


def test_a_release_holds_every_package_the_box_imports() -> None:
    ours = sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file() and p.name not in ("tests", "bench"))
    probe = (f"import importlib, sys; [importlib.import_module(m) for m in {ENTRY_POINTS!r}]; "
             f"print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}} & {set(ours)!r})))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True,
                         cwd=ROOT)
    imported = set(out.stdout.split())
    assert "cloud" not in imported and "provisioning" not in imported
    assert imported <= set(release.PACKAGES), imported - set(release.PACKAGES)
    assert set(release.PACKAGES) <= set(ours)
