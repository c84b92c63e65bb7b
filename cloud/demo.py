"""`make demo`: the reference cloud, a simulated building, a provisioned Box, live data.

Starts, as separate processes (as they would run for real): `boxcloud run`, a Modbus
TCP building-controller simulator, a 4G modem simulator on a pty (`drivers.sim.at_modem`:
boxd's modem owner talks AT to it; the data itself goes over loopback, since a data path
needs a network namespace, i.e. root), and `boxd`; provisions the Box through `boxctl
provision` with a token from `boxcloud box add`; then shows the values as they arrive
in the cloud, and the modem's report (state, network, signal and its grade), and the data
arriving at a customer's webhook receiver on this machine (`cloud.demo_hook`) and at a customer's
own MQTT broker, through the platform's MQTT connector (`cloud.demo_broker`). It also makes an
account of the users' API owning the Box, and prints the API's URL and an API key (in `api-url`
and `api-key`, the owner's password in `api-password`). Ctrl-C (or `--duration`) stops every
process it started, cleanly.

Everything lives in `./demo-data` (made afresh at each run); logs are there too. A demo that
runs holds `demo-data/demo.lock`: a second `make demo` in the same checkout says so and leaves
it alone. The demo's Box is not started by systemd, so its `reboot` command is refused rather
than reboot this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from boxkit.errors import AlreadyRunningError
from boxkit.files import pid_lock, write_atomic
from cloud._box_cli import modem_line
from cloud.api import operator
from cloud.demo_broker import CustomerBroker as _CustomerBroker
from cloud.demo_broker import connector as _mqtt_connector
from cloud.demo_hook import WebhookReceiver as _WebhookReceiver
from cloud.demo_hook import connector as _webhook_connector
from cloud.platform import Cloud, Settings
from drivers.sim.modbus_building import building_points_toml
from proto.points import Quality

SERIAL = "DEMO-BOX-1"
# the simulated modem: no interface of its own (the data goes over loopback), reports every 10 s
_MODEM_TOML = ('[modem]\nbackend = "at"\nport = "{port}"\ninterface = ""\napn = "internet.test"\n'
               "signal_s = 2\nreport_s = 10\n\n")
LOCK = "demo.lock"
PY = sys.executable


def _port(preferred: int) -> int:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no conflict
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Demo:
    """The demo's processes. The constructor does no I/O."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """`python -m args...`, its output in `<name>.log`."""
        return self.spawn_exe(name, PY, "-m", *args)

    def spawn_exe(self, name: str, *argv: str) -> subprocess.Popen[bytes]:
        log = (self.root / f"{name}.log").open("wb")
        p = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, preexec_fn=_die_with_parent)  # noqa: PLW1509 - no threads yet
        self.procs.append((name, p))
        return p

    def stop(self) -> None:
        """Stop the processes, the Box first, and say how each ended (even if stdout is gone)."""
        for _name, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for name, p in reversed(self.procs):
            with contextlib.suppress(OSError):
                print(f"demo: stopped {name} (exit {p.returncode})", flush=True)

    def check_alive(self) -> None:
        for name, p in self.procs:
            if p.poll() is not None:
                tail = (self.root / f"{name}.log").read_text(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(f"{name} exited ({p.returncode}): " + " | ".join(tail))


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the demo itself dies, so nothing is orphaned."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _wait(cond: object, timeout: float, what: str, demo: Demo) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        demo.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _show(cloud: Cloud, started: float, hints: tuple[str, ...] = (), hook: _WebhookReceiver | None = None,
          broker: _CustomerBroker | None = None) -> int:
    latest = cloud.store.latest(SERIAL)
    box = cloud.store.box(SERIAL)
    state = "online" if box and box.online else "offline"
    lines = [f"Box {SERIAL}: {state}; {len(latest)} points in the cloud; "
             f"{time.monotonic() - started:.0f} s since start",
             f"{'POINT':<26} {'VALUE':>12} {'UNIT':<5} {'QUALITY':<10} AGE"]
    now = time.time() * 1000
    for point, ts, value, q, unit in latest:
        v = f"{value:.2f}" if isinstance(value, float) else str(value)
        lines.append(f"{point:<26} {v:>12} {unit:<5} {Quality(q).name.lower():<10} {(now - ts) / 1000:4.1f} s")
    modem = cloud.store.modem(SERIAL)
    lines.append(f"4G modem: {modem_line(modem[1]) if modem else 'no report yet'}")
    if hook is not None:
        lines.append(hook.line())
    if broker is not None:
        lines.append(broker.line(cloud.store))
    if sys.stdout.isatty():
        print("\033[H\033[J", end="")
        lines += ["", *hints]  # the screen is redrawn: say again how to look from another shell
    print("\n".join(lines), flush=True)
    return len(latest)


