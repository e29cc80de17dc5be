#!/usr/bin/env bash
# record.sh DEST -- record, from the machine it runs on, the sysfs and procfs files the
# agent's fact readers read (agent/src/facts), into DEST, so that `collect(DEST)` sees what
# `collect(/)` sees on that machine. Run it on a real server to add a tree to the tests.
#
# Every symlink on the way to a file is reproduced as it is (relative, as sysfs has it) and
# its target recorded too, so the readers follow the same links. Files are copied with `cat`
# (sysfs reports every attribute as 4096 bytes). An attribute whose read fails (the `speed`
# of a link that is down: EINVAL) is left out; the readers treat both the same.
# Needs: bash, coreutils. Root, for the DMI serials and the SMBIOS tables.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 DEST" >&2; exit 2; }
DEST=$(realpath -m "$1")
mkdir -p "$DEST"

# copy PATH: reproduce each symlink along the absolute PATH, then copy the file it ends at.
copy() {
    local path=$1 prefix= rest comp
    rest=${path#/}
    while [ -n "$rest" ]; do
        comp=${rest%%/*}
        if [ "$comp" = "$rest" ]; then rest=; else rest=${rest#*/}; fi
        prefix=$prefix/$comp
        if [ -L "$prefix" ]; then
            mkdir -p "$DEST$(dirname "$prefix")"
            [ -L "$DEST$prefix" ] || ln -s "$(readlink "$prefix")" "$DEST$prefix"
            if [ -e "$prefix" ]; then
                copy "$(realpath "$prefix")${rest:+/$rest}"
            fi
            return 0
        fi
    done
    if [ -f "$path" ]; then
        mkdir -p "$DEST$(dirname "$path")"
        cat "$path" > "$DEST$path" 2>/dev/null || rm -f "$DEST$path"
    fi
}

copy /proc/cpuinfo
copy /proc/meminfo
for f in sys_vendor product_name product_serial board_vendor board_name board_serial \
         bios_vendor bios_version bios_date; do
    copy "/sys/class/dmi/id/$f"
done
for e in /sys/firmware/dmi/entries/17-*; do
    [ -e "$e" ] && copy "$e/raw"
done
for c in /sys/devices/system/cpu/cpu[0-9]*; do
    copy "$c/topology/physical_package_id"
    copy "$c/topology/core_id"
done
# What udev's path_id reads on the way from a disk up to its PCI function
# (agent/src/facts/disks/by_path.rs): each device's subsystem link, every hostN beside a SCSI
# host (path_id numbers hosts from the lowest), ATA port numbers, SAS addresses and PHYs.
record_path() {
    local d h
    d=$(realpath "$1")
    while [ "$d" != /sys/devices ] && [ "$d" != / ]; do
        if [ -L "$d/subsystem" ]; then copy "$d/subsystem"; fi
        case ${d##*/} in
            host[0-9]*)
                for h in "${d%/*}"/host[0-9]*; do mkdir -p "$DEST$h"; done
                copy "/sys/class/ata_port/$(basename "${d%/*}")/port_no" ;;
            end_device-*|expander-*)
                copy "/sys/class/sas_device/${d##*/}/sas_address"
                copy "/sys/class/sas_device/${d##*/}/phy_identifier" ;;
            port-*)
                copy "/sys/class/sas_port/${d##*/}/num_phys" ;;
        esac
        d=${d%/*}
    done
}

for b in /sys/block/*; do
    copy "$b"
    # The readers skip these by name (agent/src/facts/disks.rs): the link is enough.
    case ${b##*/} in loop*|ram*|zram*|dm-*|md*|sr*|fd*|nbd*) continue ;; esac
    for f in size hidden serial queue/rotational device/model device/serial device/vpd_pg80 \
             device/vendor device/vpd_pg83 device/wwid wwid nsid; do
        copy "$b/$f"
    done
    record_path "$b"
    # With NVMe multipath, path_id goes on from the controller the disk's name carries.
    case ${b##*/} in
        nvme*)
            c=${b##*/nvme}
            c=nvme${c%%[!0-9]*}
            if [ -e "/sys/class/nvme/$c" ]; then
                copy "/sys/class/nvme/$c/subsystem"
                record_path "/sys/class/nvme/$c"
            fi ;;
    esac
done
for n in /sys/class/net/*; do
    copy "$n/address"
    for f in speed carrier device/driver; do
        copy "$n/$f"
    done
done
for d in /sys/bus/pci/devices/*; do
    for f in vendor device subsystem_vendor subsystem_device class driver \
             current_link_speed max_link_speed current_link_width max_link_width; do
        copy "$d/$f"
    done
done
echo "recorded $(find "$DEST" -type f -o -type l | wc -l) files and links in $DEST" >&2
