//! What a node's burn-in reports: per device, numbers with units, the fault counters read
//! before and after (their deltas), and what the device was doing while it was measured
//! (throttle reasons, power, temperature). The appliance judges; the agent only measures.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /api/v1/agent/burnin`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BurnInReport {
    /// The node's boot MAC; none (`""`) for a run without an appliance.
    #[serde(with = "crate::ids::optional_mac", default)]
    pub mac: Option<crate::MacAddr>,
    pub devices: Vec<DeviceResult>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    Gpu,
    Neuron,
    Cpu,
    Memory,
    Disk,
    Nic,
}

impl DeviceKind {
    /// Its name on the wire and in the appliance's store (`gpu`, `neuron`...).
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Gpu => "gpu",
            DeviceKind::Neuron => "neuron",
            DeviceKind::Cpu => "cpu",
            DeviceKind::Memory => "memory",
            DeviceKind::Disk => "disk",
            DeviceKind::Nic => "nic",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kinds_name_is_its_serde_name() {
        use DeviceKind::*;
        for k in [Gpu, Neuron, Cpu, Memory, Disk, Nic] {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }
}

/// One device's burn-in.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceResult {
    /// PCI address, disk or NIC name: unique on the node.
    pub id: String,
    pub kind: Option<DeviceKind>,
    /// e.g. `NVIDIA H100 80GB HBM3`.
    pub model: Option<String>,
    /// Driver and firmware (VBIOS) versions: a cohort is the same SKU, driver and firmware.
    pub driver: Option<String>,
    pub firmware: Option<String>,
    /// Performance figures by check name (`hbm_copy`, `gemm_bf16_p50`...).
    pub measurements: BTreeMap<String, Measurement>,
    /// Fault counters by name, as the change across the run (`ecc_uncorrected`,
    /// `remap_pending`, `gemm_mismatches`, `pattern_bad_words`...). Zero is good.
    pub counters: BTreeMap<String, u64>,
    /// XID codes the kernel logged for this device during the run.
    pub xids: Vec<u32>,
    /// How the device ran while measured, from the samples taken alongside.
    pub conditions: Option<Conditions>,
    /// Why the device could not be validated at all ("no NVIDIA driver", "neuron-ls missing",
    /// "timed out after 300 s"): always a failure, never a pass.
    pub cannot_validate: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub value: f64,
    /// e.g. `TB/s`, `TFLOP/s`, `GB/s`, `MB/s`.
    pub unit: String,
    /// 1 for the first run of the check, 2 for its retry.
    pub attempt: u32,
}

/// The clock event (throttle) reasons seen and the power and temperature reached.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Conditions {
    /// NVML clock event reasons ORed over the samples (`nvmlClocksEventReason*`).
    pub throttle_reasons: u64,
    pub power_max_w: Option<f64>,
    pub power_limit_w: Option<f64>,
    pub temperature_max_c: Option<f64>,
    pub sm_clock_min_mhz: Option<f64>,
    pub sm_clock_max_mhz: Option<f64>,
    /// Power, temperature and SM clock over the run, for the node page's charts: at most
    /// `SERIES_MAX` points, evenly thinned on a long run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub series: Vec<ConditionPoint>,
}

/// The most points a device's condition series holds.
pub const SERIES_MAX: usize = 256;

/// One sample of how a device ran, `t_s` seconds after its first sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConditionPoint {
    pub t_s: f64,
    pub power_w: Option<f64>,
    pub temperature_c: Option<f64>,
    pub sm_clock_mhz: Option<f64>,
}

/// NVML clock event reason bits (nvml.h `nvmlClocksEventReason*`).
pub mod throttle {
    pub const GPU_IDLE: u64 = 0x1;
    pub const APPLICATIONS_CLOCKS_SETTING: u64 = 0x2;
    pub const SW_POWER_CAP: u64 = 0x4;
    pub const HW_SLOWDOWN: u64 = 0x8;
    pub const SYNC_BOOST: u64 = 0x10;
    pub const SW_THERMAL: u64 = 0x20;
    pub const HW_THERMAL: u64 = 0x40;
    pub const HW_POWER_BRAKE: u64 = 0x80;
    pub const DISPLAY_CLOCKS: u64 = 0x100;
}