def _first_deliveries(hook: _WebhookReceiver, broker: _CustomerBroker, demo: Demo, started: float) -> None:
    _wait(lambda: hook.stats().get("items", 0) > 0, 60, "the first webhook delivery", demo)
    print(f"demo: first webhook delivery at the local receiver {time.monotonic() - started:.1f} s after start")
    _wait(lambda: broker.stats().get("messages", 0) > 0, 60, "the first message at the customer's broker", demo)
    print(f"demo: first message at the customer's broker's subscriber {time.monotonic() - started:.1f} s after start")


def _take(root: Path) -> int:
    """Lock the demo's directory, then empty it (but the lock): a running demo is never deleted.

    Raises:
        RuntimeError: another demo runs there.
    """
    root.mkdir(parents=True, exist_ok=True)
    try:
        fd = pid_lock(root / LOCK)
    except AlreadyRunningError as e:
        raise RuntimeError(f"a demo is already running in {root} (pid {e.pid or '?'}): use it, stop it with "
                           "Ctrl-C in its shell, or give another --dir") from None
    for child in root.iterdir():
        if child.name != LOCK:
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    return fd


def _provision(cloud: Cloud, box: Path, demo: Demo) -> bool:
    """`boxcloud box add` and `boxctl provision`, as an installer would; the TUF root as an image ships it."""
    s = cloud.settings
    token, _ = cloud.add_box(SERIAL, 3600)
    print(f"demo: boxcloud box add {SERIAL} -> enrollment token {token}")
    _wait(lambda: _can_connect(s.enroll_port), 30, "the enrollment endpoint", demo)
    r = subprocess.run([PY, "-m", "provisioning.cli", "--state-dir", str(box), "provision",
                        "--server", f"https://localhost:{s.enroll_port}", "--token", "-",
                        "--ca", str(cloud.pki.root_cert), "--serial", SERIAL],
                       capture_output=True, text=True, timeout=60, input=token + "\n")
    print(f"demo: boxctl provision -> {(r.stdout or r.stderr).strip()}")
    if r.returncode:
        return False
    root_json = cloud.ota_repo / "metadata" / "1.root.json"
    _wait(root_json.exists, 30, "the TUF repository", demo)
    (box / "ota").mkdir(exist_ok=True)
    shutil.copyfile(root_json, box / "ota" / "root.json")  # on a Box: shipped in the image
    return True


def _start(demo: Demo, cloud: Cloud, sim_port: int, hook: _WebhookReceiver, broker: _CustomerBroker) -> None:
    """The customer's broker, the cloud, the simulators and the webhook receiver; until the cloud is up."""
    s, root = cloud.settings, demo.root
    broker.spawn(demo)  # before the cloud, so it stops after it (the connector sees no broker go away)
    print(f"demo: starting the reference cloud (Mosquitto with mTLS on {s.broker_port}, "
          f"enrollment on {s.enroll_port}, the users' API on {s.api_port})")
    demo.spawn("cloud", "cloud.cli", "--home", str(cloud.home), "run")
    print(f"demo: starting the building simulator (Modbus TCP on {sim_port})")
    demo.spawn("building", "drivers.sim.modbus_building", "--host", "127.0.0.1", "--port", str(sim_port))
    print("demo: starting the 4G modem simulator (AT commands on a pty)")
    demo.spawn("modem", "drivers.sim.at_modem", "serve", "--link", str(root / "modem"),
               "--control", str(root / "modem.sock"))
    hook.spawn(demo)
    _wait((cloud.home / "broker" / "mosquitto.pid").exists, 30, "the cloud", demo)


