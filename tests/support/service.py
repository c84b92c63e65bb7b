"""A service manager for tests, in the part systemd plays for boxd.service on a generic Linux
(image/boxd.service: ``Restart=always``): run a command, start it again whenever it exits, pass
SIGTERM/SIGINT on and exit with its status once stopped.

    python -m tests.support.service [--restart-s 0.2] -- boxd --state-dir ... launch

Not systemd (there is none to run units on this machine: PID 1 is not systemd): the unit's
other settings (its sandbox, watchdog, ``Type=notify``) are shown in the Box image under QEMU
(tests/image). ``RestartSec`` is shortened to `--restart-s` so that a test waits less.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
from types import FrameType


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="service")
    p.add_argument("--restart-s", type=float, default=0.2)
    p.add_argument("command", nargs="+")
    args = p.parse_args(argv)
    stopping = threading.Event()
    child: list[subprocess.Popen[bytes]] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.set()
        if child and child[-1].poll() is None:
            child[-1].send_signal(signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    status = 0
    while not stopping.is_set():
        child.append(subprocess.Popen(args.command, stdin=subprocess.DEVNULL))
        del child[:-1]
        if stopping.is_set():
            child[-1].terminate()
        status = child[-1].wait()
        print(f"service: {args.command[-1]} exited with status {status}"
              f"{'' if stopping.is_set() else f'; starting it again in {args.restart_s} s'}",
              file=sys.stderr, flush=True)
        stopping.wait(args.restart_s)
    return status


if __name__ == "__main__":
    sys.exit(main())
