//! The judgement on the real H100 and H200 captures (`tests/fixtures/nvidia/`), and on faults
//! injected into them: an XID 79, a pending row remap, one flipped bit, one slow GPU, a
//! missing GPU, a tool that hung, a wrong collective.

mod common;

use std::collections::BTreeMap;

use common::nvidia::node;
use provisioner::burnin::judge::{Cohort, CohortKey, Expected, Level, judge};
use provisioner::burnin::profile::{Profile, Profiles, SHIPPED_PROFILES};
use provisioner_protocol::burnin::{BurnInReport, DeviceKind, DeviceResult, Measurement};

fn profile(sku: &str) -> Profile {
    Profiles::parse(SHIPPED_PROFILES).unwrap().by_sku[sku].clone()
}

fn eight_gpus() -> Expected {
    Expected {
        devices: BTreeMap::from([(DeviceKind::Gpu, 8)]),
        nics: None,
    }
}

fn verdict_of(report: &BurnInReport, sku: &str) -> provisioner::burnin::judge::Judgement {
    judge(report, &profile(sku), &eight_gpus(), &Cohort::new())
}

#[test]
fn the_power_capped_h100_of_the_fixtures_passes_and_says_it_was_capped() {
    let j = verdict_of(&node("h100-sxm5-80gb"), "hgx-h100");
    assert_eq!(j.level, Level::Pass, "{j:#?}");
    assert!(j.retry.is_empty());
    let gemm = &j.devices[0]
        .checks
        .iter()
        .find(|c| c.check == "gemm_bf16_p50")
        .unwrap();
    assert!(
        gemm.reason
            .starts_with("670.50 TFLOP/s (floor 600 TFLOP/s)"),
        "{}",
        gemm.reason
    );
    assert!(
        gemm.reason
            .contains("power-capped (reasons 0x5, 697 W of 700 W limit)"),
        "{}",
        gemm.reason
    );
}

#[test]
fn the_h200_of_the_fixtures_passes() {
    let j = verdict_of(&node("h200-sxm5-141gb"), "hgx-h200");
    assert_eq!(j.level, Level::Pass, "{j:#?}");
}

#[test]
fn an_xid_79_fails_its_gpu_and_the_node() {
    let mut r = node("h100-sxm5-80gb");
    r.devices[3].xids = vec![79];
    let j = verdict_of(&r, "hgx-h100");
    assert_eq!(j.level, Level::Fail);
    assert_eq!(j.devices[3].level, Level::Fail);
    assert_eq!(j.devices[2].level, Level::Pass);
    assert_eq!(
        j.failures(),
        ["0000:1b:00.0 xid: hardware XID [79] in the kernel log"]
    );
    // An application XID (13) is worth a warning, not a failure.
    let mut r = node("h100-sxm5-80gb");
    r.devices[0].xids = vec![13];
    assert_eq!(verdict_of(&r, "hgx-h100").level, Level::Warn);
}

#[test]
fn a_pending_row_remap_and_a_flipped_bit_fail() {
    let mut r = node("h100-sxm5-80gb");
    r.devices[1].counters.insert("remap_pending".into(), 1);
    r.devices[5].counters.insert("gemm_mismatches".into(), 1);
    let j = verdict_of(&r, "hgx-h100");
    assert_eq!(j.level, Level::Fail);
    assert_eq!(
        j.failures(),
        [
            "0000:19:00.0 remap_pending: remap_pending = 1 (must be 0)",
            "0000:1d:00.0 gemm_mismatches: gemm_mismatches = 1 (must be 0)"
        ]
    );
}

