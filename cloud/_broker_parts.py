"""What the broker is made of besides its process (`cloud.broker`): the dynamic-security roles
(each Box's own, the receiver's and the admin's, every pattern from `proto.topics`), the
`boxguard` plugin compiled from `cloud/boxguard.c` with a header generated from `proto.topics`,
the dynamic-security plugin found, and the cloud's home made private.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from boxkit.files import private_dir, temp_path, write_atomic
from cloud.errors import BrokerError
from proto import topics

CONTROL = "$CONTROL/dynamic-security/v1"
GUARD_SOURCE = Path(__file__).with_name("boxguard.c")
GUARD_HEADER = "boxguard_rules.h"  # generated from proto.topics beside the compiled plugin
# Per-Box publish rates the broker enforces (boxguard): far above what a Box sends, even draining a
# backlog of days; a Box over them gets its messages refused (it keeps and resends them).
BOX_LIMITS = {"msgs_per_s": 50.0, "msgs_burst": 500.0, "bytes_per_s": 1024.0 * 1024, "bytes_burst": 16.0 * 1024 * 1024}
RECEIVER, ADMIN = "cloud:receiver", "cloud:admin"
MAX_RECEIVERS = 16  # receivers sharing the uplink: "cloud:receiver", then "cloud:receiver-2" and on
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


def service_roles() -> list[dict[str, object]]:
    ctl = "$CONTROL/dynamic-security/#"
    # the admin clears what a revoked Box left retained (cloud.broker.Broker.clear_retained)
    retained = [{"acltype": "publishClientSend", "topic": topics.up(topics.ANY, leaf), "allow": True}
                for leaf in topics.RETAINED_UP]
    return [
        {"rolename": "receiver", "acls": [
            {"acltype": "subscribePattern", "topic": topics.up_filter(), "allow": True},
            # a shared subscription is checked with its "$share/<group>/" (Mosquitto 2.0's dynsec)
            {"acltype": "subscribePattern", "topic": topics.shared_up_filter(topics.ANY), "allow": True},
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


def receiver_clients() -> list[dict[str, object]]:
    """The dynsec clients of the receivers (each its own certificate, the one role "receiver", whose
    patterns allow the shared subscription ``$share/<group>/boxes/+/up/#`` too)."""
    names = [RECEIVER, *(f"{RECEIVER}-{n}" for n in range(2, MAX_RECEIVERS + 1))]
    return [{"username": name, "roles": [{"rolename": "receiver"}]} for name in names]


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


def find_plugin() -> str:
    for d in _PLUGIN_DIRS:
        p = Path(d) / "mosquitto_dynamic_security.so"
        if p.exists():
            return str(p)
    raise BrokerError("Mosquitto's dynamic-security plugin is not installed (package mosquitto)")
