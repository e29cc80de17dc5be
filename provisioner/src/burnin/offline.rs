//! The burn-in without an appliance: the plan a node of a SKU runs, and a report judged as
//! the appliance would judge that node's, for a technician checking a node by hand or an
//! engineer measuring a new card against its profile. No cohort: only the appliance's store
//! has one, so the cohort gate says nothing here.

use std::fmt::Write;

use provisioner_protocol::burnin::{BurnInPlan, BurnInReport};

use super::judge::{Cohort, Expected, Judgement, Level, judge};
use super::profile::Profiles;
use crate::lifecycle::plan::Skus;

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("no burn-in profile for SKU {sku:?}; profiles: {known}")]
    NoProfile { sku: String, known: String },
}

/// The plan a node of `sku` is given, before the appliance adds the node's own parts
/// (writable disks, NIC speed, retries).
pub fn plan(profiles: &Profiles, sku: &str) -> Result<BurnInPlan, OfflineError> {
    profiles
        .by_sku
        .get(sku)
        .map(|p| p.plan.clone())
        .ok_or_else(|| no_profile(profiles, sku))
}

/// `report` judged as a node of `sku`'s: its profile, the devices the SKU must have, no
/// cohort and no planned NICs (no slot).
pub fn judge_report(
    profiles: &Profiles,
    skus: &Skus,
    sku: &str,
    report: &BurnInReport,
) -> Result<Judgement, OfflineError> {
    let profile = profiles
        .by_sku
        .get(sku)
        .ok_or_else(|| no_profile(profiles, sku))?;
    let expected = Expected::of_sku(skus.sku.get(sku), None);
    Ok(judge(report, profile, &expected, &Cohort::new()))
}

fn no_profile(profiles: &Profiles, sku: &str) -> OfflineError {
    OfflineError::NoProfile {
        sku: sku.to_string(),
        known: profiles
            .by_sku
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn level(l: Level) -> &'static str {
    match l {
        Level::Pass => "PASS",
        Level::Warn => "WARN",
        Level::Fail => "FAIL",
    }
}

/// The judgement as text: the node's level, then each device's checks with their reasons,
/// and each measurement beside its check.
pub fn render(judgement: &Judgement, report: &BurnInReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node: {} (profiles v{})",
        level(judgement.level),
        judgement.profile_version
    );
    for c in &judgement.node {
        let _ = writeln!(out, "  {} {}: {}", level(c.level), c.check, c.reason);
    }
    for d in &judgement.devices {
        let result = report.devices.iter().find(|r| r.id == d.id);
        let model = result.and_then(|r| r.model.as_deref()).unwrap_or("");
        let kind = d
            .kind
            .map_or("?".to_string(), |k| format!("{k:?}").to_lowercase());
        let _ = writeln!(out, "{} {kind} {model}: {}", d.id, level(d.level));
        for c in &d.checks {
            let retry = if c.retry { " (retry)" } else { "" };
            let _ = writeln!(out, "  {} {}{retry}: {}", level(c.level), c.check, c.reason);
        }
        if let Some(r) = result {
            for (name, m) in &r.measurements {
                let _ = writeln!(out, "  measured {name}: {:.2} {}", m.value, m.unit);
            }
            if let Some(c) = &r.conditions {
                let _ = writeln!(
                    out,
                    "  conditions: reasons {:#x}, power up to {} of {} W, up to {} °C, SM {}-{} MHz",
                    c.throttle_reasons,
                    opt(c.power_max_w),
                    opt(c.power_limit_w),
                    opt(c.temperature_max_c),
                    opt(c.sm_clock_min_mhz),
                    opt(c.sm_clock_max_mhz)
                );
            }
        }
    }
    out
}

fn opt(v: Option<f64>) -> String {
    v.map_or("?".to_string(), |v| format!("{v:.0}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use provisioner_protocol::burnin::{DeviceKind, DeviceResult, Measurement};
    use std::collections::BTreeMap;

    fn shipped() -> (Profiles, Skus) {
        (
            crate::app::load_profiles(None).unwrap(),
            crate::app::load_skus(None).unwrap(),
        )
    }

    #[test]
    fn a_sku_without_a_profile_names_those_there_are() {
        let (profiles, _) = shipped();
        let e = plan(&profiles, "hgx-h1000").unwrap_err().to_string();
        assert!(e.contains("hgx-h1000") && e.contains("hgx-h100,"), "{e}");
    }

    #[test]
    fn one_gpu_of_an_eight_gpu_sku_fails_the_node_but_is_judged_itself() {
        let (profiles, skus) = shipped();
        let gpu = DeviceResult {
            id: "0000:18:00.0".into(),
            kind: Some(DeviceKind::Gpu),
            model: Some("NVIDIA H100 80GB HBM3".into()),
            measurements: BTreeMap::from([(
                "hbm_copy".to_string(),
                Measurement {
                    value: 2.95,
                    unit: "TB/s".into(),
                    attempt: 1,
                },
            )]),
            ..DeviceResult::default()
        };
        let report = BurnInReport {
            mac: None,
            devices: vec![gpu],
        };
        let j = judge_report(&profiles, &skus, "hgx-h100", &report).unwrap();
        assert_eq!(j.level, Level::Fail);
        let text = render(&j, &report);
        assert!(text.contains("1 of 8 GPU devices reported"), "{text}");
        assert!(text.contains("measured hbm_copy: 2.95 TB/s"), "{text}");
        assert!(
            text.lines().any(|l| l.contains("PASS hbm_copy")),
            "the copy itself passes its floor: {text}"
        );
    }
}