#[test]
fn a_gpu_20_percent_slower_than_its_node_mates_is_retried_then_fails() {
    let mut r = node("h100-sxm5-80gb");
    for m in r.devices[6].measurements.values_mut() {
        m.value *= 0.8;
    }
    // 536 TFLOP/s is under the floor too, which the common power cap would excuse; the gap
    // to its node-mates under the same cap is not excused.
    let j = verdict_of(&r, "hgx-h100");
    assert!(
        j.retry
            .contains(&("0000:1e:00.0".into(), "gemm_bf16_p50".into())),
        "{j:#?}"
    );
    assert_ne!(
        j.level,
        Level::Fail,
        "a first failure is retried before it counts"
    );
    for m in r.devices[6].measurements.values_mut() {
        m.attempt = 2;
    }
    let j = verdict_of(&r, "hgx-h100");
    assert_eq!(j.level, Level::Fail);
    let f = j.failures();
    assert!(
        f.iter()
            .any(|f| f.starts_with("0000:1e:00.0 gemm_bf16_p50:")
                && f.contains("20% under its node-mates' median of 670.50 TFLOP/s")),
        "{f:#?}"
    );
    // Every GPU ran under the same power cap: that excuses no gap between them.
    assert!(!f.iter().any(|f| f.contains("not faulty")), "{f:#?}");
}

#[test]
fn a_gpu_slowed_by_heat_its_mates_did_not_see_is_reported_as_throttled_not_faulty() {
    let mut r = node("h100-sxm5-80gb");
    let d = &mut r.devices[2];
    // Heat slows the sustained GEMM, which is what runs while conditions are sampled.
    for (name, m) in d.measurements.iter_mut() {
        if name.starts_with("gemm") {
            m.value *= 0.8;
            m.attempt = 2;
        }
    }
    let c = d.conditions.as_mut().unwrap();
    c.throttle_reasons |= provisioner_protocol::burnin::throttle::HW_THERMAL;
    c.temperature_max_c = Some(92.0);
    let j = verdict_of(&r, "hgx-h100");
    assert_eq!(j.level, Level::Warn, "{j:#?}");
    let gemm = j.devices[2]
        .checks
        .iter()
        .find(|c| c.check == "gemm_bf16_p50")
        .unwrap();
    assert!(
        gemm.reason.contains("thermally throttled"),
        "{}",
        gemm.reason
    );
    assert!(gemm.reason.contains("92 °C"), "{}", gemm.reason);
    assert!(gemm.reason.ends_with("slow, not faulty"), "{}", gemm.reason);
    // The same heat on a GPU that also computed wrongly excuses nothing.
    r.devices[2].counters.insert("gemm_mismatches".into(), 3);
    assert_eq!(verdict_of(&r, "hgx-h100").devices[2].level, Level::Fail);
}

#[test]
fn a_missing_gpu_a_missing_driver_and_a_hung_tool_fail() {
    let mut r = node("h100-sxm5-80gb");
    r.devices.pop();
    r.devices[0] = DeviceResult {
        id: r.devices[0].id.clone(),
        kind: Some(DeviceKind::Gpu),
        cannot_validate: Some("no NVIDIA driver".into()),
        ..Default::default()
    };
    r.devices[1].cannot_validate = Some("gemm timed out after 300 s".into());
    let f = verdict_of(&r, "hgx-h100").failures();
    assert_eq!(f[0], "7 of 8 GPU devices reported");
    assert!(f.contains(&"0000:18:00.0 validate: cannot validate: no NVIDIA driver".to_string()));
    assert!(
        f.contains(&"0000:18:00.0 hbm_copy: not measured".to_string()),
        "{f:#?}"
    );
    assert!(
        f.contains(
            &"0000:19:00.0 validate: cannot validate: gemm timed out after 300 s".to_string()
        ),
        "{f:#?}"
    );
}

#[test]
fn the_cohort_gate_fails_a_gpu_more_than_5_percent_under_its_median() {
    let key = CohortKey {
        kind: DeviceKind::Gpu,
        check: "hbm_copy".into(),
        driver: Some("580.159.04".into()),
        firmware: None,
    };
    let cohort: Cohort = BTreeMap::from([(
        key.clone(),
        vec![3.02, 3.03, 3.04, 3.03, 3.05, 3.01, 3.03, 3.02, 3.04, 3.03],
    )]);
    let mut r = node("h100-sxm5-80gb");
    // 2.85 TB/s: over the floor, and not 10% under its node-mates, but 6% under its cohort.
    for d in &mut r.devices {
        d.measurements.get_mut("hbm_copy").unwrap().value = 2.85;
        d.measurements.get_mut("hbm_copy").unwrap().attempt = 2;
    }
    let j = judge(&r, &profile("hgx-h100"), &eight_gpus(), &cohort);
    assert_eq!(j.level, Level::Fail, "{j:#?}");
    assert!(
        j.failures()[0].contains("under its cohort's median of 3.03 TB/s (MAD 0.01, 10 devices)"),
        "{:#?}",
        j.failures()
    );
    // A cohort too small says nothing.
    let small: Cohort = BTreeMap::from([(key.clone(), vec![3.03; 4])]);
    assert_ne!(
        judge(&r, &profile("hgx-h100"), &eight_gpus(), &small).level,
        Level::Fail
    );
    // Another driver's figures are another cohort.
    let other = BTreeMap::from([(
        CohortKey {
            driver: Some("570.00".into()),
            ..key
        },
        cohort.values().next().unwrap().clone(),
    )]);
    assert_ne!(
        judge(&r, &profile("hgx-h100"), &eight_gpus(), &other).level,
        Level::Fail
    );
}

