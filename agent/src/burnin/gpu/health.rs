//! A GPU's health through NVML: fault counters read before and after the burn-in (the
//! results are their changes, or their state at the end for the ones that say "pending" or
//! "failed"), and the samples of throttle reasons, power, temperature and clocks taken while
//! it computes.

use std::collections::BTreeMap;

use nvml_wrapper::Device;
use nvml_wrapper::enum_wrappers::device::{Clock, EccCounter, MemoryError, TemperatureSensor};
use nvml_wrapper::enum_wrappers::nv_link::ErrorCounter;
use provisioner_protocol::burnin::{Conditions, checks};

/// NVML's `NVML_NVLINK_MAX_LINKS`.
const NVLINK_MAX_LINKS: u32 = 18;

/// The fault counters at one moment; `None` where the GPU or driver cannot say (ECC off, no
/// NVLink, row remapping on a GPU that retires pages instead).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Health {
    pub ecc_enabled: Option<bool>,
    pub ecc_uncorrected: Option<u64>,
    pub ecc_corrected: Option<u64>,
    pub remap_pending: Option<bool>,
    pub remap_failed: Option<bool>,
    pub retired_pages_pending: Option<bool>,
    /// Links that report inactive, of those NVML knows on this GPU.
    pub nvlink_inactive: Option<u64>,
    /// The data-link error counters (replay, recovery, CRC) summed over the active links.
    pub nvlink_errors: Option<u64>,
}

/// The counters a run reports from the health read before and after it.
pub fn health_counters(before: &Health, after: &Health) -> BTreeMap<&'static str, u64> {
    let mut counters = BTreeMap::new();
    let deltas = [
        (
            checks::ECC_UNCORRECTED,
            before.ecc_uncorrected,
            after.ecc_uncorrected,
        ),
        (
            checks::ECC_CORRECTED,
            before.ecc_corrected,
            after.ecc_corrected,
        ),
        (
            checks::NVLINK_ERRORS,
            before.nvlink_errors,
            after.nvlink_errors,
        ),
    ];
    for (name, before, after) in deltas {
        if let Some(after) = after {
            counters.insert(name, delta(before, after));
        }
    }
    let states = [
        (checks::REMAP_PENDING, after.remap_pending),
        (checks::REMAP_FAILED, after.remap_failed),
        (checks::RETIRED_PAGES_PENDING, after.retired_pages_pending),
    ];
    for (name, state) in states {
        if let Some(state) = state {
            counters.insert(name, u64::from(state));
        }
    }
    if let Some(inactive) = after.nvlink_inactive {
        counters.insert(checks::NVLINK_INACTIVE, inactive);
    }
    counters
}

/// The change in a counter. A counter that went down was reset (a driver reload clears the
/// volatile counts): all of its value then is new. One never read before counts from zero.
fn delta(before: Option<u64>, after: u64) -> u64 {
    match before {
        Some(before) if before <= after => after - before,
        _ => after,
    }
}

/// Reads the fault counters of one GPU.
pub fn read_health(device: &Device) -> Health {
    let (remap_pending, remap_failed) = match remapped_rows(device) {
        Some((pending, failed)) => (Some(pending), Some(failed)),
        None => (None, None),
    };
    let (nvlink_inactive, nvlink_errors) = nvlinks(device);
    Health {
        ecc_enabled: device.is_ecc_enabled().ok().map(|m| m.currently_enabled),
        ecc_uncorrected: device
            .total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile)
            .ok(),
        ecc_corrected: device
            .total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile)
            .ok(),
        remap_pending,
        remap_failed,
        retired_pages_pending: device.are_pages_pending_retired().ok(),
        nvlink_inactive,
        nvlink_errors,
    }
}

/// `nvmlDeviceGetRemappedRows` (Ampere and later), which nvml-wrapper 0.13 does not wrap:
/// (a remap is pending, a remap failed).
fn remapped_rows(device: &Device) -> Option<(bool, bool)> {
    let lib = device.nvml().lib();
    // An older libnvidia-ml lacks the symbol; calling it then would panic.
    lib.nvmlDeviceGetRemappedRows.as_ref().ok()?;
    let (mut corrected, mut uncorrected, mut pending, mut failed) = (0u32, 0u32, 0u32, 0u32);
    // SAFETY: the handle is live for `device`'s lifetime and the four out-pointers are ours.
    let rc = unsafe {
        lib.nvmlDeviceGetRemappedRows(
            device.handle(),
            &mut corrected,
            &mut uncorrected,
            &mut pending,
            &mut failed,
        )
    };
    (rc == 0).then_some((pending != 0, failed != 0))
}

