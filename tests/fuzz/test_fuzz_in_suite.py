"""The downlink and configuration fuzzer (fuzz_downlink.py, atheris) runs in `make test`, for a bounded
time, from the committed corpus (`corpus/`, merged from earlier runs) and the harness's own seeds."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FUZZ_S = 20  # seconds of fuzzing per `make test`; longer runs by hand: README.md


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None,
                    reason="atheris has wheels for x86_64 only; the hypothesis properties of the decoder still run")
def test_a_bounded_fuzzing_run_finds_nothing(tmp_path: Path) -> None:
    new, artifacts = tmp_path / "new", tmp_path / "artifacts"
    new.mkdir()
    artifacts.mkdir()
    run = subprocess.run(
        [sys.executable, str(HERE / "fuzz_downlink.py"), f"-max_total_time={FUZZ_S}", "-timeout=10",
         "-rss_limit_mb=2048", f"-artifact_prefix={artifacts}/", str(new), str(HERE / "corpus")],
        capture_output=True, text=True, timeout=FUZZ_S + 180, cwd=HERE.parents[1],
    )
    found = sorted(p.name for p in artifacts.iterdir())
    tail = "\n".join(line for line in run.stderr.splitlines() if not line.startswith("INFO: Instrumenting"))[-3000:]
    assert run.returncode == 0 and not found, f"the fuzzer found {found} (rerun: README.md):\n{tail}"
    done = re.search(r"Done (\d+) runs in (\d+) second", run.stderr)
    assert done, tail
    print(f"\nfuzzing: {int(done[1]):,} executions in {done[2]} s, from {len(list((HERE / 'corpus').iterdir()))} "
          f"corpus files; {len(list(new.iterdir()))} inputs of new coverage (not kept)")
