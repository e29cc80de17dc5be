#!/usr/bin/env bash
# Peer benchmark for docs/benchmarks.md: build a Debian 12 (bookworm) whole-disk image
# equivalent to images/debian12-hardened.toml with a peer tool, for comparison with
# `provisioner image build debian12-hardened`. PEER=mkosi (Debian 12 package: mkosi 14) or
# PEER=debos (Debian 12 package: debos 1.1.1, fakemachine UML backend, no KVM needed).
# PEER=auto (default) takes mkosi when the host kernel can mount vfat (mkosi 14 mounts the
# ESP with the host kernel; on a kernel without vfat it fails with
# "mount: .../root/efi: unknown filesystem type 'vfat'"), debos otherwise: debos formats and
# mounts inside its user-mode-linux machine, whose kernel has vfat.
#
# What it measures (the peer only; our own figures are measured separately):
#   - wall seconds of a cold build (empty package cache dir) and of a warm build
#     (mkosi: the same --cache dir reused; mkosi 14 caches only the .debs, not the tree.
#      debos 1.1.1 has no package cache: its "warm" build is a plain second run);
#   - the raw image size: apparent (du --apparent-size) and allocated (du);
#   - the sha256 of both raw images, equal or not, with SOURCE_DATE_EPOCH set to the
#     recipe's epoch (neither mkosi 14 nor debos 1.1.1 makes the image reproducible from it);
#   - size and wall seconds of `zstd -T0 -9` of the cold image.
#
# How to run (root; network to deb.debian.org, and for mkosi security.debian.org too):
#   apt-get install -y --no-install-recommends mkosi debootstrap systemd-container \
#       dosfstools mtools gdisk e2fsprogs zstd bc                          # PEER=mkosi
#   apt-get install -y --no-install-recommends debos user-mode-linux libslirp-helper \
#       parted dosfstools e2fsprogs grub2-common grub-pc-bin grub-efi-amd64-bin zstd bc  # PEER=debos
#   (fakemachine also wants /lib/systemd/systemd-resolved to exist on the host: install
#    systemd-resolved, or where that would take over /etc/resolv.conf, copy in just that
#    binary from `apt-get download systemd-resolved`.)
#   cd /work/main && sudo bash tests/bench/image_peer.sh
# Optional: KEEP_IMAGE=/path/to/image.raw copies the cold image there (e.g. for a boot check).
#   TIMEOUT_S bounds each build (default 2400 s).
#
# Differences from our image with debos: GRUB for BIOS and UEFI (removable path) as ours, same
#   1 MiB BIOS boot + 128 MiB ESP + root layout on a 16 GiB disk, static grub.cfg, initramfs-tools;
#   no hardening profile, no node agent, no bmap file.
# Differences from our image with mkosi 14:
#   UEFI only (systemd-boot + unified kernel image; mkosi 14 has no BIOS boot loader, its
#   --boot-protocols is a no-op), dracut instead of initramfs-tools (mkosi adds dracut, which
#   conflicts with initramfs-tools, so initramfs-tools is left out), ESP 256 MiB (mkosi's
#   default; the UKI lives there), no hardening profile, no node agent.
set -euo pipefail
shopt -s inherit_errexit

if [[ $(id -u) -ne 0 ]]; then
    echo "image_peer.sh: must run as root (loop devices and mounts)" >&2
    exit 1
fi

PEER=${PEER:-auto}
if [[ $PEER == auto ]]; then
    if grep -qw vfat /proc/filesystems; then PEER=mkosi; else PEER=debos; fi
fi
case $PEER in
    mkosi) tools="mkosi debootstrap systemd-nspawn mkfs.vfat" ;;
    debos) tools="debos linux.uml grub-install" ;;
    *) echo "image_peer.sh: PEER must be auto, mkosi or debos" >&2; exit 1 ;;
esac
for tool in $tools zstd sha256sum timeout bc; do
    command -v "$tool" >/dev/null || { echo "image_peer.sh: missing $tool" >&2; exit 1; }
done

TIMEOUT_S=${TIMEOUT_S:-2400}
export SOURCE_DATE_EPOCH=1764547200 # the recipe's [build] epoch, 2025-12-01T00:00:00Z

