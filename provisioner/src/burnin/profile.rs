//! Burn-in profiles per SKU (`provisioner/burnin-profiles.toml`, versioned): floors for the
//! measurements, counters that must stay zero, the XIDs that mean faulty hardware, and the
//! margins of the warning, node-mate and cohort gates.

use std::collections::BTreeMap;

use provisioner_protocol::burnin::{BurnInPlan, DeviceKind};
use serde::Deserialize;

/// The profiles shipped with the appliance.
pub const SHIPPED_PROFILES: &str = include_str!("../../burnin-profiles.toml");

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("burn-in profiles: {0}")]
    Parse(#[from] Box<toml::de::Error>),
    #[error("burn-in profile {profile}: {reason}")]
    Invalid { profile: String, reason: String },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    hardware_xids: Vec<u32>,
    defaults: Defaults,
    profile: BTreeMap<String, ProfileFile>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    plan: PlanFile,
    warn_margin: f64,
    node_gap: f64,
    must_be_zero: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    description: String,
    power_limit_min_w: Option<f64>,
    #[serde(default)]
    plan: PlanFile,
    #[serde(default)]
    check: Vec<Floor>,
    warn_margin: Option<f64>,
    node_gap: Option<f64>,
    #[serde(default)]
    must_be_zero: Vec<String>,
}

/// How long each step runs; a profile's values replace the defaults' one by one.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    gemm_seconds: Option<u32>,
    hbm_fraction: Option<f64>,
    cpu_seconds: Option<u32>,
    memory_fraction: Option<f64>,
    disk_read_bytes: Option<u64>,
    tool_timeout_seconds: Option<u32>,
}

impl PlanFile {
    fn over(&self, base: &PlanFile) -> Result<BurnInPlan, String> {
        let need = |v: Option<u32>, b: Option<u32>, name: &str| {
            v.or(b).ok_or_else(|| format!("plan.{name} is not set"))
        };
        let fraction = |v: Option<f64>, b: Option<f64>, name: &str, least: f64| {
            let f = v.or(b).ok_or_else(|| format!("plan.{name} is not set"))?;
            if (least..=1.0).contains(&f) {
                Ok(f)
            } else {
                Err(format!("plan.{name} {f} is not in [{least}, 1]"))
            }
        };
        Ok(BurnInPlan {
            gemm_seconds: need(self.gemm_seconds, base.gemm_seconds, "gemm_seconds")?,
            // The floor for the HBM pattern test: at least 90% of free memory.
            hbm_fraction: fraction(self.hbm_fraction, base.hbm_fraction, "hbm_fraction", 0.9)?,
            cpu_seconds: need(self.cpu_seconds, base.cpu_seconds, "cpu_seconds")?,
            memory_fraction: fraction(
                self.memory_fraction,
                base.memory_fraction,
                "memory_fraction",
                0.0,
            )?,
            disk_read_bytes: self
                .disk_read_bytes
                .or(base.disk_read_bytes)
                .ok_or("plan.disk_read_bytes is not set")?,
            tool_timeout_seconds: need(
                self.tool_timeout_seconds,
                base.tool_timeout_seconds,
                "tool_timeout_seconds",
            )?,
            disks_writable: Vec::new(),
            nic_speed_mbps: None,
            only: Vec::new(),
        })
    }
}

/// A measurement's floor.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Floor {
    pub kind: DeviceKind,
    pub name: String,
    pub min: f64,
    pub unit: String,
    /// Whether a power cap or heat seen while it was measured may excuse it (only what is
    /// measured while the conditions are sampled: the sustained GEMM).
    #[serde(default)]
    pub excusable: bool,
}

/// One SKU's profile, with the file's defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    pub sku: String,
    pub description: String,
    /// The power limit each GPU must run with at least: a lowered limit is a fault, and a
    /// power cap under it excuses nothing.
    pub power_limit_min_w: Option<f64>,
    /// What the node runs; the lifecycle adds the node's own parts (writable disks, NIC
    /// speed, retries).
    pub plan: BurnInPlan,
    /// The version of the profiles file.
    pub version: u32,
    pub floors: Vec<Floor>,
    /// A value within this fraction above its floor warns.
    pub warn_margin: f64,
    /// A device this fraction below its node-mates' median fails.
    pub node_gap: f64,
    pub must_be_zero: Vec<String>,
    pub hardware_xids: Vec<u32>,
}

