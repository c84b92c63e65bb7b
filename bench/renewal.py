"""Measure the resident daemon's memory around a certificate renewal (the `renew_cert` command).

A reference cloud, a Modbus TCP simulator and one boxd process (`boxd run`); once the Box has
sent data, its RSS is read, then the platform sends `renew_cert` and, once the Box has answered
and sent data over the new certificate, its RSS is read again (and its peak, VmHWM). What a
renewal leaves in the daemon (the HTTPS client, the key and CSR code) shows as the difference.

    .venv/bin/python -m bench.renewal [--runs 3]

Figures, never assertions (this machine, x86-64; not an ARM Box).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.measure import print_figures
from tests.support.boxproc import BoxProcess
from tests.support.cloudkit import make_cloud, provision
from tests.support.simthread import SimThread
from tests.support.wait import wait_for

HEAD = "[uplink]\nbatch_delay_ms = 100\nreconnect_max_s = 2\nheartbeat_s = 5\n\n"


def _mem_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _fresh_data(cloud: object, box_id: str, since_ms: float) -> bool:
    rows = cloud.store.latest(box_id)  # type: ignore[attr-defined]
    return any(t > since_ms for _, t, _, _, _ in rows)


def one_run(work: Path, sim: SimThread, n: int) -> dict[str, float]:
    cloud = make_cloud(work / f"cloud-{n}")
    cloud.start()
    try:
        state = work / f"box-{n}"
        box_id = provision(cloud, state, f"BENCH-RENEW-{n}").box_id
        config = state / "boxd.toml"
        config.write_text(HEAD + sim.sim.points_toml(0.5))
        box = BoxProcess.start(state, config)
        try:
            box.wait_connected()
            since = time.time() * 1000
            wait_for(lambda: _fresh_data(cloud, box_id, since), 30, "data from the Box")
            time.sleep(2)  # a few poll cycles: the steady state
            before, _ = _mem_mb(box.proc.pid)
            cmd = cloud.send_command(box_id, "renew_cert", {})

            def answered() -> dict[str, object] | None:
                row = cloud.store.command(cmd)
                return row.reply if row is not None and row.status else None

            reply = wait_for(answered, 120, "the answer to renew_cert")
            assert reply is not None
            if reply.get("status") != "ok":
                raise SystemExit(f"the renewal failed: {reply}")
            since = time.time() * 1000
            wait_for(lambda: _fresh_data(cloud, box_id, since), 30, "data over the new certificate")
            time.sleep(2)
            after, peak = _mem_mb(box.proc.pid)
        finally:
            box.stop()
    finally:
        cloud.stop()
    return {"before": before, "after": after, "peak": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp, SimThread(update_interval_s=0.2) as sim:
        for n in range(args.runs):
            runs.append(one_run(Path(tmp), sim, n))

    def med(key: str) -> float:
        return round(statistics.median(r[key] for r in runs), 1)

    print_figures({
        "daemon RSS before the renewal, MB (median)": med("before"),
        "daemon RSS after the renewal, MB (median)": med("after"),
        "daemon peak RSS (VmHWM) after the renewal, MB (median)": med("peak"),
        "runs": len(runs),
    })


if __name__ == "__main__":
    main()
