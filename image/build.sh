#!/usr/bin/env bash
# Build the Box image: a raw GPT disk with an EFI system partition (systemd-boot, the kernels of
# both slots), two root file systems (slots A and B, read-only ext4) and a data partition (/var).
#
#   image/build.sh [OUT_DIR]          (default build/image; `make image` runs it)
#
# Stages, each cached by the digest of what it is made of, so a rebuild does only what changed:
#   1. base:   Debian 12 by mmdebstrap, with the Python dependencies of boxd in a venv
#              (/usr/lib/boxd), as a tarball in the cache ($BOXD_IMAGE_CACHE, default
#              ~/.cache/boxd-image). Its .debs and wheels are cached there too.
#   2. tree:   the base, plus boxd (a wheel built from this tree), the files of image/, users,
#              enabled and masked units.
#   3. disk:   mkfs.ext4 -d / mkfs.vfat + mtools / sfdisk on plain files (no loop device, no
#              mount), assembled into OUT_DIR/box.img, described by OUT_DIR/box.json.
#
# The platform's root of trust shipped in the image: PLATFORM_CA=<pem> TUF_ROOT=<1.root.json>.
# Without them the image trusts a development platform kept in the cache (a reference cloud home,
# made once with `boxcloud init`), which the VM tests run (tests/image/). Needs root (chroot, file
# ownership) and the tools scripts/bootstrap.sh installs. ARCH=arm64: see image/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
TREE=$(dirname "$HERE")
OUT=$(realpath -m "${1:-$TREE/build/image}")
ARCH=${ARCH:-amd64}
SUITE=bookworm
CACHE=${BOXD_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/boxd-image}
PY=${PYTHON:-$TREE/.venv/bin/python}
PIP_INSTALLER=pip==24.3.1  # runs inside the image's chroot to install the wheels; not shipped
MIRRORS=(
    "deb http://deb.debian.org/debian $SUITE main"
    "deb http://deb.debian.org/debian $SUITE-updates main"
    "deb http://deb.debian.org/debian-security $SUITE-security main"
)

# The disk layout, version 1. The partition UUIDs are constants of the layout, not of a build:
# every release's root file system finds the data partition by them, and each boot entry names
# its root by them (an update writes a partition's content, never the partition table).
LAYOUT_VERSION=1
DISK_GUID=db846373-b259-46a1-a24f-223867664d06
ESP_UUID=3873ae03-bbd2-47a8-b19c-c878d7235ce3
ROOT_A_UUID=126c7ca4-848e-44ae-9199-41b8781cfb31
ROOT_B_UUID=e0189d88-8616-4eac-bef0-36a1981ff170
DATA_UUID=f16aa2b0-076f-44de-982b-8943bfbf098f
ESP_MIB=128
ROOT_MIB=640
DATA_MIB=512  # the queue, the journal (64 MiB at most) and a downloaded image release (~140 MiB)
ESP_TYPE=c12a7328-f81f-11d2-ba4b-00a0c93ec93b
VAR_TYPE=4d21b016-b534-45c2-a9fb-5c16e091fd2d
case $ARCH in
    amd64) KERNEL=linux-image-cloud-amd64 ROOT_TYPE=4f68bce3-e8cd-4db1-96e7-fbcaf984b709 EFI_NAME=x64
           CONSOLE=ttyS0,115200 ;;
    arm64) KERNEL=linux-image-arm64 ROOT_TYPE=b921b045-1df0-41c3-af44-4c6f280d3fae EFI_NAME=aa64
           CONSOLE=ttyAMA0,115200 ;;
    *) echo "image: ARCH must be amd64 or arm64" >&2; exit 2 ;;
esac
CMDLINE="ro console=$CONSOLE panic=5 loglevel=4 systemd.show_status=auto"