#[test]
fn a_wrong_collective_result_fails_a_trainium_node() {
    let neuron = |i: usize, wrong: u64| DeviceResult {
        id: format!("neuron{i}"),
        kind: Some(DeviceKind::Neuron),
        measurements: BTreeMap::from([(
            "collective_busbw".into(),
            Measurement {
                value: 180.0,
                unit: "GB/s".into(),
                attempt: 1,
            },
        )]),
        counters: BTreeMap::from([("collective_wrong_results".into(), wrong)]),
        ..Default::default()
    };
    let r = BurnInReport {
        mac: "52:54:00:00:00:02".parse().ok(),
        devices: (0..16).map(|i| neuron(i, u64::from(i == 9))).collect(),
    };
    let expected = Expected {
        devices: BTreeMap::from([(DeviceKind::Neuron, 16)]),
        nics: None,
    };
    let j = judge(&r, &profile("trn3"), &expected, &Cohort::new());
    assert_eq!(
        j.failures(),
        ["neuron9 collective_wrong_results: collective_wrong_results = 1 (must be 0)"]
    );
}

#[test]
fn a_measurement_in_the_wrong_unit_is_not_compared() {
    let mut r = node("h100-sxm5-80gb");
    r.devices[0].measurements.get_mut("hbm_copy").unwrap().unit = "GB/s".into();
    let f = verdict_of(&r, "hgx-h100").failures();
    assert_eq!(
        f,
        ["0000:18:00.0 hbm_copy: measured in GB/s, the profile wants TB/s"]
    );
}

#[test]
fn nics_that_trained_slower_than_the_plan_cabled_fail_the_node() {
    let nic = |id: &str, mbps: Option<f64>, down: bool| DeviceResult {
        id: id.into(),
        kind: Some(DeviceKind::Nic),
        measurements: mbps
            .map(|v| {
                BTreeMap::from([(
                    "link_speed".to_string(),
                    Measurement {
                        value: v,
                        unit: "Mb/s".into(),
                        attempt: 1,
                    },
                )])
            })
            .unwrap_or_default(),
        cannot_validate: down.then(|| "link down".to_string()),
        ..Default::default()
    };
    let mut r = node("h100-sxm5-80gb");
    r.devices.push(nic("eno1", Some(1000.0), false)); // the management port
    for i in 0..6 {
        r.devices
            .push(nic(&format!("ibp{i}"), Some(400_000.0), false));
    }
    r.devices.push(nic("ibp6", Some(200_000.0), false));
    r.devices.push(nic("ibp7", None, true));
    let mut expected = eight_gpus();
    expected.nics = Some((8, 400_000));
    let j = judge(&r, &profile("hgx-h100"), &expected, &Cohort::new());
    let f = j.failures();
    assert!(
        f.iter().any(|f| f.starts_with(
            "6 of 8 planned NICs at 400000 Mb/s or faster (eno1 at 1000 Mb/s, ibp6 at 200000 Mb/s, ibp7 link down"
        )),
        "{f:#?}"
    );
    expected.nics = Some((6, 400_000));
    let j = judge(&r, &profile("hgx-h100"), &expected, &Cohort::new());
    assert_eq!(
        j.failures(),
        Vec::<String>::new(),
        "a down spare port is no failure"
    );
}

