//! The real GPU captures of `tests/fixtures/nvidia/` as the agent would report them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use provisioner_protocol::burnin::{
    BurnInReport, ConditionPoint, Conditions, DeviceKind, DeviceResult, Measurement,
};

pub fn fixture(card: &str, file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/nvidia")
        .join(card)
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The conditions of the card's load, from `during-load.csv` (timestamp, temperature, power,
/// SM clock, clock event reasons every 2 s) and its power limit from `query-after.csv`.
pub fn conditions(card: &str) -> Conditions {
    let mut c = Conditions::default();
    for (i, line) in fixture(card, "during-load.csv").lines().enumerate() {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let num = |s: &str| s.split_whitespace().next().unwrap().parse::<f64>().unwrap();
        c.series.push(ConditionPoint {
            t_s: 2.0 * i as f64,
            power_w: Some(num(f[2])),
            temperature_c: Some(num(f[1])),
            sm_clock_mhz: Some(num(f[3])),
        });
        c.temperature_max_c = Some(c.temperature_max_c.unwrap_or(0.0).max(num(f[1])));
        c.power_max_w = Some(c.power_max_w.unwrap_or(0.0).max(num(f[2])));
        c.throttle_reasons |= u64::from_str_radix(f[4].trim_start_matches("0x"), 16).unwrap();
    }
    let after = fixture(card, "query-after.csv");
    let (header, row) = after.split_once('\n').unwrap();
    let col = header
        .split(',')
        .position(|h| h.trim() == "power.limit [W]")
        .unwrap();
    let limit = row.split(',').nth(col).unwrap().trim();
    c.power_limit_w = Some(limit.trim_end_matches(" W").parse().unwrap());
    c
}

/// One GPU as the fixture's card measured it (`burn.json`), at PCI address `id`.
pub fn gpu(card: &str, id: &str) -> DeviceResult {
    let burn: serde_json::Value = serde_json::from_str(&fixture(card, "burn.json")).unwrap();
    let m = |v: &serde_json::Value, unit: &str| Measurement {
        value: v.as_f64().unwrap(),
        unit: unit.into(),
        attempt: 1,
    };
    DeviceResult {
        id: id.into(),
        kind: Some(DeviceKind::Gpu),
        model: burn["gpu"].as_str().map(String::from),
        driver: Some("580.159.04".into()),
        measurements: BTreeMap::from([
            ("hbm_copy".into(), m(&burn["d2d_copy_TBps"], "TB/s")),
            ("gemm_bf16_p50".into(), m(&burn["tflops_p50"], "TFLOP/s")),
            ("gemm_bf16_p05".into(), m(&burn["tflops_p05"], "TFLOP/s")),
            // The captures did not measure PCIe or GPU-to-GPU copies (a single-GPU VM): these
            // are healthy Gen5 x16 and NVLink 4 figures, so that what a test injects is what
            // is judged.
            ("pcie_h2d".into(), m(&serde_json::json!(52.0), "GB/s")),
            ("pcie_d2h".into(), m(&serde_json::json!(50.0), "GB/s")),
            ("p2p".into(), m(&serde_json::json!(370.0), "GB/s")),
        ]),
        counters: BTreeMap::from([(
            "gemm_mismatches".into(),
            burn["bitwise_mismatches"].as_u64().unwrap(),
        )]),
        conditions: Some(conditions(card)),
        ..Default::default()
    }
}

/// An 8-GPU node of the fixture's card: the one measured card at eight addresses.
pub fn node(card: &str) -> BurnInReport {
    BurnInReport {
        mac: "52:54:00:00:00:01".parse().ok(),
        devices: (0..8)
            .map(|i| gpu(card, &format!("0000:{:02x}:00.0", 0x18 + i)))
            .collect(),
    }
}