log() { printf 'image: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
digest() { sha256sum | cut -c1-16; }
now() { date +%s%N; }
elapsed() { local d=$((($(now) - $1) / 100000000)); printf '%d.%d' $((d / 10)) $((d % 10)); }

preflight() {
    [ "$(id -u)" = 0 ] || die "needs root (chroot into the image tree, file ownership); run 'sudo make image'"
    local t missing=()
    for t in mmdebstrap mkfs.ext4 tune2fs debugfs dumpe2fs mkfs.vfat mcopy sfdisk git; do
        command -v "$t" >/dev/null || missing+=("$t")
    done
    ((${#missing[@]} == 0)) || die "missing tools: ${missing[*]} (scripts/bootstrap.sh installs them)"
    [ -x "$PY" ] || die "no Python at $PY: run 'make bootstrap' first"
}

packages() { grep -v '^\s*#' "$HERE/packages.txt" | awk 'NF {print $1}' | paste -sd, -; }

# -- stage 1: the base root file system --------------------------------------------------------------

wheels() {  # the pinned Python dependencies as wheels for this machine's Python (3.11, as in the image)
    local dir=$CACHE/wheels-$ARCH-$(cat "$HERE/requirements.txt" <(echo "$PIP_INSTALLER") | digest)
    if [ ! -d "$dir" ]; then
        log "fetching the Python dependencies (PyPI) into $dir"
        rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
        "$PY" -m pip wheel -q --no-deps --wheel-dir "$dir.tmp" -r "$HERE/requirements.txt" 2>&1 | grep -v "^WARNING: Location" >&2 || true
        "$PY" -m pip download -q --no-deps --dest "$dir.tmp" "$PIP_INSTALLER" 2>&1 | grep -v "^WARNING: Location" >&2 || true
        [ "$(find "$dir.tmp" -name '*.whl' | wc -l)" -gt "$(grep -c '==' "$HERE/requirements.txt")" ] \
            || die "could not fetch every wheel of image/requirements.txt"
        mv "$dir.tmp" "$dir"
    fi
    echo "$dir"
}

build_base() {  # $1: output tarball, $2: wheel directory
    local debs=$CACHE/debs-$ARCH
    mkdir -p "$debs"
    mmdebstrap --mode=root --variant=minbase --architectures="$ARCH" --include="$(packages),$KERNEL" \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
        --skip=download/empty --format=tar \
        --setup-hook='mkdir -p "$1"/var/cache/apt/archives' \
        --setup-hook="sync-in $debs /var/cache/apt/archives" \
        --customize-hook="sync-out /var/cache/apt/archives $debs" \
        --customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb' \
        --customize-hook="copy-in $2 /tmp" \
        --customize-hook="copy-in $HERE/requirements.txt /tmp/$(basename "$2")" \
        --customize-hook='chroot "$1" python3 -m venv --without-pip /usr/lib/boxd' \
        --customize-hook="chroot \"\$1\" env SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH /usr/lib/boxd/bin/python \
            /tmp/$(basename "$2")/$(basename "$2"/pip-*.whl)/pip install -q --no-index --no-deps --no-warn-script-location \
            --find-links /tmp/$(basename "$2") -r /tmp/$(basename "$2")/requirements.txt" \
        --customize-hook="rm -rf \"\$1\"/tmp/$(basename "$2")" \
        "$SUITE" "$1" "${MIRRORS[@]}"
}

base() {  # the cached base tarball for this recipe
    local wheeldir=$1 key tar
    key=$( { declare -f build_base; packages; echo "$ARCH $SUITE $KERNEL ${MIRRORS[*]}"; ls "$wheeldir"; } | digest)
    tar=$CACHE/base-$ARCH-$key.tar
    if [ ! -f "$tar" ]; then
        log "building the base root file system (mmdebstrap, Debian $SUITE $ARCH): $tar"
        local t0; t0=$(now)
        build_base "$tar.tmp" "$wheeldir" >"$CACHE/base-$ARCH.log" 2>&1 \
            || { tail -20 "$CACHE/base-$ARCH.log" >&2; die "mmdebstrap failed (log: $CACHE/base-$ARCH.log)"; }
        mv "$tar.tmp" "$tar"
        log "base built in $(elapsed "$t0") s"
        # keep the two newest bases of this architecture
        ls -t "$CACHE"/base-"$ARCH"-*.tar | tail -n +3 | xargs -r rm -f
    fi
    echo "$tar"
}

# -- the platform's root of trust ------------------------------------------------------------------

trust() {  # prints the CA file and the TUF root file
    if [ -n "${PLATFORM_CA:-}${TUF_ROOT:-}" ]; then
        [ -f "${PLATFORM_CA:-}" ] && [ -f "${TUF_ROOT:-}" ] || die "give both PLATFORM_CA and TUF_ROOT (files)"
        echo "$PLATFORM_CA" "$TUF_ROOT"
        return
    fi
    local dev=$CACHE/dev-platform
    if [ ! -f "$dev/cloud.json" ]; then
        log "creating the development platform (PKI, TUF repository) in $dev"
        rm -rf "$dev"
        "$PY" -m cloud.cli --home "$dev" init --host localhost >/dev/null
        "$PY" -m cloud.cli --home "$dev" release list >/dev/null 2>&1
        chmod 0700 "$dev"
    fi
    echo "$dev/pki/root.crt" "$dev/ota/repo/metadata/1.root.json"
}

# -- stage 2: the image tree -----------------------------------------------------------------------

boxd_wheel() {  # $1: output directory; the wheel of this tree's tracked (and new, unignored) files
    local src=$1/src
    mkdir -p "$src"
    (cd "$TREE" && git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} cp --parents -d {} "$src" 2>/dev/null) || true
    "$PY" -m pip wheel -q --no-deps --wheel-dir "$1" "$src" 2>&1 | grep -v "^WARNING: Location" >&2 || true
    rm -rf "$src"
    ls "$1"/boxd-*.whl >/dev/null 2>&1 || die "could not build the boxd wheel"
}

in_root() { chroot "$ROOTFS" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" "$@"; }

make_tree() {  # $1: base tarball, $2: wheel directory, $3: CA, $4: TUF root
    mkdir -p "$ROOTFS"
    tar -C "$ROOTFS" --numeric-owner --xattrs --xattrs-include='*' -xf "$1"

    # boxd, from a wheel of this tree, into the venv that holds its dependencies
    mkdir -p "$ROOTFS/tmp/w"
    boxd_wheel "$ROOTFS/tmp/w"
    cp "$2"/pip-*.whl "$ROOTFS/tmp/w/"
    local pip; pip=/tmp/w/$(basename "$2"/pip-*.whl)/pip
    # with dependencies checked (already installed from requirements.txt): refuses an inconsistent pin
    in_root /usr/lib/boxd/bin/python "$pip" install -q --no-index --no-warn-script-location \
        --find-links /tmp/w "$(cd "$ROOTFS" && ls tmp/w/boxd-*.whl | sed 's|^|/|')[systemd]"
    rm -rf "$ROOTFS/tmp/w"
    local site; site=$(echo "$ROOTFS"/usr/lib/boxd/lib/python3*/site-packages)
    rm -rf "$site/cloud" "$ROOTFS/usr/lib/boxd/bin/boxcloud"  # the platform is not part of a Box
    ln -sf /usr/lib/boxd/bin/boxd "$ROOTFS/usr/bin/boxd"
    ln -sf /usr/lib/boxd/bin/boxctl "$ROOTFS/usr/bin/boxctl"

    # the files of image/
    cp -a "$HERE/rootfs/." "$ROOTFS/"
    install -m 0644 "$HERE/boxd.service" "$ROOTFS/usr/lib/systemd/system/boxd.service"
    install -m 0644 "$HERE/boxd.tmpfiles" "$ROOTFS/usr/lib/tmpfiles.d/boxd.conf"
    install -D -m 0644 "$HERE/50-boxd-reboot.rules" "$ROOTFS/usr/share/polkit-1/rules.d/50-boxd-reboot.rules"
    install -m 0755 "$HERE/nftables.conf" "$ROOTFS/etc/nftables.conf"
    install -D -m 0644 "$HERE/README.md" "$ROOTFS/usr/share/doc/boxd/README.md"
    install -D -m 0444 "$3" "$ROOTFS/usr/share/boxd/platform-ca.crt"
    install -D -m 0444 "$4" "$ROOTFS/usr/share/boxd/tuf-root.json"
    install -m 0755 -t "$ROOTFS/usr/libexec/boxd" "$HERE"/scripts/*.py
    # what the installer of an image update needs (image/scripts/install.py): the slots' partitions,
    # the kernel's command line, and the version of this release (boxd reports it as its own)
    printf '{"layout": %s, "cmdline": "%s", "partitions": {"root-a": {"partuuid": "%s", "size_mib": %s}, "root-b": {"partuuid": "%s", "size_mib": %s}}}\n' \
        "$LAYOUT_VERSION" "$CMDLINE" "$ROOT_A_UUID" "$ROOT_MIB" "$ROOT_B_UUID" "$ROOT_MIB" > "$ROOTFS/usr/share/boxd/layout.json"
    printf '{"version": "%s"}\n' "$IMAGE_VERSION" > "$ROOTFS/usr/share/boxd/release.json"
    cat > "$ROOTFS/etc/fstab" <<EOF
# The root file system (slot A or B) is mounted read-only by the initramfs: root=PARTUUID=... ro,
# from the boot entry. The data partition is /var: boxd's state and queue, the configuration
# (/var/lib/boxd-config, bound on /etc/boxd), the journal. It is kept across updates.
PARTUUID=$DATA_UUID  /var       ext4   defaults,noatime,nodev,nosuid         0 2
PARTUUID=$ESP_UUID   /efi       vfat   umask=0077,noauto,x-systemd.automount,x-systemd.idle-timeout=60  0 0
/var/lib/boxd-config /etc/boxd  none   bind                                  0 0
tmpfs                /tmp       tmpfs  mode=1777,nosuid,nodev,size=64m       0 0
EOF
    mkdir -p "$ROOTFS/efi" "$ROOTFS/etc/boxd"
    echo box > "$ROOTFS/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tbox\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$ROOTFS/etc/hosts"
    : > "$ROOTFS/etc/machine-id"  # empty: a transient id each boot on the read-only root
    ln -sf ../run/systemd/resolve/resolv.conf "$ROOTFS/etc/resolv.conf"

    # users (boxd), units
    local out
    out=$(systemd-sysusers --root="$ROOTFS" 2>&1) || die "systemd-sysusers: $out"
    local sc=(systemctl --root="$ROOTFS" --quiet)
    "${sc[@]}" enable boxd.service boxd-enroll.service boxd-boot-check.service box-selftest.service boxd-install.path \
        nftables.service systemd-networkd.service systemd-resolved.service systemd-timesyncd.service
    # no login anywhere (console, serial, virtual terminals), no first-boot questions on the console,
    # no package maintenance on a read-only root, no bootloader update behind the A/B scheme's back
    "${sc[@]}" mask getty.target getty@.service serial-getty@.service console-getty.service \
        container-getty@.service debug-shell.service systemd-firstboot.service \
        apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
        e2scrub_reap.service systemd-boot-update.service
    mkdir -p "$ROOTFS/etc/systemd/system-generators"
    ln -sf /dev/null "$ROOTFS/etc/systemd/system-generators/systemd-getty-generator"

    # the data partition's first content: /var of the tree, with boxd's default (empty) configuration
    local uid gid
    uid=$(awk -F: '$1 == "boxd" {print $3}' "$ROOTFS/etc/passwd")
    gid=$(awk -F: '$1 == "boxd" {print $4}' "$ROOTFS/etc/passwd")
    install -d -m 0750 -o "$uid" -g "$gid" "$ROOTFS/var/lib/boxd-config"
    install -m 0640 -o "$uid" -g "$gid" /dev/null "$ROOTFS/var/lib/boxd-config/boxd.toml"
    rm -rf "$ROOTFS"/var/cache/apt/* "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/log/*.log \
        "$ROOTFS"/var/cache/ldconfig/aux-cache
    mv "$ROOTFS/var" "$WORK/var" && mkdir -m 0755 "$ROOTFS/var"

    # the kernel and initramfs, for the ESP (each slot carries its own in /boot)
    KVER=$(basename "$(ls "$ROOTFS"/boot/vmlinuz-* | sort -V | tail -1)" | sed 's/^vmlinuz-//')
    # reproducible: every file dated at the commit's time
    find "$ROOTFS" "$WORK/var" -newermt "@$SOURCE_DATE_EPOCH" -print0 | xargs -0r touch -h -d "@$SOURCE_DATE_EPOCH"
}

# -- stage 3: the disk -----------------------------------------------------------------------------

mkext4() {  # $1 image, $2 size MiB, $3 label, $4 uuid, $5 source dir, $6 extra mke2fs options
    rm -f "$1" && truncate -s "$2M" "$1"
    # shellcheck disable=SC2086
    E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mkfs.ext4 -q -F -L "$3" -U "$4" -T default $6 \
        -E "root_owner=0:0,hash_seed=$4,lazy_itable_init=0" -d "$5" "$1"
    # mke2fs 1.47.0 copies each inode's access and change times from the build tree (the times of
    # this build): set them to the commit's time, so that two builds of one commit are identical
    local used
    used=$(dumpe2fs -h "$1" 2>/dev/null | awk -F: '/^Inode count/ {c = $2} /^Free inodes/ {f = $2} END {print c - f}')
    seq 1 $((used + 16)) | awk -v t="@$SOURCE_DATE_EPOCH" \
        '{printf "sif <%d> atime %s\nsif <%d> ctime %s\nsif <%d> crtime %s\n", $1, t, $1, t, $1, t}' \
        | E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH debugfs -w -f - "$1" >/dev/null 2>&1
}

make_esp() {  # $1 image
    local esp=$WORK/esp e
    mkdir -p "$esp/EFI/BOOT" "$esp/loader/entries" "$esp/a" "$esp/b"
    local efi=$ROOTFS/usr/lib/systemd/boot/efi/systemd-boot$EFI_NAME.efi
    cp "$efi" "$esp/EFI/BOOT/BOOT${EFI_NAME^^}.EFI"
    for s in a b; do
        cp "$ROOTFS/boot/vmlinuz-$KVER" "$esp/$s/vmlinuz"
        cp "$ROOTFS/boot/initrd.img-$KVER" "$esp/$s/initrd.img"
    done
    cat > "$esp/loader/loader.conf" <<EOF
timeout 0
editor no
auto-entries no
auto-firmware no
console-mode keep
EOF
    # the factory boots slot A; slot B holds the same release and has no entry until an update
    # installs one (with a boot counter: box-b+3.conf; image/README.md)
    entry a "$IMAGE_VERSION" > "$esp/loader/entries/box-a.conf"
    find "$esp" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    rm -f "$1"
    mkfs.vfat -C -F 32 -n ESP -i 3873ae03 --invariant "$1" $((ESP_MIB * 1024)) >/dev/null
    for e in EFI loader a b; do mcopy -i "$1" -s -p -m "$esp/$e" ::/; done
}

entry() {  # $1 slot (a|b), $2 version: a boot loader entry (Boot Loader Specification, type 1)
    local uuid=$ROOT_A_UUID
    [ "$1" = b ] && uuid=$ROOT_B_UUID
    cat <<EOF
title Box $2 (slot ${1^^})
sort-key box
version $2
linux /$1/vmlinuz
initrd /$1/initrd.img
options root=PARTUUID=$uuid $CMDLINE
EOF
}

assemble() {  # $1 disk image; partitions from $WORK
    local mib=1048576 esp_at=1 a_at b_at data_at total
    a_at=$((esp_at + ESP_MIB)); b_at=$((a_at + ROOT_MIB)); data_at=$((b_at + ROOT_MIB))
    total=$((data_at + DATA_MIB + 1))
    rm -f "$1" && truncate -s "${total}M" "$1"
    sfdisk -q "$1" <<EOF
label: gpt
label-id: $DISK_GUID
unit: sectors
start=$((esp_at * 2048)), size=$((ESP_MIB * 2048)), type=$ESP_TYPE, uuid=$ESP_UUID, name=esp
start=$((a_at * 2048)), size=$((ROOT_MIB * 2048)), type=$ROOT_TYPE, uuid=$ROOT_A_UUID, name=root-a
start=$((b_at * 2048)), size=$((ROOT_MIB * 2048)), type=$ROOT_TYPE, uuid=$ROOT_B_UUID, name=root-b
start=$((data_at * 2048)), size=$((DATA_MIB * 2048)), type=$VAR_TYPE, uuid=$DATA_UUID, name=data
EOF
    dd if="$WORK/esp.img" of="$1" bs=$mib seek=$esp_at conv=notrunc,sparse status=none
    dd if="$WORK/root.img" of="$1" bs=$mib seek=$a_at conv=notrunc,sparse status=none
    dd if="$WORK/root-b.img" of="$1" bs=$mib seek=$b_at conv=notrunc,sparse status=none
    dd if="$WORK/data.img" of="$1" bs=$mib seek=$data_at conv=notrunc,sparse status=none
    cat > "$OUT/box.json.tmp" <<EOF
{
 "key": "$KEY",
 "layout": $LAYOUT_VERSION,
 "arch": "$ARCH",
 "boxd_version": "$BOXD_VERSION",
 "version": "$IMAGE_VERSION",
 "release": "$OUT/release/root.img",
 "kernel": "$KVER",
 "cmdline": "$CMDLINE",
 "source_date_epoch": $SOURCE_DATE_EPOCH,
 "dev_platform": "$DEV_PLATFORM",
 "disk_mib": $total,
 "partitions": {
  "esp":    {"start_mib": $esp_at, "size_mib": $ESP_MIB, "partuuid": "$ESP_UUID"},
  "root-a": {"start_mib": $a_at, "size_mib": $ROOT_MIB, "partuuid": "$ROOT_A_UUID"},
  "root-b": {"start_mib": $b_at, "size_mib": $ROOT_MIB, "partuuid": "$ROOT_B_UUID"},
  "data":   {"start_mib": $data_at, "size_mib": $DATA_MIB, "partuuid": "$DATA_UUID"}
 },
 "root_used_mib": $(du -sm --apparent-size "$ROOTFS" | cut -f1),
 "build_s": {"base": $BASE_S, "tree": $TREE_S, "disk": $DISK_S}
}
EOF
}

# -- main ------------------------------------------------------------------------------------------

preflight
mkdir -p "$CACHE" "$OUT"
exec 9>"$CACHE/.lock"
flock 9  # one build at a time per cache (several worktrees may share it)

SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$TREE" log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH
BOXD_VERSION=$("$PY" -c 'import boxd; print(boxd.__version__)')
IMAGE_VERSION=${IMAGE_VERSION:-$BOXD_VERSION}  # the release's version (its boot entry's, what boxd reports)
read -r CA_FILE TUF_FILE < <(trust)
DEV_PLATFORM=""
[ -n "${PLATFORM_CA:-}" ] || DEV_PLATFORM=$CACHE/dev-platform

# the image's key: everything it is made of
KEY=$( {
    cat "$0" "$HERE/packages.txt" "$HERE/requirements.txt" "$CA_FILE" "$TUF_FILE"
    echo "$ARCH $SOURCE_DATE_EPOCH $IMAGE_VERSION"
    cd "$TREE" && git ls-files -z --cached --others --exclude-standard -- proto boxkit trust drivers boxconfig boxd ota provisioning image setup.cfg pyproject.toml \
        | xargs -0 sha256sum 2>/dev/null
} | digest)
if [ -f "$OUT/box.img" ] && [ -f "$OUT/release/root.img" ] && grep -q "\"key\": \"$KEY\"" "$OUT/box.json" 2>/dev/null; then
    log "$OUT/box.img is up to date ($KEY)"
    exit 0
fi

T0=$(now)
WHEELS=$(wheels)
BASE_TAR=$(base "$WHEELS")
BASE_S=$(elapsed "$T0")

WORK=$OUT/work
ROOTFS=$WORK/root
rm -rf "$WORK" && mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
T1=$(now)
log "assembling the tree (boxd $BOXD_VERSION)"
make_tree "$BASE_TAR" "$WHEELS" "$CA_FILE" "$TUF_FILE"
TREE_S=$(elapsed "$T1")

T2=$(now)
log "making the file systems and the disk"
mkext4 "$WORK/root.img" "$ROOT_MIB" root "$ROOT_A_UUID" "$ROOTFS" "-m 0 -O ^has_journal,metadata_csum_seed"
# slot B: the same file system under its own UUID (the seed keeps the checksums valid)
cp --sparse=always "$WORK/root.img" "$WORK/root-b.img"
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH tune2fs -U "$ROOT_B_UUID" "$WORK/root-b.img" >/dev/null
mkext4 "$WORK/data.img" "$DATA_MIB" data "$DATA_UUID" "$WORK/var" "-O metadata_csum_seed"
make_esp "$WORK/esp.img"
DISK_S=$(elapsed "$T2")
assemble "$OUT/box.img.tmp"
mv "$OUT/box.img.tmp" "$OUT/box.img"
# the release artefact: the root file system alone, what an update writes into the other slot
# (`boxcloud release build-image` makes a TUF target of it; image/README.md, "Updates")
mkdir -p "$OUT/release" && cp --sparse=always "$WORK/root.img" "$OUT/release/root.img.tmp"
mv "$OUT/release/root.img.tmp" "$OUT/release/root.img"
mv "$OUT/box.json.tmp" "$OUT/box.json"
log "built $OUT/box.img in $(elapsed "$T0") s (key $KEY; base $BASE_S s, tree $TREE_S s, disk $DISK_S s)"
