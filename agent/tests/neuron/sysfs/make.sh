#!/bin/sh
# Rebuilds the two Neuron sysfs trees beside this script (see ../README.md for what they are
# based on). Edit this script, not the trees.
set -eu
cd "$(dirname "$0")"
rm -rf before-2.31 from-2.31

put() { mkdir -p "$(dirname "$1")"; printf '%s\n' "$2" > "$1"; }

# A counter directory of the driver: the count since the driver loaded, and the last change.
counter() { put "$1/total" "$2"; put "$1/present" "$3"; }

# What both layouts share: the device's identity, the driver's version, the class links.
common() {
  root=$1 n=$2 serial=$3 connected=$4
  dev=$root/sys/devices/virtual/neuron_device/neuron$n
  put "$dev/connected_devices" "$connected"
  put "$dev/info/notify_delay" "-1"
  put "$dev/info/serial_number" "$serial"
  put "$dev/info/architecture/arch_type" "NDv4"
  put "$dev/info/architecture/device_name" "Trainium2"
  put "$dev/info/architecture/instance_type" "Trn2"
  put "$dev/uevent" "MAJOR=239
MINOR=$n
DEVNAME=neuron$n"
  # sysfs's link to the class, left dangling here: on a node it loops back to the devices.
  ln -s "../../../../class/neuron_device" "$dev/subsystem"
  # A link to a core, which a reader that followed links would count twice.
  ln -s "neuron_core0" "$dev/alias_core0"
  put "$root/sys/module/neuron/version" "2.30.12.0"
}

# Before driver 2.31 (aws-neuron-driver, neuron_sysfs_metrics.c): ECC counts as plain files
# in stats/hardware; the runtime's status counters under neuron_coreM/stats/status.
before() {
  root=before-2.31 n=$1 mem_ue=$2
  common "$root" "$n" "$3" "$4"
  dev=$root/sys/devices/virtual/neuron_device/neuron$n
  put "$dev/stats/hardware/mem_ecc_uncorrected" "$mem_ue"
  put "$dev/stats/hardware/mem_ecc_repairable_uncorrected" "0"
  put "$dev/stats/hardware/sram_ecc_uncorrected" "0"
  put "$dev/stats/power/utilization" "POWER_STATUS_VALID,1767225600,12.50,41.25,30.00"
  for c in application_memory dma_buffers; do
    counter "$dev/stats/memory_usage/host_mem/$c" 4096 4096
    put "$dev/stats/memory_usage/host_mem/$c/peak" 266240
  done
  for core in 0 1; do
    s=$dev/neuron_core$core/stats/status
    counter "$s/success" 1520 1
    counter "$s/failure" 0 0
    counter "$s/hw_error" 0 0
    counter "$s/hw_hbm_ue_error" 0 0
    counter "$s/hw_repairable_hbm_ue_error" 0 0
    counter "$s/hw_nc_ue_error" $((1 - core)) 0
    counter "$s/hw_dma_abort_error" 0 0
    counter "$s/hw_collectives_error" 0 0
    counter "$dev/neuron_core$core/stats/other_info/flop_count" 912345678901 0
    put "$dev/neuron_core$core/info/architecture/arch_type" "NCv3"
  done
}

# From driver 2.31: no stats/hardware. ASSUMED layout (see ../README.md): the ECC counts as
# counter directories under hardware/ecc, the status counters straight under neuron_coreM.
from() {
  root=from-2.31 n=$1 mem_ue=$2
  common "$root" "$n" "$3" "$4"
  dev=$root/sys/devices/virtual/neuron_device/neuron$n
  counter "$dev/hardware/ecc/mem_ecc_uncorrected" "$mem_ue" 0
  counter "$dev/hardware/ecc/mem_ecc_repairable_uncorrected" 0 0
  counter "$dev/hardware/ecc/sram_ecc_uncorrected" 0 0
  counter "$dev/hardware/ecc/mem_ecc_corrected" 5 1
  counter "$dev/hardware/ecc/sram_ecc_corrected" 0 0
  for core in 0 1; do
    s=$dev/neuron_core$core/status
    counter "$s/success" 1520 1
    counter "$s/hw_hbm_ue_error" 0 0
    counter "$s/hw_nc_ue_error" $((1 - core)) 0
    counter "$s/hw_dma_abort_error" 0 0
    counter "$s/hw_collectives_error" 0 0
  done
}

# Devices 0 and 1 of the trn2n.48xlarge in ../neuron-ls/trn2n-48xlarge.json. Device 1
# logged two uncorrectable memory errors before the burn-in: an old count, not a new one.
before 0 0 "9ff5434815c8bd80" "12, 3, 4, 1"
before 1 2 "9ff5434815c8bd81" "13, 0, 5, 2"
from 0 0 "9ff5434815c8bd80" "12, 3, 4, 1"
from 1 2 "9ff5434815c8bd81" "13, 0, 5, 2"
