//! The name udev's `path_id` builtin gives a disk under `/dev/disk/by-path/` (systemd's
//! `src/udev/udev-builtin-path_id.c`, v252 and later), computed from sysfs alone: the
//! discovery image has no udev. Like path_id it walks from the disk up through its parent
//! devices and names the hops that say where the disk sits: `pci-0000:3c:00.0-nvme-1`,
//! `pci-0000:00:05.0-scsi-0:0:0:0`, `pci-0000:00:1f.2-ata-1.0`.
//!
//! Followed: PCI (and platform, AMBA, ACPI, Xen) parents, virtio, NVMe with and without
//! multipath, and on the SCSI layer ATA, SAS behind a SAS transport (mpt3sas) and everything
//! else as `scsi-H:C:T:L` (virtio-scsi, RAID controllers). Where path_id would take a road
//! not followed here (Fibre Channel, iSCSI, Hyper-V, USB, FireWire, s390), there is no name:
//! a wrong one would put an OS on the wrong disk.

use std::fs;

use super::super::read::Tree;

/// Where the device tree starts; path_id's walk ends there.
const DEVICES: &str = "sys/devices";

/// Subsystems path_id names in ways not followed here: such a disk gets no name.
const NOT_FOLLOWED: [&str; 10] = [
    "cciss", "usb", "bcma", "serio", "scm", "ccw", "ccwgroup", "ap", "iucv", "spi",
];

/// A SCSI device's address, from its kernel name `host:channel:target:lun`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hctl {
    pub host: u32,
    pub channel: u32,
    pub target: u32,
    pub lun: u64,
}

/// `0:0:0:0` → its four numbers; a name of another shape (`host0`, `target0:0:0`, `virtio1`)
/// is not a SCSI device.
pub fn parse_hctl(name: &str) -> Option<Hctl> {
    let mut parts = name.split(':');
    let hctl = Hctl {
        host: decimal(parts.next()?)?,
        channel: decimal(parts.next()?)?,
        target: decimal(parts.next()?)?,
        lun: decimal(parts.next()?)?,
    };
    parts.next().is_none().then_some(hctl)
}

/// Digits only: `str::parse` would take a sign too.
fn decimal<T: std::str::FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The `/dev/disk/by-path/` name (without that directory) of the disk at `block`
/// (`sys/block/sda`), or None where path_id gives none or goes where this does not follow.
pub fn of(tree: &mut Tree, block: &str) -> Option<String> {
    let disk = canonical(tree, block)?;
    let mut walk = Walk {
        tree,
        disk: disk.clone(),
        names: Vec::new(),
        named_parent: false,
        transport: false,
    };
    let mut at = Some(disk);
    while let Some(device) = at {
        let last = walk.step(device)?;
        at = parent(&last);
    }
    // A name without a known parent (PCI, platform) or, for a disk, without a known
    // transport would not be unique.
    if walk.names.is_empty() || !walk.named_parent || !walk.transport {
        return None;
    }
    walk.names.reverse();
    Some(walk.names.join("-"))
}

struct Walk<'a> {
    tree: &'a mut Tree,
    /// The disk's own device, `sys/devices/.../block/sda`.
    disk: String,
    /// The parts of the name, the disk's end first.
    names: Vec<String>,
    named_parent: bool,
    transport: bool,
}

