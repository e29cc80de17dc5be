//! `neuron-monitor`'s hardware counters (the `neuron_hw_counters` metric group of AWS's
//! Neuron Monitor User Guide): corrected and uncorrected ECC events in each device's memory
//! and SRAM, which sysfs does not all show. neuron-monitor streams one JSON report per line
//! until stopped; the burn-in takes the first report that has the counters.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;

use super::tool::{self, ToolError};

/// Only the hardware counters, every second: the first report comes within a second.
pub const CONFIG: &str =
    r#"{"period": "1s", "system_metrics": [{"type": "neuron_hw_counters", "period": "1s"}]}"#;

/// The counters neuron-monitor reports per device, under the names the burn-in uses.
pub const COUNTERS: [&str; 4] = [
    "mem_ecc_corrected",
    "mem_ecc_uncorrected",
    "sram_ecc_corrected",
    "sram_ecc_uncorrected",
];

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("neuron-monitor could not read the hardware counters: {0}")]
    Reported(String),
    #[error("neuron-monitor wrote no hardware counters")]
    NoReport,
    #[error("neuron-monitor's configuration could not be written: {0}")]
    Config(std::io::Error),
}

/// Counters by device index, then by name.
pub type HwCounters = BTreeMap<u32, BTreeMap<String, u64>>;

#[derive(Deserialize)]
struct Report {
    system_data: Option<SystemData>,
}

#[derive(Deserialize)]
struct SystemData {
    neuron_hw_counters: Option<Group>,
}

#[derive(Deserialize)]
struct Group {
    #[serde(default)]
    neuron_devices: Vec<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    error: String,
}

/// The hardware counters in one line of neuron-monitor's output: `None` for a line without
/// them (not JSON, or another metric group's report).
pub fn parse_line(line: &str) -> Option<Result<HwCounters, MonitorError>> {
    let report: Report = serde_json::from_str(line.trim()).ok()?;
    let group = report.system_data?.neuron_hw_counters?;
    if !group.error.is_empty() {
        return Some(Err(MonitorError::Reported(group.error)));
    }
    let mut counters = HwCounters::new();
    for device in group.neuron_devices {
        let Some(index) = device
            .get("neuron_device_index")
            .and_then(serde_json::Value::as_u64)
            .and_then(|i| u32::try_from(i).ok())
        else {
            continue;
        };
        let values = COUNTERS
            .iter()
            .filter_map(|name| Some((name.to_string(), device.get(*name)?.as_u64()?)))
            .collect();
        counters.insert(index, values);
    }
    Some(Ok(counters))
}

/// Runs neuron-monitor until its first hardware-counter report, for at most `limit`.
pub fn snapshot(program: &Path, limit: Duration) -> Result<HwCounters, MonitorError> {
    static SNAPSHOTS: AtomicU64 = AtomicU64::new(0);
    let config = std::env::temp_dir().join(format!(
        "provisioner-neuron-monitor-{}-{}.json",
        std::process::id(),
        SNAPSHOTS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&config, CONFIG).map_err(MonitorError::Config)?;
    let mut first = None;
    let ran = tool::run_until(
        "neuron-monitor",
        program,
        &["-c", &config.to_string_lossy()],
        limit,
        |line| match parse_line(line) {
            Some(report) => {
                first = Some(report);
                true
            }
            None => false,
        },
    );
    let _ = std::fs::remove_file(&config);
    match (first, ran) {
        (Some(report), _) => report,
        (None, Err(e)) => Err(e.into()),
        (None, Ok(_)) => Err(MonitorError::NoReport),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_lines_are_not_reports() {
        assert!(parse_line("starting").is_none());
        assert!(parse_line(r#"{"system_data": {"vcpu_usage": {}}}"#).is_none());
    }

    #[test]
    fn a_reported_error_is_an_error() {
        let line = r#"{"system_data": {"neuron_hw_counters": {"neuron_devices": [], "error": "no driver"}}}"#;
        assert!(matches!(
            parse_line(line),
            Some(Err(MonitorError::Reported(e))) if e == "no driver"
        ));
    }
}