/// (inactive links, summed data-link errors of the active ones); `None` where the GPU
/// reports no NVLink at all.
fn nvlinks(device: &Device) -> (Option<u64>, Option<u64>) {
    let mut known = 0u64;
    let mut inactive = 0u64;
    let mut errors: Option<u64> = None;
    for link in 0..NVLINK_MAX_LINKS {
        let link = device.link_wrapper_for(link);
        match link.is_active() {
            Ok(true) => {
                known += 1;
                for counter in [
                    ErrorCounter::DlReplay,
                    ErrorCounter::DlRecovery,
                    ErrorCounter::DlCrcFlit,
                    ErrorCounter::DlCrcData,
                ] {
                    if let Ok(n) = link.error_counter(counter) {
                        errors = Some(errors.unwrap_or(0).saturating_add(n));
                    }
                }
            }
            Ok(false) => {
                known += 1;
                inactive += 1;
            }
            Err(_) => {}
        }
    }
    if known == 0 {
        (None, None)
    } else {
        (Some(inactive), errors)
    }
}

/// One sample of how a GPU runs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    pub throttle_reasons: Option<u64>,
    pub power_w: Option<f64>,
    pub power_limit_w: Option<f64>,
    pub temperature_c: Option<f64>,
    pub sm_clock_mhz: Option<f64>,
}

pub fn read_sample(device: &Device) -> Sample {
    Sample {
        throttle_reasons: device.current_throttle_reasons().ok().map(|r| r.bits()),
        power_w: device.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
        power_limit_w: device
            .enforced_power_limit()
            .ok()
            .map(|mw| f64::from(mw) / 1000.0),
        temperature_c: device
            .temperature(TemperatureSensor::Gpu)
            .ok()
            .map(f64::from),
        sm_clock_mhz: device.clock_info(Clock::SM).ok().map(f64::from),
    }
}

/// The samples of one GPU folded as they come: reasons ORed, extremes kept.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Samples {
    count: u32,
    conditions: Conditions,
}

impl Samples {
    pub fn add(&mut self, s: &Sample) {
        self.count += 1;
        let c = &mut self.conditions;
        c.throttle_reasons |= s.throttle_reasons.unwrap_or(0);
        c.power_max_w = max(c.power_max_w, s.power_w);
        c.power_limit_w = max(c.power_limit_w, s.power_limit_w);
        c.temperature_max_c = max(c.temperature_max_c, s.temperature_c);
        c.sm_clock_min_mhz = min(c.sm_clock_min_mhz, s.sm_clock_mhz);
        c.sm_clock_max_mhz = max(c.sm_clock_max_mhz, s.sm_clock_mhz);
    }

    /// What the samples saw; `None` if there were none.
    pub fn conditions(&self) -> Option<Conditions> {
        (self.count > 0).then(|| self.conditions.clone())
    }
}

