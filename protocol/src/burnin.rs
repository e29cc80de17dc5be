//! What a node's burn-in reports: per device, numbers with units, the fault counters read
//! before and after (their deltas), and what the device was doing while it was measured
//! (throttle reasons, power, temperature). The appliance judges; the agent only measures.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /api/v1/agent/burnin`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BurnInReport {
    pub mac: String,
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