WORK=$(mktemp -d /var/tmp/image_peer.XXXXXX)
BUILD_PGID=
cleanup() {
    if [[ -n $BUILD_PGID ]]; then kill -- "-$BUILD_PGID" 2>/dev/null || true; sleep 2; fi
    # The peers unmount and detach their loop devices themselves; if one was interrupted,
    # undo what is left under WORK (mounts first, deepest first) before removing it.
    local m
    while read -r m; do umount -l "$m" 2>/dev/null || true; done < <(
        findmnt -rn -o TARGET | grep -F "$WORK" | sort -r || true)
    rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

# The recipe's packages, its kernel and its boot loader packages. mkosi: initramfs-tools is
# left out (it conflicts with the dracut mkosi 14 installs for a bootable image), and GRUB is
# installed but unused (mkosi 14 boots with systemd-boot).
PKGS=(systemd-sysv udev kmod dbus initramfs-tools linux-base
      e2fsprogs dosfstools fdisk cloud-guest-utils
      iproute2 ifupdown isc-dhcp-client netbase openssh-server
      ca-certificates less procps pciutils dmidecode ethtool
      chrony rsyslog logrotate sudo zstd
      linux-image-amd64 grub-pc-bin grub-efi-amd64-bin)
CMDLINE="quiet net.ifnames=0 console=ttyS0,115200"

build_mkosi() { # build_mkosi DIR: image in DIR/out/image.raw
    local dir=$1 p pkgs=""
    for p in "${PKGS[@]}"; do [[ $p == initramfs-tools ]] || pkgs+="${pkgs:+,}$p"; done
    mkdir -p "$dir/out" "$dir/ws" "$WORK/cache"
    # 16384 MiB disk as in the recipe: 256 MiB ESP (mkosi's default; the UKI lives there) +
    # root. "!*" drops mkosi's default "rhgb selinux=0 audit=0"; mkosi always appends "rw"
    # (so the recipe's "ro" is left out); no root=: systemd-gpt-auto-generator finds root.
    (cd "$dir" && timeout "$TIMEOUT_S" mkosi \
        --distribution debian --release bookworm \
        --mirror http://deb.debian.org/debian \
        --format gpt_ext4 --bootable \
        --esp-size 256M --root-size 16127M \
        --kernel-command-line "!*" --kernel-command-line "$CMDLINE" \
        --package "$pkgs" --hostname debian12 --bmap \
        --cache "$WORK/cache" --workspace-dir "$dir/ws" \
        --output "$dir/out/image.raw" --force build)
}

write_debos_recipe() { # write_debos_recipe FILE
    local p list=""
    for p in "${PKGS[@]}"; do list+="${list:+, }$p"; done
    cat >"$1" <<YAML
architecture: amd64
actions:
  - action: run
    description: DNS through slirp (fakemachine points resolv.conf at systemd-resolved, absent here)
    chroot: false
    command: rm -f /etc/resolv.conf && echo 'nameserver 10.0.2.3' > /etc/resolv.conf
  - action: debootstrap
    suite: bookworm
    components: [ main ]
    mirror: http://deb.debian.org/debian
    variant: minbase
    merged-usr: true
  - action: run
    description: apt sources with updates and security, as the recipe
    chroot: true
    command: printf 'deb http://deb.debian.org/debian bookworm main\ndeb http://deb.debian.org/debian bookworm-updates main\ndeb http://deb.debian.org/debian-security bookworm-security main\n' > /etc/apt/sources.list
  - action: apt
    recommends: false
    packages: [ $list ]
  - action: run
    chroot: true
    command: echo debian12 > /etc/hostname
  - action: image-partition
    imagename: image.raw
    imagesize: 16GiB
    partitiontype: gpt
    mountpoints:
      - mountpoint: /
        partition: root
      - mountpoint: /boot/efi
        partition: EFI
    partitions:
      - name: BIOS
        fs: none
        start: 1MiB
        end: 2MiB
        flags: [ bios_grub ]
      - name: EFI
        fs: vfat
        start: 2MiB
        end: 130MiB
        flags: [ boot, esp ]
      - name: root
        fs: ext4
        fslabel: root
        start: 130MiB
        end: 100%
  - action: filesystem-deploy
    setup-fstab: true
    setup-kernel-cmdline: false
  - action: run
    description: static grub.cfg (no grub-probe inside the build machine)
    chroot: true
    command: mkdir -p /boot/grub && printf 'set timeout=1\nserial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\ninsmod part_gpt\ninsmod ext2\nsearch --no-floppy --label --set=root root\nmenuentry "Debian 12" {\n  linux /vmlinuz root=LABEL=root ro $CMDLINE\n  initrd /initrd.img\n}\n' > /boot/grub/grub.cfg
  - action: run
    description: GRUB for BIOS (BIOS boot partition) and UEFI (removable path)
    chroot: false
    command: grub-install --target=i386-pc --boot-directory="\$ROOTDIR/boot" "\$IMAGE" && grub-install --target=x86_64-efi --efi-directory="\$ROOTDIR/boot/efi" --boot-directory="\$ROOTDIR/boot" --removable --no-nvram
YAML
}

build_debos() { # build_debos DIR: image in DIR/out/image.raw
    local dir=$1
    mkdir -p "$dir/out" "$dir/tmp"
    write_debos_recipe "$dir/debian12.yaml"
    # fakemachine puts its scratch disk in the current directory: run from $dir. The user-mode
    # Linux machine outlives a killed debos, so debos runs in its own process group, and that
    # group is killed (by its id) when the build ends, times out, or the script exits.
    local rc=0
    (cd "$dir" && TMPDIR="$dir/tmp" exec setsid timeout "$TIMEOUT_S" debos \
        --fakemachine-backend=uml --cpus 2 --memory 4096MB --scratchsize 8G \
        -e "SOURCE_DATE_EPOCH:$SOURCE_DATE_EPOCH" \
        --artifactdir "$dir/out" "$dir/debian12.yaml") &
    BUILD_PGID=$!
    wait "$BUILD_PGID" || rc=$?
    kill -- "-$BUILD_PGID" 2>/dev/null || true
    BUILD_PGID=
    return "$rc"
}

# timed NAME: build into WORK/NAME, log to WORK/NAME/build.log, set SECONDS_TAKEN.
timed() {
    local dir="$WORK/$1" t0 t1 rc=0
    mkdir -p "$dir"
    t0=$(date +%s.%N)
    "build_$PEER" "$dir" >"$dir/build.log" 2>&1 || rc=$?
    t1=$(date +%s.%N)
    if [[ $rc -ne 0 || ! -s $dir/out/image.raw ]]; then
        echo "$PEER build $1 failed (exit $rc); last lines of its log:" >&2
        tail -n 40 "$dir/build.log" >&2
        exit 1
    fi
    SECONDS_TAKEN=$(echo "$t1 - $t0" | bc)
}

case $PEER in
    mkosi) echo "peer: $(mkosi --version)" ;;
    debos) echo "peer: debos $(dpkg-query -W -f='${Version}' debos 2>/dev/null || echo '?') (fakemachine uml, $(linux.uml --version 2>/dev/null | head -n1 || echo uml))" ;;
