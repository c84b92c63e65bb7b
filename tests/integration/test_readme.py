"""The README's demo walk-through, run as written against a running `make demo` (`python -m cloud.demo`).

The commands are read from the README (between `<!-- walkthrough -->` and `<!-- /walkthrough -->`),
so the README cannot drift from what works: each runs from the directory that holds `demo-data/`,
as a user's second shell would, with `.venv/bin/` pointing at this virtualenv. A command ends
with the exit status its comment names (`# exit 4: ...`), else 0, and never shows a traceback.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.wait import wait_for

README = Path(__file__).resolve().parents[2] / "README.md"


def walkthrough() -> list[tuple[str, int]]:
    text = README.read_text()
    block = text.split("<!-- walkthrough -->", 1)[1].split("<!-- /walkthrough -->", 1)[0]
    commands = []
    for line in block.splitlines():
        if line.startswith((".venv/bin/", "curl ")):
            m = re.search(r"#\s*exit (\d+)", line)
            commands.append((line, int(m[1]) if m else 0))
    return commands


def test_the_readme_lists_a_walkthrough() -> None:
    names = " ".join(c for c, _ in walkthrough())
    assert "boxctl --state-dir demo-data/box status" in names and "config diff" in names


def test_the_readme_walkthrough_runs_as_written_against_a_running_demo(tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    log = (tmp_path / "demo.out").open("wb")
    demo = subprocess.Popen([sys.executable, "-m", "cloud.demo"], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(README.parent)})
    try:
        wait_for(lambda: b"first message at the customer's broker" in (tmp_path / "demo.out").read_bytes()
                 or demo.poll() is not None, 120, "the demo's first values, at the webhook receiver and the broker")
        assert demo.poll() is None, (tmp_path / "demo.out").read_text()[-2000:]
        for line, expected in walkthrough():
            command = line.split("  #", 1)[0].replace(".venv/bin/", f"{bin_dir}/")
            r = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=180)
            shown = f"{line}\n--- exit {r.returncode}\n{r.stdout[-1500:]}\n--- stderr\n{r.stderr[-1500:]}"
            assert r.returncode == expected, shown
            assert "Traceback" not in r.stderr + r.stdout, shown
            if "boxctl" in line and " modem " in line:  # the demo's simulated modem, through boxd
                assert ("Signal:" in r.stdout and "connected" in r.stdout) if "status" in command else \
                    r.stdout.count("RSRP") == 3, shown
            elif "/connectors/1" in command:  # the demo's webhook connector, enabled, delivering
                doc = json.loads(r.stdout)
                assert doc["state"] == "enabled" and doc["delivered"] > 0 and doc["last_error"] == "", shown
            elif "/connectors/2" in command:  # the demo's MQTT connector, connected to the customer's broker
                doc = json.loads(r.stdout)
                assert doc["kind"] == "mqtt" and doc["link"] == "connected" and doc["delivered"] > 0, shown
            elif "customer-broker.log" in command:  # what the customer's subscriber received
                assert r.stdout.count("customer-broker: boxcloud/DEMO-BOX-1/") == 3, shown
            elif "status" in command and "boxctl" in command:  # right after make demo, the Box is found and well
                assert "boxd:" in r.stdout and "running" in r.stdout and "bus ahu1" in r.stdout, shown
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(60)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()
        log.close()
    out = (tmp_path / "demo.out").read_text()
    assert "demo: stopped boxd (exit 0)" in out and "demo: stopped cloud (exit 0)" in out, out[-2000:]
