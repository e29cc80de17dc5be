#!/usr/bin/env bash
# node-image.sh OUTDIR -- build the lab's tiny test "node": OUTDIR/vmlinuz + OUTDIR/initrd.img
#
# Why: the lab tests boot real firmware (SeaBIOS + iPXE, OVMF) in QEMU against the appliance.
# They need something small to boot that proves the whole chain worked: this image gets an
# address by DHCP, prints one line the test can wait for on the serial console, calls the
# appliance back over HTTP and powers the VM off (so QEMU exits with -no-reboot).
#
# What it builds:
#   vmlinuz     the current Debian 12 kernel (linux-image-6.1.0-N-amd64, the version the
#               linux-image-amd64 metapackage depends on), fetched with `apt-get download`
#               and unpacked with `dpkg -x`; nothing is installed on the host.
#   initrd.img  a gzip'd newc cpio: busybox (from the busybox-static .deb), the NIC modules
#               (virtio_pci + virtio_net, e1000, and what they depend on, from the same kernel
#               package), and /init. /init:
#                 - mounts proc, sys, devtmpfs, insmods the modules in dependency order;
#                 - brings up lo and the first ethernet interface, runs `udhcpc`;
#                 - reads provisioner.url= and provisioner.mac= from /proc/cmdline;
#                 - prints   PROVISIONER-NODE up ip=<ip> url=<url> mac=<mac>
#                   (or      PROVISIONER-NODE dhcp failed);
#                 - GETs <url>/api/v1/nodes/<mac> with busybox wget (up to 5 tries, 2 s
#                   apart), prints the first 200 bytes of the answer and then
#                   PROVISIONER-NODE callback ok   or   PROVISIONER-NODE callback failed;
#                 - poweroff -f.  Every wait in it is bounded.
#
# The .debs are cached in ${PROVISIONER_LAB_CACHE:-$HOME/.cache/provisioner-lab}: a second run
# downloads nothing, and works offline. If OUTDIR already holds both files, newer than this
# script, it exits at once. The initrd is reproducible: same packages -> same bytes.
#
# Environment (all optional):
#   PROVISIONER_LAB_CACHE        download cache (default above)
#   PROVISIONER_LAB_KERNEL_PKG   kernel package to use instead of the metapackage's choice
#   PROVISIONER_LAB_MODULES      modules to include (default: "virtio_pci virtio_net e1000")
#   PROVISIONER_LAB_FORCE=1      rebuild even if OUTDIR is up to date
#
# Needs: apt-get/apt-cache/dpkg (Debian), cpio, gzip. Does not need root.
set -euo pipefail

usage() { echo "usage: $0 OUTDIR" >&2; exit 2; }
[ $# -eq 1 ] || usage
OUT=$1
SELF=$(readlink -f "$0")
log() { echo "node-image: $*" >&2; }
die() { echo "node-image: error: $*" >&2; exit 1; }

# --- up to date already? ------------------------------------------------------------------
if [ "${PROVISIONER_LAB_FORCE:-0}" != 1 ] &&
   [ "$OUT/vmlinuz" -nt "$SELF" ] && [ "$OUT/initrd.img" -nt "$SELF" ]; then
    log "$OUT/vmlinuz and $OUT/initrd.img are up to date"
    exit 0
fi

for tool in apt-get apt-cache dpkg cpio gzip find sort; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install cpio gzip?)"
done

CACHE=${PROVISIONER_LAB_CACHE:-$HOME/.cache/provisioner-lab}
mkdir -p "$CACHE" "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/node-image.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# --- fetch the .debs (cached) -------------------------------------------------------------
# fetch PKG: print the path of PKG's .deb in the cache, downloading it if it is not there.
# With no apt lists (or no network) it falls back to the newest cached .deb of that name.
fetch() {
    local pkg=$1 ver file
    ver=$(apt-cache show --no-all-versions "$pkg" 2>/dev/null | sed -n 's/^Version: //p' | head -n1 || true)
    if [ -n "$ver" ]; then
        # apt-get download names files PKG_VERSION_ARCH.deb with ':' written as %3a
        file="$CACHE/${pkg}_${ver//:/%3a}_amd64.deb"
        if [ ! -s "$file" ]; then
            log "downloading $pkg $ver"
            local sandbox=()
            [ "$(id -u)" = 0 ] && sandbox=(-o APT::Sandbox::User=root)  # no _apt warning
            (cd "$CACHE" && apt-get download -q "${sandbox[@]}" "$pkg=$ver" >&2) ||
                die "apt-get download $pkg=$ver failed (try apt-get update)"
        fi
    else
        file=$(find "$CACHE" -maxdepth 1 -name "${pkg}_*_amd64.deb" | sort -V | tail -n1)
        [ -n "$file" ] || die "apt-cache knows no $pkg and none is cached (run apt-get update)"
        log "apt-cache knows no $pkg; using cached $(basename "$file")"
    fi
    [ -s "$file" ] || die "no .deb for $pkg at $file"
    echo "$file"
}

