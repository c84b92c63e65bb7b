#!/usr/bin/env bash
# Install what `make demo` and `make test` need, and only what is missing:
# Debian packages with apt-get, Python dependencies into .venv. Quick when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(mosquitto mosquitto-clients mosquitto-dev libmosquitto-dev libsystemd-dev pkg-config python3-venv python3-dev gcc iproute2 nftables faketime libfuse2 ca-certificates)
# the README's calls of the users' API (tests/integration/test_readme.py runs them)
DEB_PACKAGES+=(curl)
# The fake ModemManager of the modem's tests (issue 16): a private D-Bus (dbus-daemon) and
# python-dbusmock, which runs under Debian's python3 with its dbus-python and GLib bindings.
DEB_PACKAGES+=(dbus-daemon python3-dbus python3-gi)
# The Box image (image/build.sh) and its VM tests (tests/image): mmdebstrap, file systems and a
# partition table on plain files, QEMU with UEFI firmware.
DEB_PACKAGES+=(mmdebstrap e2fsprogs dosfstools mtools fdisk qemu-system-x86 qemu-utils ovmf)
# PostgreSQL 15 (Debian's): the platform's store at scale; the tests start throwaway servers of
# their own (tests/support/pgserver.py) and never use the distribution's cluster (left as it is:
# an operator may run the platform's database there, README "PostgreSQL")
DEB_PACKAGES+=(postgresql-15)
VENV=.venv
STAMP=$VENV/.installed

missing=()
for p in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "bootstrap: installing Debian packages: ${missing[*]}"
    SUDO=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || { echo "bootstrap: need root or sudo to install ${missing[*]}" >&2; exit 1; }
        SUDO=sudo
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The distribution's broker service is not ours: the reference cloud starts its own Mosquitto.
if command -v systemctl >/dev/null && systemctl is-active --quiet mosquitto 2>/dev/null; then
    systemctl disable --now mosquitto >/dev/null 2>&1 || true
fi

# pip, quietly; this machine's pip configuration warns about local index folders: not ours to show.
pip_install() {
    local log rc=0
    log=$(mktemp)
    "$VENV/bin/python" -m pip install -q "$@" >"$log" 2>&1 || rc=$?
    if [ $rc != 0 ]; then grep -v "^WARNING: Location" "$log" >&2 || true; fi
    rm -f "$log"
    return $rc
}

PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
    echo "bootstrap: creating $VENV"
    "$PY" -m venv "$VENV"
fi
want=$(cat setup.cfg pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
    echo "bootstrap: installing Python dependencies into $VENV"
    pip_install --upgrade pip
    pip_install -e ".[systemd,cloud,test,lint]"
    echo "$want" > "$STAMP"
fi

# python-dbusmock (pinned), beside the venv: drivers/sim/fake_mm.py runs it with Debian's python3
DBUSMOCK=python-dbusmock==0.38.1
if [ "$(cat "$VENV/dbusmock/.version" 2>/dev/null)" != "$DBUSMOCK" ]; then
    rm -rf "$VENV/dbusmock"
    pip_install --no-deps --target "$VENV/dbusmock" "$DBUSMOCK"
    echo "$DBUSMOCK" > "$VENV/dbusmock/.version"
fi
