"""`boxcloud receive` (one receiver process of a shared subscription group) and the receivers that
`boxcloud run --receivers N` starts and keeps running.

    boxcloud receive --member N [--group NAME]   one receiver, "cloud:receiver-N", until SIGTERM/Ctrl-C
    boxcloud run --receivers N                   N such processes beside the broker (restarted if one dies);
                                                 1 (the default): one receiver inside `run`, alone;
                                                 0: none (they run on other hosts, `boxcloud receive`)

Why several, and what makes it safe to kill one: `cloud.receiver` (storage is the acknowledgement).
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import threading
from pathlib import Path

from boxkit import clikit
from cloud._broker_parts import MAX_RECEIVERS
from cloud.platform import Cloud
from proto import topics

log = logging.getLogger("boxcloud")

GROUP = "receivers"  # the shared subscription's group name, unless told


def _member(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_RECEIVERS:
        raise argparse.ArgumentTypeError(f"not a receiver number: {text!r} (1..{MAX_RECEIVERS})")
    return int(text)


def _count(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= MAX_RECEIVERS:
        raise argparse.ArgumentTypeError(f"not a number of receivers: {text!r} (0..{MAX_RECEIVERS})")
    return int(text)


def _group(text: str) -> str:
    if not text or len(text) > 64 or any(c in text for c in "/+#$") or not text.isprintable():
        raise argparse.ArgumentTypeError(f"not a group name: {text!r} (1..64 characters, none of / + # $)")
    return text


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"not HOST:PORT: {text!r}")
    return host, int(port)


def add_parsers(sub: argparse._SubParsersAction[clikit.Parser], exits: str) -> None:
    """The `receive` subcommand."""
    r = clikit.subcommand(sub, "receive", "run one receiver process of a shared subscription group (the uplink "
                                          "shared by several receivers, each with its own certificate), until "
                                          "SIGTERM or Ctrl-C",
                          ["boxcloud --home /srv/cloud receive --member 2",
                           "boxcloud --home /srv/cloud receive --member 3 --group site-a"], exits=exits)
    r.add_argument("--member", type=_member, required=True,
                   help=f"this receiver's number, 1..{MAX_RECEIVERS}: its identity is cloud:receiver-N (its "
                        "certificate is issued the first time)")
    r.add_argument("--group", type=_group, default=GROUP,
                   help=f"the shared subscription's group, {topics.shared_up_filter('GROUP')} (default %(default)s)")
    r.add_argument("--broker", type=_address, default=None, metavar="HOST:PORT",
                   help="the broker's address as this host reaches it (a load balancer's; default: the cloud's "
                        "host and broker port); its certificate must name HOST")


def add_run_options(run: argparse.ArgumentParser) -> None:
    """`run --receivers N`."""
    run.add_argument("--receivers", type=_count, default=1,
                     help="1 (default): one receiver in this process, alone; N > 1: N receiver processes on a "
                          "shared subscription, restarted if one dies; 0: none here (run them with "
                          "'boxcloud receive')")


def cmd_receive(cloud: Cloud, args: argparse.Namespace) -> int:
    """One receiver of the group, until SIGTERM/SIGINT."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    rx = cloud.make_receiver(args.member, args.group, args.broker)
    rx.start()
    print(f"boxcloud: receiver {rx.identity} on {topics.shared_up_filter(args.group)} at {rx.host}:{rx.port}",
          flush=True)
    try:
        while not stop.wait(1.0):
            rx.monitor.check()
    finally:
        rx.stop()
    return 0


class Receivers:
    """The receiver processes `run --receivers N` keeps running. The constructor starts nothing."""

    def __init__(self, home: Path, count: int, group: str = GROUP) -> None:
        self.home, self.count, self.group = home, count, group
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def supervise(self) -> None:
        """Start the ones not running (at first, and after one died)."""
        for n in range(1, self.count + 1):
            p = self.procs.get(n)
            if p is not None and p.poll() is None:
                continue
            if p is not None:
                log.warning("receiver %d exited (%s): started again", n, p.returncode)
            self.procs[n] = subprocess.Popen(  # our own command, no shell
                [sys.executable, "-m", "cloud.cli", "--home", str(self.home), "receive", "--member", str(n),
                 "--group", self.group])

    def stop(self) -> None:
        """SIGTERM them all, wait for each (SIGKILL after 10 s)."""
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