#[test]
fn a_power_cap_excuses_only_the_gemm_a_little_under_its_floor_at_the_full_limit() {
    let gemm = |r: &BurnInReport, i: usize| {
        let j = verdict_of(r, "hgx-h100");
        j.devices[i]
            .checks
            .iter()
            .find(|c| c.check == "gemm_bf16_p50")
            .cloned()
            .unwrap()
    };
    let slow_all = |factor: f64, names: &[&str]| {
        let mut r = node("h100-sxm5-80gb");
        for d in &mut r.devices {
            for n in names {
                let m = d.measurements.get_mut(*n).unwrap();
                m.value *= factor;
                m.attempt = 2;
            }
        }
        r
    };
    // 10% under the floor, at the full 700 W limit: slow, not faulty.
    let r = slow_all(540.0 / 670.5, &["gemm_bf16_p50"]);
    let c = gemm(&r, 0);
    assert_eq!(c.level, Level::Warn, "{c:?}");
    assert!(c.reason.contains("power-capped"), "{}", c.reason);
    // 30% under it: no power cap explains that.
    let r = slow_all(420.0 / 670.5, &["gemm_bf16_p50"]);
    assert_eq!(gemm(&r, 0).level, Level::Fail);
    // A limit lowered to 500 W is a fault, not an excuse.
    let mut r = slow_all(540.0 / 670.5, &["gemm_bf16_p50"]);
    for d in &mut r.devices {
        let c = d.conditions.as_mut().unwrap();
        c.power_limit_w = Some(500.0);
        c.power_max_w = Some(499.0);
    }
    assert_eq!(gemm(&r, 0).level, Level::Fail);
    // The copy is not measured under the sampled load: a power cap never excuses it.
    let r = slow_all(2.5 / 3.03, &["hbm_copy"]);
    let j = verdict_of(&r, "hgx-h100");
    assert!(
        j.failures()
            .iter()
            .any(|f| f.starts_with("0000:18:00.0 hbm_copy: 2.50 TB/s under the floor")),
        "{:#?}",
        j.failures()
    );
}

/// The report the agent itself printed on a real H100 (`tests/fixtures/nvidia/h100-agent-run`):
/// every GPU check it could run passes its floor, the GEMM reported as power-capped, and the
/// node of an eight-GPU SKU fails for what the single-GPU VM lacked, and for nothing else.
#[test]
fn the_agents_own_report_from_a_real_h100_passes_every_gpu_floor_it_measured() {
    let text = common::nvidia::fixture("h100-agent-run", "report.json");
    let report: BurnInReport = serde_json::from_str(&text).unwrap();
    let j = verdict_of(&report, "hgx-h100");
    let gpu = j
        .devices
        .iter()
        .find(|d| d.kind == Some(DeviceKind::Gpu))
        .expect("the GPU");
    for check in [
        "hbm_copy",
        "gemm_bf16_p50",
        "gemm_bf16_p05",
        "pcie_h2d",
        "pcie_d2h",
    ] {
        let c = gpu.checks.iter().find(|c| c.check == check).unwrap();
        assert_eq!(c.level, Level::Pass, "{c:?}");
    }
    let p50 = gpu
        .checks
        .iter()
        .find(|c| c.check == "gemm_bf16_p50")
        .unwrap();
    assert!(p50.reason.contains("power-capped (reasons 0x4"), "{p50:?}");
    // Nothing else on the GPU failed: only P2P, which one GPU cannot measure.
    let failed: Vec<&str> = gpu
        .checks
        .iter()
        .filter(|c| c.level == Level::Fail)
        .map(|c| c.check.as_str())
        .collect();
    assert_eq!(failed, ["p2p"], "{gpu:#?}");
    let p2p = gpu.checks.iter().find(|c| c.check == "p2p").unwrap();
    assert!(p2p.reason.contains("no peer to copy to"), "{p2p:?}");
    assert!(
        j.node
            .iter()
            .any(|c| c.reason == "1 of 8 GPU devices reported"),
        "{:?}",
        j.node
    );
    // The conditions came with their series, for the node page's charts.
    let series = &report.devices[0].conditions.as_ref().unwrap().series;
    assert!(series.len() > 30, "{}", series.len());
}