def run(root: Path, duration: float | None) -> int:
    """Run the demo; returns the exit status (0 when data arrived)."""
    started = time.monotonic()
    try:
        lock = _take(root)  # noqa: F841 - held while the demo runs
    except RuntimeError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    demo = Demo(root)
    home = root / "cloud"
    cloud = Cloud(home)
    hook = _WebhookReceiver(root, _port(9444))
    broker = _CustomerBroker(root, _port(18884), hook.ca)
    # the operator lets webhooks and MQTT connectors reach this machine's loopback, on the receiver's
    # and the customer broker's ports only (off by default: docs/integrations.md), and trusts the demo
    # CA that signed the receiver's certificate (the broker's CA is given with its connector)
    cloud.init(broker.settings(hook.settings(Settings("localhost", _port(8883), _port(8443), "127.0.0.1",
                                                      _port(9443)))))
    sim_port = _port(15020)
    try:
        _start(demo, cloud, sim_port, hook, broker)
        box, conf = root / "box", root / "box" / "boxd.toml"
        if not _provision(cloud, box, demo):
            return 1
        password = _api_account(cloud, root)
        _webhook_connector(cloud, password, hook, demo)
        _mqtt_connector(cloud, password, broker, demo)
        _wait((root / "modem").exists, 30, "the modem simulator", demo)
        conf.write_text("[uplink]\nbatch_delay_ms = 200\n\n" + _MODEM_TOML.format(port=root / "modem")
                        + building_points_toml("127.0.0.1", sim_port))
        print("demo: starting boxd (boxd launch: it takes updates, A/B)")
        demo.spawn("boxd", "boxd.cli", "--state-dir", str(box), "--config", str(conf), "launch")
        _wait(lambda: bool(cloud.store.latest(SERIAL)), 60, "the first values in the cloud", demo)
        print(f"demo: first value stored {time.monotonic() - started:.1f} s after start; Ctrl-C stops the demo")
        _first_deliveries(hook, broker, demo, started)
        hints = (f"From another shell: .venv/bin/boxcloud --home {_rel(home)} box show {SERIAL}",
                 f"                    .venv/bin/boxctl --state-dir {_rel(box)} status   (configuration: {_rel(conf)})",
                 f"                    .venv/bin/boxctl --state-dir {_rel(box)} modem watch",
                 "Ctrl-C stops the demo.")
        print("demo: " + "\ndemo: ".join(hints), flush=True)
        while duration is None or time.monotonic() - started < duration:
            demo.check_alive()
            _show(cloud, started, hints, hook, broker)
            time.sleep(2)
        return 0 if _show(cloud, started, (), hook, broker) else 1
    except KeyboardInterrupt:
        print("\ndemo: stopping")
        return 0
    except RuntimeError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave orphans
        demo.stop()
        with contextlib.suppress(OSError):
            print(f"demo: logs and state are in {root}", flush=True)


def _api_account(cloud: Cloud, root: Path) -> str:
    """The users' API for the demo: an account owning the Box, its owner (password in a 0600 file),
    and an API key (printed, and in a 0600 file) to paste into the README's curl calls."""
    password = secrets.token_urlsafe(18)
    write_atomic(root / "api-password", password.encode() + b"\n", 0o600)
    operator.create_account(cloud.store, "demo", "demo@example.com", password)
    operator.assign_box(cloud.store, SERIAL, "demo")
    _, key, _ = operator.create_key(cloud.store, "demo@example.com", "demo", [
        "box.read", "box.data.read", "box.command.send", "box.config.read", "release.read", "deployment.read",
        "deployment.manage", "connector.read"], 7)
    write_atomic(root / "api-key", key.encode() + b"\n", 0o600)
    s = cloud.settings
    write_atomic(root / "api-url", f"https://localhost:{s.api_port}/v1\n".encode())
    print(f"demo: users' API: https://localhost:{s.api_port}/v1 (docs at /v1/docs; CA: {_rel(cloud.pki.root_cert)})")
    print(f"demo: API key of the demo account (also in {_rel(root / 'api-key')}): {key}")
    print(f"demo: its owner demo@example.com, password in {_rel(root / 'api-password')}")
    print(f"demo: try: curl --cacert {_rel(cloud.pki.root_cert)} -H \"Authorization: Bearer $(cat "
          f"{_rel(root / 'api-key')})\" \"$(cat {_rel(root / 'api-url')})/boxes/{SERIAL}/latest\"")
    return password


def _rel(path: Path) -> str:
    """A path as short as the user can type it from here."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _can_connect(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m cloud.demo` (`make demo`)."""
    p = argparse.ArgumentParser(prog="demo", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--dir", type=Path, default=Path(os.environ.get("DEMO_DIR", "demo-data")))
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    args = p.parse_args(argv)
    return run(args.dir.resolve(), args.duration)


if __name__ == "__main__":
    sys.exit(main())
