//! The Neuron driver's hardware fault counters in sysfs
//! (`/sys/devices/virtual/neuron_device/neuronN`, AWS's Neuron Sysfs User Guide), read before
//! and after the burn-in: their rise is what the run did to the device.
//!
//! Driver 2.31 moved several nodes of this tree. Before it, the ECC counts are plain files in
//! `neuronN/stats/hardware/` and the runtime's hardware errors counter directories (`total`,
//! `present`) in `neuronN/neuron_coreM/stats/status/` (aws-neuron-driver,
//! `neuron_sysfs_metrics.c`). The counters are found by name wherever they are, as a file or
//! as a counter directory, so a moved node is still read; what layout was met is reported.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Where the driver puts one directory per device, under the root (`/` on a node).
pub const DEVICES: &str = "sys/devices/virtual/neuron_device";
/// The driver module's version, as `modinfo` has it.
pub const DRIVER_VERSION: &str = "sys/module/neuron/version";

/// Device-wide ECC counts, kept under their sysfs names. `hw_error_event` counts changes of
/// the firmware's error registers (driver 2.28's `stats/hardware/health_status/`).
const DEVICE_COUNTERS: [(&str, &str); 6] = [
    ("mem_ecc_uncorrected", "mem_ecc_uncorrected"),
    (
        "mem_ecc_repairable_uncorrected",
        "mem_ecc_repairable_uncorrected",
    ),
    ("sram_ecc_uncorrected", "sram_ecc_uncorrected"),
    ("mem_ecc_corrected", "mem_ecc_corrected"),
    ("sram_ecc_corrected", "sram_ecc_corrected"),
    ("hw_error_event", "hw_error_events"),
];

/// Hardware errors the runtime met on each NeuronCore, summed over the device's cores.
const CORE_COUNTERS: [&str; 5] = [
    "hw_hbm_ue_error",
    "hw_repairable_hbm_ue_error",
    "hw_nc_ue_error",
    "hw_dma_abort_error",
    "hw_collectives_error",
];

/// Deeper than any counter in either layout; sysfs has links that loop, which are not
/// followed anyway.
const MAX_DEPTH: usize = 6;

#[derive(Debug, thiserror::Error)]
pub enum SysfsError {
    #[error("{} missing", .0.display())]
    NoDevice(PathBuf),
    #[error("no hardware counters under {}", .0.display())]
    NoCounters(PathBuf),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// ECC counts in `neuronN/stats/hardware/`.
    Before2_31,
    /// No `stats/hardware/`: the counters were found where driver 2.31 moved them.
    From2_31,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Counters {
    pub layout: Layout,
    /// By the names the burn-in reports them under.
    pub values: BTreeMap<String, u64>,
}

/// The directory of device `index` under `root`.
pub fn device_dir(root: &Path, index: u32) -> PathBuf {
    root.join(DEVICES).join(format!("neuron{index}"))
}

/// Whether the driver is loaded: it makes the `neuron_device` class.
pub fn driver_present(root: &Path) -> bool {
    root.join(DEVICES).is_dir()
}

pub fn driver_version(root: &Path) -> Option<String> {
    text(&root.join(DRIVER_VERSION))
}

/// The device's name (`info/architecture/device_name`), where the driver gives one.
pub fn device_name(root: &Path, index: u32) -> Option<String> {
    text(&device_dir(root, index).join("info/architecture/device_name"))
}

/// The fault counters of device `index` now.
pub fn read(root: &Path, index: u32) -> Result<Counters, SysfsError> {
    let dir = device_dir(root, index);
    if !dir.is_dir() {
        return Err(SysfsError::NoDevice(dir));
    }
    let mut found = Vec::new();
    walk(&dir, 0, false, &mut found);
    let mut values = BTreeMap::new();
    for (sysfs, name) in DEVICE_COUNTERS {
        // The shallowest, should a compatibility copy be left beside a moved node.
        let best = found
            .iter()
            .filter(|f| f.name == sysfs && !f.in_core)
            .min_by_key(|f| f.depth);
        if let Some(f) = best {
            values.insert(name.to_string(), f.value);
        }
    }
    for name in CORE_COUNTERS {
        let mut occurrences = found.iter().filter(|f| f.name == name).peekable();
        if occurrences.peek().is_some() {
            let sum = occurrences.fold(0u64, |sum, f| sum.saturating_add(f.value));
            values.insert(name.to_string(), sum);
        }
    }
    if values.is_empty() {
        return Err(SysfsError::NoCounters(dir));
    }
    let layout = if dir.join("stats/hardware").is_dir() {
        Layout::Before2_31
    } else {
        Layout::From2_31
    };
    Ok(Counters { layout, values })
}

/// How much each counter rose from `before` to `after`. A counter that fell (the driver was
/// reloaded, or someone wrote to it to clear it) counts what it shows now, so an error in
/// the run is never hidden; one read only after is taken whole.
pub fn rise(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(name, &now)| {
            let was = before.get(name).copied().unwrap_or(0);
            let rise = if now >= was { now - was } else { now };
            (name.clone(), rise)
        })
        .collect()
}

struct Found {
    name: String,
    in_core: bool,
    depth: usize,
    value: u64,
}

fn walk(dir: &Path, depth: usize, in_core: bool, found: &mut Vec<Found>) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_symlink() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let known = DEVICE_COUNTERS.iter().any(|(n, _)| *n == name)
            || CORE_COUNTERS.contains(&name.as_str());
        if known {
            // A plain attribute file, or a counter directory whose `total` is the count.
            let file = if kind.is_dir() {
                path.join("total")
            } else {
                path.clone()
            };
            if let Some(value) = text(&file).and_then(|t| number(&t)) {
                found.push(Found {
                    name,
                    in_core,
                    depth,
                    value,
                });
                continue;
            }
        }
        if kind.is_dir() {
            let core = in_core || name.starts_with("neuron_core");
            walk(&path, depth + 1, core, found);
        }
    }
}

fn text(path: &Path) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// A counter's value: a decimal number, perhaps followed by more fields.
fn number(text: &str) -> Option<u64> {
    text.split(|c: char| c.is_whitespace() || c == ',')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn a_counter_rises_by_its_difference() {
        let before = map(&[("mem_ecc_uncorrected", 2), ("sram_ecc_uncorrected", 0)]);
        let after = map(&[("mem_ecc_uncorrected", 3), ("sram_ecc_uncorrected", 0)]);
        assert_eq!(
            rise(&before, &after),
            map(&[("mem_ecc_uncorrected", 1), ("sram_ecc_uncorrected", 0)])
        );
    }

    #[test]
    fn a_counter_that_fell_counts_what_it_shows() {
        let before = map(&[("mem_ecc_uncorrected", 5)]);
        let after = map(&[("mem_ecc_uncorrected", 1), ("hw_nc_ue_error", 2)]);
        assert_eq!(
            rise(&before, &after),
            map(&[("mem_ecc_uncorrected", 1), ("hw_nc_ue_error", 2)])
        );
    }

    #[test]
    fn numbers_with_more_fields() {
        assert_eq!(number("7"), Some(7));
        assert_eq!(number("7 events"), Some(7));
        assert_eq!(number("POWER_STATUS_VALID,1,2"), None);
    }
}
