"""A customer's application on their own broker, for `make demo`: ``python -m cloud.demo_subscriber``.

What an integrator would run: paho over TLS (the broker's certificate checked against the
customer's CA and the host), a user name and a password (read from `--password-file`, 0600,
never on the command line), subscribed at QoS 1 to the connector's data topics; a line per
message (topic, the batch's id, the samples) on stdout, and `--stats`, a JSON summary the demo
shows (rewritten twice a second while messages arrive). Not a production consumer: no persistent session, no
deduplication.
"""

from __future__ import annotations

import argparse
import json
import signal
import ssl
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from boxkit.files import write_atomic

STATS_EVERY_S = 0.5


class Counter:
    """What arrived. The constructor does no I/O."""

    def __init__(self, stats: Path | None) -> None:
        self.stats_file, self.lock = stats, threading.Lock()
        self.stats: dict[str, Any] = {"messages": 0, "samples": 0, "points": 0, "last": ""}
        self.points: set[str] = set()
        self.dirty = True

    def take(self, topic: str, payload: bytes) -> None:
        try:
            doc = json.loads(payload)
            samples, ident = len(doc.get("samples", [])), str(doc.get("id", "?"))
        except (ValueError, AttributeError, TypeError):
            samples, ident = 0, "(not JSON)"
        line = f"{topic}: {ident}, {samples} samples"
        with self.lock:
            self.points.add(topic)
            self.stats.update(messages=self.stats["messages"] + 1, samples=self.stats["samples"] + samples,
                              points=len(self.points), last=line)
            self.dirty = True
        print(f"customer-broker: {line}", flush=True)

    def save(self) -> None:
        """The summary, if anything arrived since the last time."""
        with self.lock:
            if self.stats_file is None or not self.dirty:
                return
            self.dirty = False
            write_atomic(self.stats_file, json.dumps(self.stats).encode())


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="demo_subscriber", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca", type=Path, required=True, help="the CA the broker's certificate chains to (PEM)")
    p.add_argument("--username", required=True)
    p.add_argument("--password-file", type=Path, required=True)
    p.add_argument("--topic", action="append", default=[], help="a topic filter (repeat; default boxcloud/#)")
    p.add_argument("--stats", type=Path, help="a JSON summary, rewritten as messages arrive")
    a = p.parse_args(argv)
    counter = Counter(a.stats)
    topics = a.topic or ["boxcloud/#"]
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="demo-customer-app", protocol=mqtt.MQTTv5)
    try:
        c.tls_set_context(ssl.create_default_context(cafile=str(a.ca)))
        c.username_pw_set(a.username, a.password_file.read_text().strip())
    except (OSError, ssl.SSLError) as e:
        print(f"demo_subscriber: {e}", file=sys.stderr)
        return 1

    def on_connect(_c: object, _u: object, _f: object, rc: Any, _p: object) -> None:
        if rc.is_failure:
            print(f"customer-broker: the broker refused the connection: {rc}", flush=True)
            return
        c.subscribe([(t, 1) for t in topics])
        print(f"customer-broker: connected to mqtts://{a.host}:{a.port}, subscribed to {', '.join(topics)}",
              flush=True)

    c.on_connect = on_connect
    c.on_message = lambda _c, _u, m: counter.take(m.topic, bytes(m.payload))
    c.reconnect_delay_set(0.1, 2)  # type: ignore[arg-type]  # seconds: paho takes floats too
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        c.connect_async(a.host, a.port, 30)
        c.loop_start()
        while True:
            time.sleep(STATS_EVERY_S)
            counter.save()
    except KeyboardInterrupt:
        pass
    finally:
        c.disconnect()
        c.loop_stop()
        counter.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
