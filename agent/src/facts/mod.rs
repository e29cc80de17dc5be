//! What a node is, read from sysfs and procfs only (no external tools: the discovery image
//! has busybox and nothing else). Every reader returns what it can; what it cannot read is
//! in `Facts::problems`, never a panic.

mod cpu;
mod disks;
mod dmi;
mod memory;
mod nics;
mod pci;
mod read;
pub mod smbios;

use std::path::Path;

use provisioner_protocol::{Facts, PciDevice};

pub use cpu::{CpuInfo, parse_cpuinfo};
pub use disks::vpd_unit_serial_number;
pub use memory::mem_total_bytes;
pub use pci::{is_gpu, is_neuron, is_pci_address};

/// The facts of the machine whose `/` is `root`: `/` on a node, a recorded tree in tests.
/// Lists are sorted by name or address, so the same machine gives the same report.
pub fn collect(root: &Path) -> Facts {
    let mut tree = read::Tree::new(root);
    let dmi = dmi::read(&mut tree);
    let cpu = cpu::read(&mut tree);
    let memory = memory::read(&mut tree);
    let disks = disks::read(&mut tree);
    let nics = nics::read(&mut tree);
    let pci = pci::read(&mut tree);
    let gpus = addresses(&pci, is_gpu);
    let neuron_devices = addresses(&pci, is_neuron);
    Facts {
        dmi,
        cpu,
        memory,
        disks,
        nics,
        pci,
        gpus,
        neuron_devices,
        problems: tree.into_problems(),
    }
}

fn addresses(pci: &[PciDevice], keep: fn(&PciDevice) -> bool) -> Vec<String> {
    pci.iter()
        .filter(|device| keep(device))
        .map(|device| device.address.clone())
        .collect()
}