/// What the appliance asks a node to run (`Instruction::BurnIn`), from its SKU's profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BurnInPlan {
    /// Seconds of sustained GEMM per GPU.
    pub gemm_seconds: u32,
    /// Fraction of each GPU's free memory the pattern test covers (at least 0.9).
    pub hbm_fraction: f64,
    /// Seconds of CPU stress across all cores.
    pub cpu_seconds: u32,
    /// Fraction of free RAM the host memory pattern test covers.
    pub memory_fraction: f64,
    /// Bytes read from each disk, sequentially.
    pub disk_read_bytes: u64,
    /// Disks (kernel names) the plan lets the burn-in write to; all others are only read.
    pub disks_writable: Vec<String>,
    /// The NIC speed the rack plan cabled for, in Mb/s.
    pub nic_speed_mbps: Option<u32>,
    /// Longest any one tool may run before it counts as hung.
    pub tool_timeout_seconds: u32,
    /// When set, run only these (device id, check) pairs: the retry of a performance failure.
    #[serde(default)]
    pub only: Vec<(String, String)>,
}

/// The names both sides use for measurements (`DeviceResult::measurements`) and counters
/// (`DeviceResult::counters`).
pub mod checks {
    /// GPU device-to-device copy, bytes read + written: TB/s.
    pub const HBM_COPY: &str = "hbm_copy";
    /// Sustained bf16 GEMM 8192³, per-product rate: TFLOP/s.
    pub const GEMM_BF16_P50: &str = "gemm_bf16_p50";
    pub const GEMM_BF16_P05: &str = "gemm_bf16_p05";
    /// Host→device and device→host copies: GB/s.
    pub const PCIE_H2D: &str = "pcie_h2d";
    pub const PCIE_D2H: &str = "pcie_d2h";
    /// GPU-to-GPU copy (NVLink where present): GB/s.
    pub const P2P: &str = "p2p";
    /// Neuron collectives (nccom-test), bus bandwidth: GB/s.
    pub const COLLECTIVE_BUSBW: &str = "collective_busbw";
    /// Host: each disk's sequential read, MB/s; all cores' stress, GFLOP/s.
    pub const SEQUENTIAL_READ: &str = "sequential_read";
    pub const CPU_GFLOPS: &str = "cpu_gflops";
    /// A NIC's link speed, Mb/s.
    pub const LINK_SPEED: &str = "link_speed";

    /// Counters: words of a pattern test read back wrong (GPU HBM, host RAM).
    pub const PATTERN_BAD_WORDS: &str = "pattern_bad_words";
    pub const MEMORY_BAD_WORDS: &str = "memory_bad_words";
    /// GEMM results that differ bit for bit from the first (or another GPU's).
    pub const GEMM_MISMATCHES: &str = "gemm_mismatches";
    /// NVML, as the change across the run.
    pub const ECC_UNCORRECTED: &str = "ecc_uncorrected";
    pub const ECC_CORRECTED: &str = "ecc_corrected";
    pub const REMAP_PENDING: &str = "remap_pending";
    pub const REMAP_FAILED: &str = "remap_failed";
    pub const RETIRED_PAGES_PENDING: &str = "retired_pages_pending";
    pub const NVLINK_INACTIVE: &str = "nvlink_inactive";
    pub const NVLINK_ERRORS: &str = "nvlink_errors";
    /// NVLink replays and CRC-flit counts, as the change across the run: the link retried
    /// and recovered on its own (informational).
    pub const NVLINK_REPLAYS: &str = "nvlink_replays";
    /// 1 when a GPU's ECC is off now or will be off after the next reboot.
    pub const ECC_DISABLED: &str = "ecc_disabled";
    /// The GPU's lifetime (aggregate) uncorrected ECC count at the end of the run: an
    /// absolute count, not a change (informational; `ecc_uncorrected` is the run's change).
    pub const ECC_UNCORRECTED_AGGREGATE: &str = "ecc_uncorrected_aggregate";
    /// 1 when a GPU that reports NVLink fabric state (GB200 NVL and the like) has not
    /// completed fabric registration, or completed it with an error.
    pub const FABRIC_NOT_READY: &str = "fabric_not_ready";
    /// Fraction of a GPU's free memory the HBM pattern test held (unit `fraction`), and 1
    /// when that is less than the plan's `hbm_fraction`.
    pub const HBM_PATTERN_COVERAGE: &str = "hbm_pattern_coverage";
    pub const HBM_COVERAGE_SHORT: &str = "hbm_coverage_short";
    /// nccom-test `--check` failures.
    pub const COLLECTIVE_WRONG_RESULTS: &str = "collective_wrong_results";
    /// Write-read-verify mismatches on a writable disk.
    pub const DISK_VERIFY_ERRORS: &str = "disk_verify_errors";
}
