"""Certificate renewal as the daemon runs it: in a process of its own (standard library only here).

`renew` and `confirm` run ``python -m trust.enroll renew|confirm STATE_DIR`` and wait for its one
JSON line: the HTTPS client (requests), the key generation and the `cryptography` package live and
die in that process, never in the resident daemon (measured: they left ~13 MB in it; see
docs/performance.md, `python -m bench.renewal`). The child is killed if the caller is cancelled or
it takes longer than `TIMEOUT_S`. What to do with the staged identity (switch, try, keep or go
back) is the daemon's: `trust.identity`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path

from trust.errors import EnrollError

TIMEOUT_S = 90.0  # the interpreter, cryptography, a key, one HTTPS exchange of at most 20 s


async def renew(state_dir: Path, timeout_s: float = TIMEOUT_S) -> str:
    """Stage a renewed identity in ``identity.next`` (`trust.enroll.renew`); what was done.

    Raises:
        EnrollError: nothing was staged; the message says why.
    """
    return await _run("renew", state_dir, timeout_s)


async def confirm(state_dir: Path, timeout_s: float = TIMEOUT_S) -> str:
    """Tell the platform the renewed certificate is in use (`trust.enroll.confirm`).

    Raises:
        EnrollError: the platform could not be told; the message says why.
    """
    return await _run("confirm", state_dir, timeout_s)


async def _run(action: str, state_dir: Path, timeout_s: float) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "trust.enroll", action, str(state_dir),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate()
    except BaseException as e:  # a timeout or the caller's cancellation: the child goes too
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        if isinstance(e, TimeoutError):
            raise EnrollError(f"the {action} did not finish within {timeout_s:.0f} s") from None
        raise
    lines = out.decode("utf-8", "replace").strip().splitlines()
    try:
        said = json.loads(lines[-1]) if lines else None
    except ValueError:
        said = None
    if isinstance(said, dict) and isinstance(said.get("ok"), str) and proc.returncode == 0:
        return str(said["ok"])
    if isinstance(said, dict) and isinstance(said.get("error"), str):
        raise EnrollError(said["error"])
    tail = err.decode("utf-8", "replace").strip()[-300:]
    raise EnrollError(f"the {action} process ended with status {proc.returncode}: {tail or 'no message'}")