/// All profiles, by SKU.
#[derive(Clone, Debug)]
pub struct Profiles {
    pub version: u32,
    pub by_sku: BTreeMap<String, Profile>,
}

impl Profiles {
    pub fn parse(text: &str) -> Result<Profiles, ProfileError> {
        let file: File = toml::from_str(text).map_err(Box::new)?;
        let mut by_sku = BTreeMap::new();
        for (sku, p) in file.profile {
            let invalid = |reason: String| ProfileError::Invalid {
                profile: sku.clone(),
                reason,
            };
            let warn_margin = p.warn_margin.unwrap_or(file.defaults.warn_margin);
            let node_gap = p.node_gap.unwrap_or(file.defaults.node_gap);
            for (name, v) in [("warn_margin", warn_margin), ("node_gap", node_gap)] {
                if !(0.0..1.0).contains(&v) {
                    return Err(invalid(format!("{name} {v} is not a fraction in [0, 1)")));
                }
            }
            for f in &p.check {
                if !(f.min.is_finite() && f.min > 0.0) {
                    return Err(invalid(format!("floor of {} must be above zero", f.name)));
                }
            }
            let plan = p.plan.over(&file.defaults.plan).map_err(invalid)?;
            let mut must_be_zero = file.defaults.must_be_zero.clone();
            must_be_zero.extend(p.must_be_zero);
            by_sku.insert(
                sku.clone(),
                Profile {
                    sku,
                    description: p.description,
                    power_limit_min_w: p.power_limit_min_w,
                    plan,
                    version: file.version,
                    floors: p.check,
                    warn_margin,
                    node_gap,
                    must_be_zero,
                    hardware_xids: file.hardware_xids.clone(),
                },
            );
        }
        Ok(Profiles {
            version: file.version,
            by_sku,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_profiles_cover_every_accelerator_sku() {
        let p = Profiles::parse(SHIPPED_PROFILES).unwrap();
        for sku in [
            "hgx-h100",
            "hgx-h200",
            "hgx-b200",
            "gb200-nvl72-tray",
            "hgx-b300",
            "trn2",
            "trn3",
        ] {
            let profile = p.by_sku.get(sku).unwrap_or_else(|| panic!("{sku}"));
            assert!(!profile.floors.is_empty(), "{sku}");
            assert!(profile.must_be_zero.contains(&"ecc_uncorrected".into()));
            assert!(profile.hardware_xids.contains(&79));
        }
        // The H100 floors sit under what the fixture's healthy card measured.
        let h100 = &p.by_sku["hgx-h100"];
        let floor = |n: &str| h100.floors.iter().find(|f| f.name == n).unwrap().min;
        assert!(floor("hbm_copy") < 3.03 && floor("gemm_bf16_p50") < 670.5);
        assert_eq!(h100.plan.gemm_seconds, 600);
        // The lab's profile overrides only what it names.
        let lab = &p.by_sku["qemu-lab"].plan;
        assert_eq!((lab.cpu_seconds, lab.gemm_seconds), (5, 600));
    }

    #[test]
    fn a_bad_profile_is_named() {
        let text = SHIPPED_PROFILES.replace("warn_margin = 0.05", "warn_margin = 5.0");
        let err = Profiles::parse(&text).unwrap_err().to_string();
        assert!(err.contains("warn_margin 5 is not a fraction"), "{err}");
        let text = SHIPPED_PROFILES.replace("hbm_fraction = 0.9", "hbm_fraction = 0.5");
        let err = Profiles::parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("plan.hbm_fraction 0.5 is not in [0.9, 1]"),
            "{err}"
        );
        let text = SHIPPED_PROFILES.replace("min = 2.7,", "min = -1.0,");
        let err = Profiles::parse(&text).unwrap_err().to_string();
        assert!(err.contains("hgx-h100: floor of hbm_copy"), "{err}");
    }
}