impl Walk<'_> {
    /// Names what `device` adds and returns the device the walk goes on above, or None when
    /// the disk gets no name.
    fn step(&mut self, device: String) -> Option<String> {
        // A directory without a subsystem (`block/`, `pci0000:00`) adds nothing.
        let Some(subsystem) = subsystem(self.tree, &device) else {
            return Some(device);
        };
        match subsystem.as_str() {
            "scsi" => {
                self.transport = true;
                self.scsi(device)
            }
            "virtio" => {
                self.transport = true;
                Some(self.skip(device, "virtio"))
            }
            "pci" | "acpi" | "xen" | "platform" | "amba" => {
                self.names.push(format!("{subsystem}-{}", sysname(&device)));
                self.named_parent = true;
                // Platform and AMBA devices are a transport too; PCI, ACPI and Xen only a
                // parent: a Xen disk (`xen-vbd-51712`, no transport below it) gets no name.
                self.transport |= matches!(subsystem.as_str(), "platform" | "amba");
                Some(self.skip(device, &subsystem))
            }
            "nvme" | "nvme-subsystem" => self.nvme(device, &subsystem),
            s if NOT_FOLLOWED.contains(&s) => None,
            _ => Some(device),
        }
    }

    /// The namespace id of the disk, then on from its controller.
    fn nvme(&mut self, device: String, subsystem: &str) -> Option<String> {
        let Some(nsid) = self.tree.optional(&format!("{}/nsid", self.disk)) else {
            return Some(device);
        };
        self.names.push(format!("nvme-{nsid}"));
        let controller = if subsystem == "nvme-subsystem" {
            self.multipath_controller()?
        } else {
            device
        };
        self.named_parent = true;
        self.transport = true;
        Some(self.skip(controller, "nvme"))
    }

    /// With NVMe multipath the disk hangs under a virtual subsystem device; path_id goes on
    /// from the controller its name carries (`nvme0n1` → `nvme0`), and gives no name when
    /// that is virtual too (NVMe over Fabrics).
    fn multipath_controller(&self) -> Option<String> {
        let name = sysname(&self.disk);
        let digits = name
            .strip_prefix("nvme")?
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        let controller = &name[..4 + digits];
        let device = canonical(self.tree, &format!("sys/class/nvme/{controller}"))?;
        (!device.starts_with("sys/devices/virtual/")).then_some(device)
    }

    /// A SCSI device names its transport; its target and host add nothing.
    fn scsi(&mut self, device: String) -> Option<String> {
        let Some(hctl) = parse_hctl(sysname(&device)) else {
            return Some(device);
        };
        if self.tree.has(&format!("{device}/ieee1394_id")) {
            return None;
        }
        // The SCSI layer has no subsystem per transport: path_id tells them by the path.
        let path = format!("/{device}");
        if path.contains("/rport-") {
            return None;
        }
        if path.contains("/end_device-") {
            self.named_parent = true;
            return self.sas(device, hctl);
        }
        if path.contains("/session") {
            return None;
        }
        if path.contains("/ata") {
            return self.ata(device, hctl);
        }
        if path.contains("/vmbus_") || path.contains("/VMBUS") {
            return None;
        }
        self.scsi_default(device, hctl)
    }

    /// `ata-PORT.TARGET`, or `ata-PORT.PMP.0` behind a port multiplier, with the port's
    /// number on its controller (from 1), not the global `ataN`.
    fn ata(&mut self, device: String, hctl: Hctl) -> Option<String> {
        let host = ancestor(self.tree, &device, is_host)?;
        let port = parent(&host)?;
        let port_no = self
            .tree
            .optional(&format!("sys/class/ata_port/{}/port_no", sysname(&port)))?;
        self.names.push(if hctl.channel != 0 {
            format!("ata-{port_no}.{}.0", hctl.channel)
        } else {
            format!("ata-{port_no}.{}", hctl.target)
        });
        Some(device)
    }

    /// Behind a SAS transport: the PHY the disk is on (and the expander's address when it
    /// hangs off one), or the disk's SAS address on a wide port.
    fn sas(&mut self, device: String, hctl: Hctl) -> Option<String> {
        let target = ancestor(self.tree, &device, is_target)?;
        let end_device = parent(&target)?;
        let sas_device = format!("sys/class/sas_device/{}", sysname(&end_device));
        if !self.tree.has(&sas_device) {
            return None;
        }
        let port = parent(&end_device)?;
        let num_phys = self
            .tree
            .optional(&format!("sys/class/sas_port/{}/num_phys", sysname(&port)))?;
        let lun = lun(hctl.lun);
        if num_phys != "1" {
            let address = self.tree.optional(&format!("{sas_device}/sas_address"))?;
            self.names.push(format!("sas-{address}-{lun}"));
            return Some(device);
        }
        let phy = self
            .tree
            .optional(&format!("{sas_device}/phy_identifier"))?;
        let expander = parent(&port)?;
        let expander = format!("sys/class/sas_device/{}", sysname(&expander));
        if self.tree.has(&expander) {
            let address = self.tree.optional(&format!("{expander}/sas_address"))?;
            self.names.push(format!("sas-exp{address}-phy{phy}-{lun}"));
        } else {
            self.names.push(format!("sas-phy{phy}-{lun}"));
        }
        Some(device)
    }

    /// `scsi-H:C:T:L`, the host numbered from the lowest `hostN` on the same controller
    /// (the kernel numbers hosts globally); the walk goes on above the host.
    fn scsi_default(&mut self, device: String, hctl: Hctl) -> Option<String> {
        let host = ancestor(self.tree, &device, is_host)?;
        let (controller, _) = host.rsplit_once('/')?;
        let entries = fs::read_dir(self.tree.path(controller)).ok()?;
        let lowest = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir() || t.is_symlink()))
            .filter_map(|e| host_number(&e.file_name().to_string_lossy()))
            .min();
        let Some(lowest) = lowest else {
            return Some(host);
        };
        let number = hctl.host.checked_sub(lowest)?;
        self.names.push(format!(
            "scsi-{number}:{}:{}:{}",
            hctl.channel, hctl.target, hctl.lun
        ));
        Some(host)
    }

    /// The topmost of the devices of `subsystem` that `device` starts.
    fn skip(&self, mut device: String, subsystem_name: &str) -> String {
        while let Some(up) = parent(&device) {
            if subsystem(self.tree, &up).as_deref() != Some(subsystem_name) {
                break;
            }
            device = up;
        }
        device
    }
}

