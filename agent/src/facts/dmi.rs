//! The firmware's identity of the machine: SMBIOS system, baseboard and BIOS strings as the
//! kernel exports them in `/sys/class/dmi/id`.

use provisioner_protocol::Dmi;

use super::read::Tree;

const DIR: &str = "sys/class/dmi/id";

pub fn read(tree: &mut Tree) -> Dmi {
    // Machines without SMBIOS (some VMs, some arm64 boards) have no directory at all: say so
    // once instead of once per field.
    if !tree.has(DIR) {
        tree.problem(DIR, "not present (no SMBIOS tables)");
        return Dmi::default();
    }
    // The kernel creates a file only for the strings the firmware has, so a missing one is
    // an empty field; serials are readable by root only, so a non-root run shows a problem.
    let mut field = |name: &str| tree.optional(&format!("{DIR}/{name}"));
    Dmi {
        sys_vendor: field("sys_vendor"),
        product_name: field("product_name"),
        product_serial: field("product_serial"),
        board_vendor: field("board_vendor"),
        board_name: field("board_name"),
        board_serial: field("board_serial"),
        bios_vendor: field("bios_vendor"),
        bios_version: field("bios_version"),
        bios_date: field("bios_date"),
    }
}