fn max(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn min(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use provisioner_protocol::burnin::throttle;
    use std::path::Path;

    fn healthy() -> Health {
        Health {
            ecc_enabled: Some(true),
            ecc_uncorrected: Some(0),
            ecc_corrected: Some(3),
            remap_pending: Some(false),
            remap_failed: Some(false),
            retired_pages_pending: None,
            nvlink_inactive: Some(0),
            nvlink_errors: Some(10),
        }
    }

    #[test]
    fn a_healthy_run_reports_zeros() {
        let counters = health_counters(&healthy(), &healthy());
        assert_eq!(counters[checks::ECC_UNCORRECTED], 0);
        assert_eq!(counters[checks::ECC_CORRECTED], 0);
        assert_eq!(counters[checks::REMAP_PENDING], 0);
        assert_eq!(counters[checks::REMAP_FAILED], 0);
        assert_eq!(counters[checks::NVLINK_INACTIVE], 0);
        assert_eq!(counters[checks::NVLINK_ERRORS], 0);
        // Not readable on this GPU: not reported, rather than reported as zero.
        assert!(!counters.contains_key(checks::RETIRED_PAGES_PENDING));
    }

    #[test]
    fn deltas_and_states_after_injected_faults() {
        let after = Health {
            ecc_uncorrected: Some(1),
            ecc_corrected: Some(7),
            remap_pending: Some(true),
            nvlink_inactive: Some(2),
            nvlink_errors: Some(15),
            ..healthy()
        };
        let counters = health_counters(&healthy(), &after);
        assert_eq!(counters[checks::ECC_UNCORRECTED], 1);
        assert_eq!(counters[checks::ECC_CORRECTED], 4);
        assert_eq!(counters[checks::REMAP_PENDING], 1);
        assert_eq!(counters[checks::REMAP_FAILED], 0);
        assert_eq!(counters[checks::NVLINK_INACTIVE], 2);
        assert_eq!(counters[checks::NVLINK_ERRORS], 5);
    }

    #[test]
    fn a_pending_remap_from_before_the_run_still_counts() {
        let before = Health {
            remap_pending: Some(true),
            ..healthy()
        };
        let counters = health_counters(&before, &before);
        assert_eq!(counters[checks::REMAP_PENDING], 1);
    }

    #[test]
    fn counters_reset_or_unread_before() {
        assert_eq!(delta(Some(5), 9), 4);
        assert_eq!(delta(Some(9), 2), 2);
        assert_eq!(delta(None, 3), 3);
        let before = Health::default();
        let counters = health_counters(&before, &healthy());
        assert_eq!(counters[checks::ECC_CORRECTED], 3);
        assert!(health_counters(&healthy(), &Health::default()).is_empty());
    }

    /// `during-load.csv`: timestamp, temperature, power, SM clock, clock event reasons.
    fn fixture_samples(card: &str) -> Vec<Sample> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/nvidia")
            .join(card)
            .join("during-load.csv");
        let text = std::fs::read_to_string(&path).unwrap();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let f: Vec<&str> = line.split(',').map(str::trim).collect();
                let number = |s: &str| s.split(' ').next().unwrap().parse::<f64>().unwrap();
                Sample {
                    throttle_reasons: Some(
                        u64::from_str_radix(f[4].trim_start_matches("0x"), 16).unwrap(),
                    ),
                    power_w: Some(number(f[2])),
                    power_limit_w: Some(700.0),
                    temperature_c: Some(number(f[1])),
                    sm_clock_mhz: Some(number(f[3])),
                }
            })
            .collect()
    }

    #[test]
    fn the_h100_fixture_samples_fold_to_a_power_capped_load() {
        let mut samples = Samples::default();
        assert_eq!(samples.conditions(), None);
        // Only the samples under load, as the burn-in takes them (after the GEMM started).
        for s in fixture_samples("h100-sxm5-80gb")
            .iter()
            .filter(|s| s.power_w > Some(200.0))
        {
            samples.add(s);
        }
        let c = samples.conditions().unwrap();
        assert_eq!(
            c.throttle_reasons & throttle::SW_POWER_CAP,
            throttle::SW_POWER_CAP
        );
        assert_eq!(c.throttle_reasons & throttle::HW_SLOWDOWN, 0);
        assert!(c.power_max_w.unwrap() > 690.0, "{c:?}");
        assert_eq!(c.power_limit_w, Some(700.0));
        assert!(c.temperature_max_c.unwrap() >= 76.0, "{c:?}");
        assert!(c.sm_clock_min_mhz.unwrap() >= 1485.0, "{c:?}");
        assert!(c.sm_clock_max_mhz.unwrap() <= 1980.0, "{c:?}");
    }

    #[test]
    fn missing_readings_leave_gaps_not_zeros() {
        let mut samples = Samples::default();
        samples.add(&Sample {
            throttle_reasons: Some(throttle::SW_THERMAL),
            ..Sample::default()
        });
        samples.add(&Sample {
            sm_clock_mhz: Some(1500.0),
            ..Sample::default()
        });
        let c = samples.conditions().unwrap();
        assert_eq!(c.throttle_reasons, throttle::SW_THERMAL);
        assert_eq!(c.power_max_w, None);
        assert_eq!(c.sm_clock_min_mhz, Some(1500.0));
        assert_eq!(c.sm_clock_max_mhz, Some(1500.0));
    }
}
