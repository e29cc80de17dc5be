//! Memory: what the kernel can use (`/proc/meminfo`) and the fitted DIMMs (SMBIOS type 17).

use provisioner_protocol::{Dimm, Memory};

use super::read::Tree;
use super::smbios;

const MEMINFO: &str = "proc/meminfo";
const DMI_ENTRIES: &str = "sys/firmware/dmi/entries";

pub fn read(tree: &mut Tree) -> Memory {
    let total_bytes = tree
        .required(MEMINFO)
        .and_then(|text| match mem_total_bytes(&text) {
            Some(bytes) => Some(bytes),
            None => {
                tree.problem(MEMINFO, "no MemTotal line");
                None
            }
        })
        .unwrap_or(0);
    Memory {
        total_bytes,
        dimms: dimms(tree),
    }
}

/// `MemTotal:       24731708 kB`, in bytes.
pub fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// Fitted DIMMs, sorted by slot. Machines without SMBIOS (many VMs) have no entries, and
/// that is not a problem: `total_bytes` still says how much memory there is.
fn dimms(tree: &mut Tree) -> Vec<Dimm> {
    let prefix = format!("{}-", smbios::MEMORY_DEVICE);
    let mut dimms = Vec::new();
    for entry in tree.entries_if_present(DMI_ENTRIES) {
        if !entry.starts_with(&prefix) {
            continue;
        }
        let rel = format!("{DMI_ENTRIES}/{entry}/raw");
        let Some(raw) = tree.bytes(&rel) else {
            continue;
        };
        match smbios::parse_memory_device(&raw) {
            Ok(Some(dimm)) => dimms.push(dimm),
            Ok(None) => {}
            Err(e) => tree.problem(&rel, e),
        }
    }
    dimms.sort_by(|a, b| a.locator.cmp(&b.locator));
    dimms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_in_kib() {
        let meminfo = "MemTotal:       24731708 kB\nMemFree:         5298004 kB\n";
        assert_eq!(mem_total_bytes(meminfo), Some(24731708 * 1024));
        assert_eq!(mem_total_bytes("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total_bytes("MemTotal: lots kB\n"), None);
    }
}