KPKG=${PROVISIONER_LAB_KERNEL_PKG:-}
if [ -z "$KPKG" ]; then
    # The metapackage depends on exactly the current ABI's image package.
    KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null |
           sed -n 's/^ *Depends: \(linux-image-6\.1\.0-[0-9]*-amd64\)$/\1/p' | head -n1 || true)
    if [ -z "$KPKG" ]; then   # no apt lists: take the newest kernel in the cache
        KPKG=$(find "$CACHE" -maxdepth 1 -name 'linux-image-6.1.0-*-amd64_*.deb' -printf '%f\n' |
               sed -n 's/^\(linux-image-6\.1\.0-[0-9]*-amd64\)_.*/\1/p' |
               sort -V | tail -n1)
    fi
    [ -n "$KPKG" ] || die "cannot tell the kernel package (apt-get update, or set PROVISIONER_LAB_KERNEL_PKG)"
fi
KDEB=$(fetch "$KPKG")
BDEB=$(fetch busybox-static)

log "unpacking $(basename "$KDEB")"
dpkg -x "$KDEB" "$WORK/kernel"
dpkg -x "$BDEB" "$WORK/busybox"
KVER=$(find "$WORK/kernel/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' | head -n1)
MODDIR=$WORK/kernel/lib/modules/$KVER
[ -f "$WORK/kernel/boot/vmlinuz-$KVER" ] || die "no vmlinuz-$KVER in $KDEB"
[ -x "$WORK/busybox/bin/busybox" ] || die "no bin/busybox in $BDEB"

# --- stage the initramfs ------------------------------------------------------------------
ROOT=$WORK/root
mkdir -p "$ROOT"/{bin,dev,etc,lib/modules,proc,run,sys,tmp}
cp "$WORK/busybox/bin/busybox" "$ROOT/bin/busybox"
for applet in sh cat cut echo grep head ifconfig insmod ip ls mkdir mount poweroff reboot \
              route seq sleep sync tail timeout tr udhcpc usleep wget; do
    ln -s busybox "$ROOT/bin/$applet"
done

# Modules: the Debian package ships no modules.dep (depmod makes it at install time), so read
# each module's own "depends=" (.modinfo) and order them dependencies first. A module that is
# built in (modules.builtin) has no .ko and is skipped. virtio_pci is listed by itself because
# virtio_net does not depend on it (it is the bus driver that finds the device).
declare -A KO=() SEEN=()
while IFS= read -r f; do
    n=${f##*/}; n=${n%%.ko*}; KO[${n//-/_}]=$f
done < <(find "$MODDIR/kernel" -name '*.ko*')
ORDER=()
add_module() {   # add_module NAME: add NAME after its dependencies
    local m=${1//-/_} dep deps f
    [ -n "${SEEN[$m]:-}" ] && return 0
    SEEN[$m]=1
    f=${KO[$m]:-}
    if [ -z "$f" ]; then
        grep -q "/${m}.ko$" "$MODDIR/modules.builtin" 2>/dev/null ||
            grep -q "/${1}.ko$" "$MODDIR/modules.builtin" 2>/dev/null ||
            die "module $1 is neither a .ko nor built in to $KVER"
        return 0
    fi
    case $f in
        *.ko)     cp "$f" "$ROOT/lib/modules/$m.ko" ;;
        *.ko.xz)  xz -dc "$f" > "$ROOT/lib/modules/$m.ko" ;;
        *.ko.zst) zstd -qdc "$f" > "$ROOT/lib/modules/$m.ko" ;;
        *.ko.gz)  gzip -dc "$f" > "$ROOT/lib/modules/$m.ko" ;;
        *) die "unknown module file $f" ;;
    esac
    deps=$(tr '\0' '\n' < "$ROOT/lib/modules/$m.ko" | sed -n 's/^depends=//p' | head -n1)
    for dep in ${deps//,/ }; do add_module "$dep"; done
    ORDER+=("$m")
}
for m in ${PROVISIONER_LAB_MODULES:-virtio_pci virtio_net e1000}; do add_module "$m"; done
printf '%s\n' "${ORDER[@]}" > "$ROOT/lib/modules/load-order"
log "kernel $KVER, modules: ${ORDER[*]}"

