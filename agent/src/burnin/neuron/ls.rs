//! `neuron-ls --json-output`: the Neuron devices the driver sees, with their PCI address,
//! NeuronCore count and memory. The format is the one in AWS's Neuron LS User Guide
//! (`tools/neuron-sys-tools/neuron-ls.rst`); see `agent/tests/neuron/README.md` for the
//! samples it is tested on.

use serde::Deserialize;

/// The options that ask neuron-ls for JSON: `--json-output` up to Neuron 2.33, and
/// `--output-format json` from 2.34, which AWS announced would replace it.
pub const JSON_ARGS: [&[&str]; 2] = [&["--json-output"], &["--output-format", "json"]];

#[derive(Debug, thiserror::Error)]
pub enum LsError {
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("no device list (neither an array nor an object with `neuron_devices`)")]
    NoDeviceList,
    #[error("lists no Neuron devices")]
    Empty,
}

/// One Neuron device as neuron-ls lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct NeuronDevice {
    /// The driver's index: `/dev/neuronN`, `/sys/devices/virtual/neuron_device/neuronN`.
    pub index: u32,
    /// PCI address with its domain, as the facts have it: `0000:cc:00.0`.
    pub address: String,
    /// NeuronCores (logical ones on trn2, where `logical_neuroncore_config` groups them).
    pub cores: u32,
    pub memory_bytes: u64,
}

#[derive(Deserialize)]
struct Entry {
    neuron_device: u32,
    bdf: String,
    nc_count: u32,
    memory_size: u64,
}

/// The devices in neuron-ls's JSON, by index.
pub fn parse(json: &str) -> Result<Vec<NeuronDevice>, LsError> {
    let value: serde_json::Value = serde_json::from_str(json)?;
    let list = match value {
        list @ serde_json::Value::Array(_) => list,
        // Assumed for the 2.34 format ("top-level fields for information that applies to
        // more than one device"): the devices under `neuron_devices`.
        serde_json::Value::Object(mut top) => {
            top.remove("neuron_devices").ok_or(LsError::NoDeviceList)?
        }
        _ => return Err(LsError::NoDeviceList),
    };
    let entries: Vec<Entry> = serde_json::from_value(list)?;
    if entries.is_empty() {
        return Err(LsError::Empty);
    }
    let mut devices: Vec<NeuronDevice> = entries
        .into_iter()
        .map(|e| NeuronDevice {
            index: e.neuron_device,
            address: with_domain(&e.bdf),
            cores: e.nc_count,
            memory_bytes: e.memory_size,
        })
        .collect();
    devices.sort_by_key(|d| d.index);
    Ok(devices)
}

/// neuron-ls writes `cc:00.0` on some releases and `0000:e1:00.0` on others; the facts
/// always have the domain.
pub fn with_domain(bdf: &str) -> String {
    let bdf = bdf.trim().to_ascii_lowercase();
    if bdf.matches(':').count() >= 2 {
        bdf
    } else {
        format!("0000:{bdf}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_get_their_domain() {
        assert_eq!(with_domain("cc:00.0"), "0000:cc:00.0");
        assert_eq!(with_domain("0000:E1:00.0"), "0000:e1:00.0");
    }

    #[test]
    fn an_object_with_a_device_list_is_read_too() {
        let json = r#"{"instance_type": "trn2.48xlarge", "neuron_devices": [
            {"neuron_device": 1, "bdf": "b5:00.0", "nc_count": 4, "memory_size": 1024}]}"#;
        let devices = parse(json).unwrap();
        assert_eq!(devices[0].address, "0000:b5:00.0");
        assert_eq!(devices[0].index, 1);
    }

    #[test]
    fn nothing_listed_is_an_error() {
        assert!(matches!(parse("[]"), Err(LsError::Empty)));
        assert!(matches!(parse("{}"), Err(LsError::NoDeviceList)));
        assert!(matches!(parse("neuron-ls: error"), Err(LsError::Json(_))));
    }
}