esac
echo "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"

timed cold
printf 'cold build: %.1f s\n' "$SECONDS_TAKEN"
timed warm
if [[ $PEER == mkosi ]]; then
    printf 'warm build: %.1f s (package cache %s)\n' "$SECONDS_TAKEN" "$(du -sh "$WORK/cache" | cut -f1)"
else
    printf 'warm build: %.1f s (second run; debos has no package cache)\n' "$SECONDS_TAKEN"
fi

img="$WORK/cold/out/image.raw"
echo "raw image apparent size: $(du --apparent-size -B1 "$img" | cut -f1) bytes ($(du --apparent-size -h "$img" | cut -f1))"
echo "raw image allocated:     $(du -B1 "$img" | cut -f1) bytes ($(du -h "$img" | cut -f1))"
sfdisk -l "$img" 2>/dev/null | sed 's/^/  /' || true

sha_cold=$(sha256sum "$img" | cut -d' ' -f1)
sha_warm=$(sha256sum "$WORK/warm/out/image.raw" | cut -d' ' -f1)
echo "sha256 cold: $sha_cold"
echo "sha256 warm: $sha_warm"
if [[ $sha_cold == "$sha_warm" ]]; then echo "reproducible: yes (identical)"; else echo "reproducible: no (images differ)"; fi

t0=$(date +%s.%N)
zstd -q -T0 -9 "$img" -o "$WORK/image.raw.zst"
t1=$(date +%s.%N)
printf 'zstd -T0 -9: %s bytes in %.1f s\n' "$(stat -c %s "$WORK/image.raw.zst")" "$(echo "$t1 - $t0" | bc)"

if [[ -n ${KEEP_IMAGE:-} ]]; then
    cp --sparse=always "$img" "$KEEP_IMAGE"
    echo "cold image kept at $KEEP_IMAGE"
fi