cat > "$ROOT/etc/udhcpc.script" <<'EOF'
#!/bin/sh
# called by udhcpc: $1 = deconfig|bound|renew|leasefail|nak; ip, subnet, router from the lease
case "$1" in
    deconfig)
        ifconfig "$interface" 0.0.0.0 up ;;
    bound|renew)
        ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" up
        if [ -n "$router" ]; then
            route del default 2>/dev/null
            set -- $router
            route add default gw "$1" dev "$interface"
        fi
        echo "$ip" > /run/node-ip ;;
esac
exit 0
EOF

cat > "$ROOT/init" <<'EOF'
#!/bin/sh
# /init of the Provisioner lab test node (built by tests/lab/node-image.sh)
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
echo "1 4 1 7" > /proc/sys/kernel/printk   # keep kernel chatter out of the lines tests read

say() { echo "PROVISIONER-NODE $*"; }
off() { sync; poweroff -f; sleep 5; reboot -f; }   # -no-reboot makes QEMU exit on either

echo "node: loading modules"
while read -r m; do insmod "/lib/modules/$m.ko" 2>/dev/null || true; done < /lib/modules/load-order

ip link set lo up
iface=
for i in $(seq 1 50); do               # wait up to ~5 s for the NIC to appear
    for d in /sys/class/net/*; do
        n=${d##*/}
        [ "$n" = lo ] && continue
        [ "$(cat "$d/type" 2>/dev/null)" = 1 ] && { iface=$n; break 2; }
    done
    usleep 100000
done
if [ -z "$iface" ]; then
    echo "node: no ethernet interface"
    say "dhcp failed"; off
fi
echo "node: interface $iface $(cat /sys/class/net/$iface/address)"
ip link set "$iface" up

url=; mac=
for w in $(cat /proc/cmdline); do
    case "$w" in
        provisioner.url=*) url=${w#provisioner.url=} ;;
        provisioner.mac=*) mac=${w#provisioner.mac=} ;;
    esac
done
[ -n "$mac" ] || mac=$(cat "/sys/class/net/$iface/address")
url=${url%/}

# 5 DISCOVERs 2 s apart, exit if no lease (-n), quit once bound (-q); hard cap 30 s
if ! timeout 30 udhcpc -i "$iface" -n -q -t 5 -T 2 -s /etc/udhcpc.script >/dev/null 2>&1 ||
   [ ! -s /run/node-ip ]; then
    say "dhcp failed"; off
fi
say "up ip=$(cat /run/node-ip) url=$url mac=$mac"

ok=
if [ -n "$url" ]; then
    for i in 1 2 3 4 5; do
        rm -f /tmp/answer
        # not wget -T: Debian's busybox 1.35 wget segfaults with it; cap it with timeout
        if timeout 10 wget -q -O /tmp/answer "$url/api/v1/nodes/$mac"; then ok=1; break; fi
        [ "$i" = 5 ] || sleep 2
    done
    [ -s /tmp/answer ] && printf '%s\n' "$(head -c 200 /tmp/answer)"
else
    echo "node: no provisioner.url= on the kernel command line"
fi
if [ -n "$ok" ]; then say "callback ok"; else say "callback failed"; fi
off
EOF
chmod 0755 "$ROOT/init" "$ROOT/etc/udhcpc.script" "$ROOT/bin/busybox"

# --- pack, reproducibly: fixed mtimes, sorted names, root owner, no gzip timestamp --------
find "$ROOT" -exec touch -h -d @0 {} +
(cd "$ROOT" && find . -mindepth 1 | LC_ALL=C sort |
    cpio --quiet -o -H newc -R 0:0 --reproducible) | gzip -9 -n > "$WORK/initrd.img"

cp "$WORK/kernel/boot/vmlinuz-$KVER" "$WORK/vmlinuz"
mv -f "$WORK/vmlinuz" "$OUT/vmlinuz"          # initrd last: it marks the pair complete
mv -f "$WORK/initrd.img" "$OUT/initrd.img"
log "wrote $OUT/vmlinuz ($(stat -c %s "$OUT/vmlinuz") bytes), $OUT/initrd.img ($(stat -c %s "$OUT/initrd.img") bytes) for $KVER"
