"""The platform's MQTT broker: a real Mosquitto, configured and started by the cloud.

What the generated configuration enforces:
  - one listener, TLS only (no plaintext listener), TLS 1.2 or newer;
  - a client certificate is required, verified against the platform CA and the CRL;
  - the certificate's CN is the MQTT username, and the client id is forced to it
    (`use_username_as_clientid`), so a Box cannot take over another Box's session;
  - authorisation by Mosquitto's dynamic-security plugin, default deny: each Box has
    its own role that may publish only to `boxes/<id>/up/#` and subscribe only to
    `boxes/<id>/down/#` (`proto.topics` builds every pattern); the receiver and the admin are
    roles of their own;
  - the `boxguard` plugin (`cloud/boxguard.c`), compiled here with a header generated from
    `proto.topics` (the leaves, their sizes and retain rules): nothing of the namespace is
    written twice.

Revocation: Mosquitto re-reads the CRL on SIGHUP, but only new TLS handshakes see it;
a session that is already open goes on. So `revoke()` rewrites the CRL, reloads the
broker, then deletes the Box's dynsec client, which kicks its live session at once
and leaves it with no rights. This module starts processes and speaks to the broker.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from boxkit.files import private_dir, temp_path, write_atomic, write_secret
from cloud.errors import BrokerError
from cloud.pki import Pki
from cloud.store import Store
from proto import topics
from trust import tls

CONTROL = "$CONTROL/dynamic-security/v1"
GUARD_SOURCE = Path(__file__).with_name("boxguard.c")
GUARD_HEADER = "boxguard_rules.h"  # generated from proto.topics beside the compiled plugin
# Per-Box publish rates the broker enforces (boxguard): far above what a Box sends, even draining a
# backlog of days; a Box over them gets its messages refused (it keeps and resends them).
BOX_LIMITS = {"msgs_per_s": 50.0, "msgs_burst": 500.0, "bytes_per_s": 1024.0 * 1024, "bytes_burst": 16.0 * 1024 * 1024}
RECEIVER, ADMIN = "cloud:receiver", "cloud:admin"
_PLUGIN_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib/arm-linux-gnueabihf", "/usr/lib")


def box_role(box_id: str) -> dict[str, object]:
    """The dynsec role of one Box: its own uplink to publish, its own downlink to read."""
    up, down = topics.up_filter(box_id), topics.down_filter(box_id)
    return {
        "rolename": f"box:{box_id}",
        "acls": [
            {"acltype": "publishClientSend", "topic": up, "allow": True},
            {"acltype": "subscribePattern", "topic": down, "allow": True},
            {"acltype": "publishClientReceive", "topic": down, "allow": True},
        ],
    }


def _service_roles() -> list[dict[str, object]]:
    ctl = "$CONTROL/dynamic-security/#"
    # the admin clears what a revoked Box left retained (cloud.broker.Broker.clear_retained)
    retained = [{"acltype": "publishClientSend", "topic": topics.up(topics.ANY, leaf), "allow": True}
                for leaf in topics.RETAINED_UP]
    return [
        {"rolename": "receiver", "acls": [
            {"acltype": "subscribePattern", "topic": topics.up_filter(), "allow": True},
            {"acltype": "publishClientReceive", "topic": topics.up_filter(), "allow": True},
            {"acltype": "publishClientSend", "topic": topics.down_filter(), "allow": True},
        ]},
        {"rolename": "admin", "acls": [
            {"acltype": "publishClientSend", "topic": ctl, "allow": True},
            {"acltype": "subscribePattern", "topic": ctl, "allow": True},
            {"acltype": "publishClientReceive", "topic": ctl, "allow": True},
            *retained,
        ]},
    ]


def private_home(home: Path) -> None:
    """Create the cloud's home directory closed to other users (it holds customers' data).

    Run as root with a `mosquitto` user, the directory is 0710 with that user's group, so that the
    broker, which drops to it, can reach its own files below without being able to list the home;
    otherwise 0700.
    """
    private_dir(home)
    if os.geteuid() == 0:
        try:
            gid = pwd.getpwnam("mosquitto").pw_gid
        except KeyError:
            return
        os.chown(home, 0, gid)
        home.chmod(0o710)


def build_guard(out_dir: Path) -> Path:
    """The boxguard plugin (`cloud/boxguard.c` with the header `proto.topics.guard_header` makes),
    compiled for this source and header if not done yet.

    Raises:
        BrokerError: it cannot be built (gcc and Debian's mosquitto-dev missing).
    """
    source, header = GUARD_SOURCE.read_bytes(), topics.guard_header().encode()
    lib = out_dir / f"boxguard-{hashlib.sha256(source + header).hexdigest()[:12]}.so"
    if lib.exists():
        return lib
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None or not Path("/usr/include/mosquitto_broker.h").exists():
        raise BrokerError("cannot build the broker's boxguard plugin: gcc and the mosquitto-dev headers are "
                          "needed (scripts/bootstrap.sh installs them)")
    tmp = temp_path(lib)
    include = out_dir / GUARD_HEADER
    write_atomic(include, header)
    r = subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-I", str(out_dir), "-o",
                        str(tmp), str(GUARD_SOURCE)], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise BrokerError(f"cannot build the broker's boxguard plugin: {r.stderr.strip()[-500:]}")
    tmp.chmod(0o755)
    tmp.replace(lib)
    for old in out_dir.glob("boxguard-*.so"):
        if old != lib:
            old.unlink(missing_ok=True)
    return lib


def _find_plugin() -> str:
    for d in _PLUGIN_DIRS:
        p = Path(d) / "mosquitto_dynamic_security.so"
        if p.exists():
            return str(p)
    raise BrokerError("Mosquitto's dynamic-security plugin is not installed (package mosquitto)")


class Broker:
    """A Mosquitto process under `<home>/broker`. The constructor does no I/O."""

    def __init__(self, home: Path, pki: Pki, store: Store, *, host: str, port: int, bind: str = "") -> None:
        self.dir = home / "broker"
        self.pki, self.store = pki, store
        self.host, self.port, self.bind = host, port, bind
        self.conf = self.dir / "mosquitto.conf"
        self.dynsec = self.dir / "dynsec.json"
        self.pid_file = self.dir / "mosquitto.pid"
        self.log_file = self.dir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.limits: dict[str, float] = dict(BOX_LIMITS)  # boxguard's per-Box rates (see cloud/boxguard.c)

    # -- configuration --------------------------------------------------------------------

    def _run_as(self) -> str | None:
        """Started as root, Mosquitto drops to the `mosquitto` user, if that user can reach our files."""
        if os.geteuid() != 0:
            return None
        try:
            ent = pwd.getpwnam("mosquitto")
        except KeyError:
            return "root"
        for d in self.dir.resolve().parents:
            st = d.stat()
            if not (st.st_mode & 0o001 or (st.st_mode & 0o010 and st.st_gid == ent.pw_gid)):
                return "root"  # a parent directory the mosquitto user cannot traverse
        return "mosquitto"

    def write_config(self) -> None:
        """Write mosquitto.conf and the dynsec file (from the database: the source of truth)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "data").mkdir(exist_ok=True)
        user = self._run_as()
        guard = build_guard(self.dir)
        key = self.dir / "broker.key"
        write_secret(key, (self.pki.dir / "broker.key").read_bytes())  # 0600 from its first byte
        roles = _service_roles()
        clients: list[dict[str, object]] = [
            {"username": RECEIVER, "roles": [{"rolename": "receiver"}]},
            {"username": ADMIN, "roles": [{"rolename": "admin"}]},
        ]
        for b in self.store.boxes():
            if b.revoked is None:
                roles.append(box_role(b.box_id))
                clients.append({"username": b.box_id, "roles": [{"rolename": f"box:{b.box_id}"}]})
        dynsec = {
            "defaultACLAccess": {
                "publishClientSend": False, "publishClientReceive": False,
                "subscribe": False, "unsubscribe": True,
            },
            "clients": clients, "groups": [], "roles": roles,
        }
        write_atomic(self.dynsec, json.dumps(dynsec, indent=1).encode(), 0o600)
        lines = [
            "# generated by boxcloud: do not edit, it is rewritten at every start",
            "per_listener_settings false",
            "allow_anonymous false",
            f"plugin {guard}",  # first: it refuses what dynsec cannot see (retain, size, rate)
            *(f"plugin_opt_{k} {v:g}" for k, v in self.limits.items()),
            f"plugin {_find_plugin()}",
            f"plugin_opt_config_file {self.dynsec}",
            "persistence true",
            f"persistence_location {self.dir / 'data'}/",
            "autosave_interval 30",
            "persistent_client_expiration 14d",
            "max_queued_messages 100000",
            "max_packet_size 1048576",
            "max_keepalive 1200",
            f"log_dest file {self.log_file}",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "connection_messages true",
            f"pid_file {self.pid_file}",
            f"listener {self.port} {self.bind}".rstrip(),
            f"cafile {self.pki.ca_bundle}",
            f"certfile {self.pki.dir / 'broker.crt'}",
            f"keyfile {key}",
            f"crlfile {self.pki.crl}",
            "require_certificate true",
            "use_identity_as_username true",
            "use_username_as_clientid true",
            "tls_version tlsv1.2",
            f"ciphers {tls.TLS12_CIPHERS}",  # TLS 1.2: ECDHE with AEAD only (no CBC, no SHA-1)
            "ciphers_tls1.3 TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256",
        ]
        if user:
            lines.insert(3, f"user {user}")
        write_atomic(self.conf, ("\n".join(lines) + "\n").encode(), 0o600)
        if user and user != "root":
            ent = pwd.getpwnam(user)
            for p in [self.dir, self.dir / "data", key, self.dynsec, self.conf, *(self.dir / "data").iterdir()]:
                os.chown(p, ent.pw_uid, ent.pw_gid)
            for p in (self.log_file, self.pid_file):
                if p.exists():
                    os.chown(p, ent.pw_uid, ent.pw_gid)

    # -- process --------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> None:
        """Write the configuration, start Mosquitto and wait until it accepts TLS."""
        if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
            raise BrokerError("mosquitto is not installed (apt-get install mosquitto)")
        self.write_config()
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self._proc = subprocess.Popen(
            [exe, "-c", str(self.conf)], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise BrokerError(f"mosquitto exited at start: {err.strip() or self._log_tail()}")
            if self._handshake_ok():
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not accept TLS on port {self.port} within {timeout:.0f} s")

    def _handshake_ok(self) -> bool:
        ctx = self.pki.service_context("admin")
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as s, ctx.wrap_socket(
                s, server_hostname=self.host
            ):
                return True
        except (OSError, ssl.SSLError):
            return False

    def _log_tail(self) -> str:
        try:
            return self.log_file.read_text(errors="replace").strip().splitlines()[-1]
        except (OSError, IndexError):
            return "(no log)"

    def stop(self) -> None:
        """Stop the Mosquitto we started."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def exited(self) -> bool:
        """Whether the Mosquitto we started has exited on its own."""
        return self._proc is not None and self._proc.poll() is not None

    def last_log_line(self) -> str:
        """The broker log's last line (for error messages)."""
        return self._log_tail()

    def kill(self) -> None:
        """Kill Mosquitto abruptly (tests: a broker crash)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def running_pid(self) -> int | None:
        """The pid of the running broker (ours or another boxcloud process's), or None."""
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def reload(self, timeout: float = 10.0) -> None:
        """Make the broker re-read its CRL and certificates (SIGHUP), and wait until it has: a
        handshake started after this returns sees the new CRL. A no-op when it is not running.

        Mosquitto handles SIGHUP in its main loop ("Reloading config." in its log, then the
        reload, synchronously); one handshake after that line proves the loop went past it.

        Raises:
            BrokerError: the broker did not reload within `timeout`.
        """
        pid = self.running_pid()
        if pid is None:
            return
        offset = self._log_size()
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while not self._logged_since(offset, b"Reloading config."):
            if time.monotonic() > deadline or self.running_pid() is None:
                raise BrokerError(f"the broker did not reload its configuration within {timeout:.0f} s")
            time.sleep(0.02)
        while not self._handshake_ok():
            if time.monotonic() > deadline:
                raise BrokerError("the broker does not accept TLS after reloading")
            time.sleep(0.05)

    def _log_size(self) -> int:
        try:
            return self.log_file.stat().st_size
        except OSError:
            return 0

    def _logged_since(self, offset: int, text: bytes) -> bool:
        try:
            with self.log_file.open("rb") as f:
                f.seek(offset)
                return text in f.read()
        except OSError:
            return False

    # -- administration -------------------------------------------------------------------

    def admin(self, commands: list[dict[str, object]], timeout: float = 10.0) -> list[dict[str, object]]:
        """Send dynamic-security commands as cloud:admin and return the broker's answers.

        Raises:
            BrokerError: the broker cannot be reached or does not answer in time.
        """
        corr = uuid.uuid4().hex
        for i, c in enumerate(commands):
            c["correlationData"] = f"{corr}-{i}"
        answers: list[dict[str, object]] = []
        done, subscribed = threading.Event(), threading.Event()

        def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            try:
                body = json.loads(msg.payload)
            except ValueError:
                return
            for r in body.get("responses", []):
                if str(r.get("correlationData", "")).startswith(corr):
                    answers.append(r)
            if len(answers) >= len(commands):
                done.set()

        client = self._admin_client(on_message=on_message, on_subscribe=lambda *_a: subscribed.set())
        try:
            client.subscribe(f"{CONTROL}/response", 1)
            if not subscribed.wait(timeout):
                raise BrokerError("the broker did not confirm the admin subscription")
            client.publish(CONTROL, json.dumps({"commands": commands}), 1)
            if not done.wait(timeout):
                raise BrokerError("the broker did not answer the admin command in time")
        finally:
            client.disconnect()
            client.loop_stop()
        return answers

    def add_box(self, box_id: str) -> None:
        """Give a newly enrolled Box its role and client in the running broker."""
        role = box_role(box_id)
        answers = self.admin([
            {"command": "deleteClient", "username": box_id},
            {"command": "deleteRole", "rolename": role["rolename"]},
            {"command": "createRole", **role},
            {"command": "createClient", "username": box_id, "roles": [{"rolename": role["rolename"]}]},
        ])
        errors = [a for a in answers[2:] if a.get("error")]
        if errors:
            raise BrokerError(f"the broker refused to add Box {box_id}: {errors[0]['error']}")

    def _admin_client(self, **callbacks: object) -> mqtt.Client:
        """A connected MQTT client as cloud:admin, its network loop started (disconnect and stop it).

        Raises:
            BrokerError: the broker cannot be reached.
        """
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=ADMIN, protocol=mqtt.MQTTv5)
        client.tls_set_context(self.pki.service_context("admin"))
        for name, fn in callbacks.items():
            setattr(client, name, fn)
        try:
            client.connect(self.host, self.port, 30)
        except (OSError, ssl.SSLError) as e:
            raise BrokerError(f"cannot reach the broker at {self.host}:{self.port}: {e}") from e
        client.loop_start()
        return client

    def clear_retained(self, box_id: str, timeout: float = 10.0) -> None:
        """Remove what a Box left retained (its status and point table), as the admin.

        Raises:
            BrokerError: the broker cannot be reached or did not take the messages.
        """
        client = self._admin_client()
        try:
            for leaf in topics.RETAINED_UP:
                info = client.publish(topics.up(box_id, leaf), b"", 1, retain=True)
                info.wait_for_publish(timeout)
                if not info.is_published():
                    raise BrokerError(f"the broker did not take the clearing of {box_id}'s retained {leaf}")
        except (RuntimeError, ValueError) as e:
            raise BrokerError(f"cannot clear {box_id}'s retained messages: {e}") from e
        finally:
            client.disconnect()
            client.loop_stop()

    def cut_off(self, box_id: str) -> None:
        """End a Box's live session and remove its rights (call after the CRL reload)."""
        self.admin([
            {"command": "deleteClient", "username": box_id},
            {"command": "deleteRole", "rolename": f"box:{box_id}"},
        ])
