"""Renewal as the daemon runs it (`trust.renewal`): in a process of its own, so that the resident
daemon never holds the HTTPS client or the key-making code (docs/performance.md: ~13 MB)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from trust import renewal
from trust.errors import EnrollError


def test_the_daemon_imports_no_https_client_nor_crypto() -> None:
    probe = ("import sys, boxd.daemon, boxd.cli; "
             "print(sorted(m for m in ('requests', 'urllib3', 'cryptography', 'tuf') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_a_renewal_that_cannot_run_says_why_from_its_process(tmp_path: Path) -> None:
    with pytest.raises(EnrollError, match=r"^cannot renew: this Box is not provisioned"):
        asyncio.run(renewal.renew(tmp_path))
    with pytest.raises(EnrollError, match=r"^cannot confirm the renewal: "):
        asyncio.run(renewal.confirm(tmp_path))


def test_a_renewal_process_that_hangs_is_ended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", str(_sleeper(tmp_path)))
    with pytest.raises(EnrollError, match="did not finish within 1 s"):
        asyncio.run(renewal.renew(tmp_path, timeout_s=1.0))


def _sleeper(tmp_path: Path) -> Path:
    """An 'interpreter' that never answers."""
    exe = tmp_path / "python-that-hangs"
    exe.write_text("#!/bin/sh\nexec sleep 60\n")
    exe.chmod(0o755)
    return exe
