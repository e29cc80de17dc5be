//! Disks: the block devices in `/sys/block` that are hardware, with size, model, serial
//! and what OpenStack Ironic's root device hints match on (WWN, vendor, SCSI address,
//! `/dev/disk/by-path/` name), read the way udev reads them: the discovery image has no udev.

mod by_path;
mod wwn;

use std::fs;

use provisioner_protocol::Disk;

use super::read::Tree;

const BLOCK: &str = "sys/block";

/// Kernel names of block devices that are not disks of the machine: loop and RAM disks,
/// compressed swap, device-mapper and md arrays built on the disks, optical and floppy
/// drives, network block devices.
const NOT_DISKS: [&str; 8] = ["loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd"];

/// Sectors in `size` are 512 bytes whatever the device's block size.
const SECTOR: u64 = 512;

/// SCSI VPD page 0x80, Unit Serial Number (SPC-4 §7.8.16).
const VPD_UNIT_SERIAL_NUMBER: u8 = 0x80;

pub fn read(tree: &mut Tree) -> Vec<Disk> {
    let mut disks = Vec::new();
    for name in tree.entries(BLOCK) {
        if NOT_DISKS.iter().any(|prefix| name.starts_with(prefix)) {
            continue;
        }
        let dir = format!("{BLOCK}/{name}");
        // With NVMe multipath, the per-controller paths (nvme0c0n1) are hidden behind the
        // namespace's node (nvme0n1): one disk, not two.
        if tree.quiet(&format!("{dir}/hidden")).as_deref() == Some("1") {
            continue;
        }
        let vendor = tree.optional(&format!("{dir}/device/vendor"));
        let wwn = wwn::read(tree, &name, &dir, vendor.as_deref());
        disks.push(Disk {
            size_bytes: tree
                .number::<u64>(&format!("{dir}/size"))
                .map_or(0, |sectors| sectors.saturating_mul(SECTOR)),
            model: tree.optional(&format!("{dir}/device/model")),
            serial: serial(tree, &dir),
            nvme: name.starts_with("nvme"),
            rotational: tree
                .required(&format!("{dir}/queue/rotational"))
                .is_some_and(|r| r == "1"),
            wwn: wwn.as_ref().map(|w| w.wwn.clone()),
            wwn_with_extension: wwn.as_ref().and_then(|w| w.with_extension.clone()),
            wwn_vendor_extension: wwn.and_then(|w| w.vendor_extension),
            vendor,
            hctl: hctl(tree, &dir),
            by_path: by_path::of(tree, &dir),
            name,
        });
    }
    disks
}

/// The SCSI address of a disk on the SCSI layer: its `device` is the SCSI device, named
/// `host:channel:target:lun` by the kernel. virtio-blk and NVMe disks have none.
fn hctl(tree: &Tree, dir: &str) -> Option<String> {
    let target = fs::read_link(tree.path(&format!("{dir}/device"))).ok()?;
    let name = target.file_name()?.to_str()?;
    by_path::parse_hctl(name).map(|_| name.to_string())
}

/// Where the serial number is depends on the driver: NVMe has it on the controller (or the
/// subsystem, with multipath) that `device` points to, virtio-blk on the disk itself, SCSI
/// and SATA disks only in their VPD page 0x80.
fn serial(tree: &mut Tree, dir: &str) -> Option<String> {
    if let Some(serial) = tree.optional(&format!("{dir}/device/serial")) {
        return Some(serial);
    }
    if let Some(serial) = tree.optional(&format!("{dir}/serial")) {
        return Some(serial);
    }
    let vpd = format!("{dir}/device/vpd_pg80");
    if !tree.has(&vpd) {
        return None;
    }
    let page = tree.bytes(&vpd)?;
    let serial = vpd_unit_serial_number(&page);
    if serial.is_none() {
        tree.problem(&vpd, "not a Unit Serial Number page");
    }
    serial.filter(|s| !s.is_empty())
}

/// The serial number in a VPD page 0x80: a 4-byte header (page code at byte 1, length at
/// bytes 2–3), then ASCII, often padded with spaces.
pub fn vpd_unit_serial_number(page: &[u8]) -> Option<String> {
    let header = page.get(..4)?;
    if header[1] != VPD_UNIT_SERIAL_NUMBER {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let serial = page.get(4..4 + length)?;
    Some(
        String::from_utf8_lossy(serial)
            .trim_matches(|c: char| c.is_whitespace() || c == '\0')
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vpd_page_0x80_serial_is_trimmed() {
        let mut page = vec![0x00, 0x80, 0x00, 0x14];
        page.extend_from_slice(b"      S6ESNA0T123456");
        assert_eq!(
            vpd_unit_serial_number(&page).as_deref(),
            Some("S6ESNA0T123456")
        );
    }

    #[test]
    fn vpd_page_of_another_kind_or_too_short_is_none() {
        assert_eq!(
            vpd_unit_serial_number(&[0x00, 0x83, 0x00, 0x01, b'x']),
            None
        );
        assert_eq!(
            vpd_unit_serial_number(&[0x00, 0x80, 0x00, 0x08, b'x']),
            None
        );
        assert_eq!(vpd_unit_serial_number(&[0x00, 0x80]), None);
    }
}
