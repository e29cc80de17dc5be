//! Network interfaces backed by hardware: `/sys/class/net` entries with a `device` link
//! (loopback, bridges, bonds, VLANs and tunnels have none).

use std::fs;
use std::path::Path;

use provisioner_protocol::Nic;

use super::pci::is_pci_address;
use super::read::Tree;

const NET: &str = "sys/class/net";

pub fn read(tree: &mut Tree) -> Vec<Nic> {
    let mut nics = Vec::new();
    for name in tree.entries(NET) {
        let dir = format!("{NET}/{name}");
        if !tree.has(&format!("{dir}/device")) {
            continue;
        }
        nics.push(Nic {
            mac: tree.required(&format!("{dir}/address")).unwrap_or_default(),
            driver: tree.link_name(&format!("{dir}/device/driver")),
            pci_address: pci_address(&tree.path(&format!("{dir}/device"))),
            // Both read EINVAL while the link is down; -1 is "unknown" (SPEED_UNKNOWN).
            speed_mbps: tree
                .quiet(&format!("{dir}/speed"))
                .and_then(|s| s.parse::<i64>().ok())
                .and_then(|s| u32::try_from(s).ok())
                .filter(|&s| s > 0),
            carrier: tree
                .quiet(&format!("{dir}/carrier"))
                .and_then(|c| match c.as_str() {
                    "1" => Some(true),
                    "0" => Some(false),
                    _ => None,
                }),
            name,
        });
    }
    nics
}

/// The PCI function behind an interface: `device` points at it, except for virtio, where
/// it points at the virtio device (`virtio2`) whose parent is the PCI function.
fn pci_address(device: &Path) -> Option<String> {
    let device = fs::canonicalize(device).ok()?;
    let name = file_name(&device)?;
    if is_pci_address(&name) {
        return Some(name);
    }
    if name.starts_with("virtio") {
        return file_name(device.parent()?).filter(|parent| is_pci_address(parent));
    }
    None
}

fn file_name(path: &Path) -> Option<String> {
    Some(path.file_name()?.to_string_lossy().into_owned())
}