/// path_id's LUN: address method 0 below 256, else the kernel's 32-bit LUN rearranged.
fn lun(lun: u64) -> String {
    if lun < 256 {
        format!("lun-{lun}")
    } else {
        format!(
            "lun-0x{:04x}{:04x}00000000",
            lun & 0xffff,
            (lun >> 16) & 0xffff
        )
    }
}

fn host_number(name: &str) -> Option<u32> {
    decimal(name.strip_prefix("host")?)
}

/// The SCSI layer's devices are told apart by name, as the kernel gives them: `hostN`,
/// `targetH:C:T`, `H:C:T:L`.
fn is_host(tree: &Tree, device: &str) -> bool {
    host_number(sysname(device)).is_some() && subsystem(tree, device).as_deref() == Some("scsi")
}

fn is_target(tree: &Tree, device: &str) -> bool {
    sysname(device).starts_with("target") && subsystem(tree, device).as_deref() == Some("scsi")
}

/// The nearest device above `device` that is `wanted`.
fn ancestor(tree: &Tree, device: &str, wanted: fn(&Tree, &str) -> bool) -> Option<String> {
    let mut at = parent(device);
    while let Some(device) = at {
        if wanted(tree, &device) {
            return Some(device);
        }
        at = parent(&device);
    }
    None
}

/// The directory above `device`, while still a device.
fn parent(device: &str) -> Option<String> {
    let (up, _) = device.rsplit_once('/')?;
    (up.starts_with(DEVICES) && up.len() > DEVICES.len()).then(|| up.to_string())
}

fn sysname(device: &str) -> &str {
    device.rsplit_once('/').map_or(device, |(_, name)| name)
}

/// The subsystem a device is in: the name its `subsystem` link points to.
fn subsystem(tree: &Tree, device: &str) -> Option<String> {
    let target = fs::read_link(tree.path(&format!("{device}/subsystem"))).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// Where `rel` is once every link is followed, relative to the root: `sys/block/sda` →
/// `sys/devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda`.
fn canonical(tree: &Tree, rel: &str) -> Option<String> {
    let root = fs::canonicalize(tree.path("")).ok()?;
    let path = fs::canonicalize(tree.path(rel)).ok()?;
    let rel = path.strip_prefix(&root).ok()?.to_str()?;
    rel.starts_with(DEVICES).then(|| rel.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scsi_device_names_parse_and_others_do_not() {
        assert_eq!(
            parse_hctl("1:2:3:4"),
            Some(Hctl {
                host: 1,
                channel: 2,
                target: 3,
                lun: 4
            })
        );
        for name in [
            "host0",
            "target0:0:0",
            "virtio1",
            "0:0:0",
            "0:0:0:0:0",
            "0::0:0",
            "a:0:0:0",
        ] {
            assert_eq!(parse_hctl(name), None, "{name}");
        }
    }

    #[test]
    fn luns_above_255_take_path_ids_long_form() {
        assert_eq!(lun(0), "lun-0");
        assert_eq!(lun(255), "lun-255");
        assert_eq!(lun(0x4001_0203), "lun-0x0203400100000000");
    }

    #[test]
    fn the_walk_stops_at_the_device_tree() {
        assert_eq!(
            parent("sys/devices/pci0000:00/0000:00:02.0").as_deref(),
            Some("sys/devices/pci0000:00")
        );
        assert_eq!(parent("sys/devices/pci0000:00"), None);
        assert_eq!(
            sysname("sys/devices/pci0000:00/0000:00:02.0"),
            "0000:00:02.0"
        );
    }
}
