"""Webhooks on real parts: a customer's HTTPS receiver in a network namespace, the platform's worker
in another, the users' API, and batches stored through the receiver's own path.

The namespaces are `tests.support.netns.FieldNetwork`'s, with one more pair of addresses:
`PUBLIC` (the customer's receiver, ``tests.support.hookrecv``) and the platform's side of the
same /24. They are public-looking on purpose: the platform refuses every private, loopback,
documentation and reserved address (`cloud.hooks.targets`), so a test receiver must have a
global address, and traffic to it never leaves the two namespaces (no route in the root one).
The receiver's certificate is issued by a CA of the test's own (a `cloud.pki.Pki` in the test's
directory); **the worker is told to trust that CA for the test** (`HookWorker(ca_file=...)`),
where the platform trusts the system's CAs. Names resolve through a resolver of the test's own
(`Dns`: a table, and a record of the questions), since a namespace thread cannot be given a
DNS server of its own here; it is what plays a DNS rebinding.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud.api._secrets import Seeds
from cloud.api.server import seeds_key
from cloud.hooks import HookWorker
from cloud.pki import Pki
from cloud.receiver import Receiver
from proto import wire
from proto.points import PointInfo
from tests.support.netns import ROOT, FieldNetwork, _ip, enter

PUBLIC = "45.33.0.10"  # the customer's receiver (in the field namespace)
PLATFORM = "45.33.0.1"  # the platform's worker (in the box namespace)
HOST = "hooks.customer.example"


@dataclass
class Dns:
    """The test's resolver: name -> answers (one list per question, the last repeated)."""

    table: dict[str, list[list[str]]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    def __call__(self, host: str, _port: int) -> Sequence[str]:
        self.asked.append(host)
        answers = self.table.get(host)
        if not answers:
            from cloud.hooks.errors import TargetRefusedError
            raise TargetRefusedError(f"{host} does not resolve")
        return answers.pop(0) if len(answers) > 1 else answers[0]


class HookReceiver:
    """``python -m tests.support.hookrecv`` in the field namespace; commands on its stdin."""

    def __init__(self, ns: str, cert: Path, key: Path, log: Path) -> None:
        self.log = log
        cmd = ["ip", "netns", "exec", ns, sys.executable, "-m", "tests.support.hookrecv", "--address", PUBLIC,
               "--cert", str(cert), "--key", str(key), "--log", str(log)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     bufsize=1)
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        assert self._next() == "ready"

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _next(self) -> str:
        line = self._lines.get(timeout=15)
        if line is None:
            raise AssertionError("the webhook receiver exited")
        return line

    def command(self, line: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self._next()
        assert answer.startswith("ok"), answer
        return answer[3:]

    def entries(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(x) for x in self.log.read_text().splitlines() if x]

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@dataclass
class Rig:
    net: FieldNetwork
    receiver: HookReceiver
    ca: Path
    dns: Dns
    workers: list[HookWorker] = field(default_factory=list)

    def start_worker(self, store: Any, home: Path, clock: Any = None) -> HookWorker:
        kwargs = {"clock": clock} if clock is not None else {}
        w = HookWorker(store, Seeds(seeds_key(home / "api-seeds.key")), ca_file=self.ca, resolver=self.dns,
                       **kwargs)
        w.start(prepare=lambda: enter(self.net.box_ns))
        self.workers.append(w)
        return w

    def stop_workers(self) -> None:
        while self.workers:
            self.workers.pop().stop()


@contextmanager
def rig(workdir: Path) -> Iterator[Rig]:
    """The namespaces, the test CA and the customer's receiver (stopped on exit)."""
    ca = Pki(workdir / "customer-ca")
    ca.init()
    server = ca.issue_server("hooks", [HOST, "*.customer.example", PUBLIC])
    with FieldNetwork(workdir) as net:
        _ip("-n", net.box_ns, "addr", "add", f"{PLATFORM}/24", "dev", net.interface)
        net.add_address(PUBLIC)
        receiver = HookReceiver(net.field_ns, server.cert, server.key, workdir / "received.jsonl")
        r = Rig(net, receiver, ca.root_cert, Dns({HOST: [[PUBLIC]], "tokens.customer.example": [[PUBLIC]]}))
        try:
            yield r
        finally:
            r.stop_workers()
            receiver.stop()


TABLE = [PointInfo("ahu1.temp", "degC", "float32"), PointInfo("ahu1.fan", "", "bool"),
         PointInfo("ahu1.secret", "", "float32")]


def store_batches(recv: Receiver, box_id: str, seqs: range, epoch: int = 7) -> None:
    """Batches of `box_id` through the receiver's own path (`Receiver.handle`), as a Box sends them."""
    recv.handle(box_id, "meta", wire.encode_table(TABLE))
    for seq in seqs:
        payload = wire.encode_batch(epoch, seq, wire.table_id(TABLE), 1_700_000_000_000 + seq * 1000,
                                    [wire.encode_group(0, 0, [float(seq), seq % 2 == 0, 1.5], {})])
        recv.handle(box_id, "data", payload)
