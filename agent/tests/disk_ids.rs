//! What Ironic's root device hints match on (WWN, vendor, SCSI address, `/dev/disk/by-path/`
//! name), read from sysfs trees built here in the shape the kernel gives them, one per bus:
//! AHCI, virtio-blk, virtio-scsi, a RAID controller, SAS through an HBA and an expander, NVMe
//! with and without multipath. The names are udev's (systemd v252 `path_id`, `scsi_id`,
//! `ata_id`); the last test compares them with udev's own on the machine it runs on.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use provisioner_agent::facts::collect;
use provisioner_protocol::{Disk, Facts};

/// A root with just enough besides `sys/block` for the readers to report no problems.
struct Sysfs(tempfile::TempDir);

impl Sysfs {
    fn new() -> Self {
        let s = Sysfs(tempfile::tempdir().unwrap());
        s.file(
            "proc/cpuinfo",
            "processor\t: 0\nmodel name\t: X\nphysical id\t: 0\ncore id\t: 0\n",
        );
        s.file("proc/meminfo", "MemTotal:       1024 kB\n");
        s.file("sys/class/dmi/id/sys_vendor", "Vendor\n");
        s.dir("sys/class/net");
        s.dir("sys/bus/pci/devices");
        s
    }

    fn dir(&self, rel: &str) {
        fs::create_dir_all(self.0.path().join(rel)).unwrap();
    }

    fn file(&self, rel: &str, content: impl AsRef<[u8]>) {
        let path = self.0.path().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    /// A relative symlink at `rel` to `to` (a path from the root), as sysfs makes them.
    fn link(&self, rel: &str, to: &str) {
        let from = Path::new(rel).parent().unwrap();
        let up = "../".repeat(from.components().count());
        let path = self.0.path().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        symlink(format!("{up}{to}"), path).unwrap();
    }

    /// A device directory and its `subsystem` link (`bus/pci`, `class/nvme`); once for a
    /// device two disks share. Its `uevent` has the device type the SCSI layer and the
    /// block layer give.
    fn device(&self, rel: &str, subsystem: &str) -> &Self {
        let link = format!("{rel}/subsystem");
        if fs::symlink_metadata(self.0.path().join(&link)).is_ok() {
            return self;
        }
        let name = rel.rsplit('/').next().unwrap();
        let devtype = match subsystem {
            "class/block" => "DEVTYPE=disk\n",
            "bus/scsi" if name.starts_with("host") => "DEVTYPE=scsi_host\n",
            "bus/scsi" if name.starts_with("target") => "DEVTYPE=scsi_target\n",
            "bus/scsi" => "DEVTYPE=scsi_device\n",
            "bus/usb" if name.contains(':') => "DEVTYPE=usb_interface\n",
            "bus/usb" => "DEVTYPE=usb_device\n",
            _ => "",
        };
        self.file(&format!("{rel}/uevent"), devtype);
        self.link(&link, &format!("sys/{subsystem}"));
        self
    }

    fn plain(&self, rel: &str) {
        self.file(&format!("{rel}/uevent"), "");
    }

    /// The disk `sys/devices/{rel}` (ending in `block/NAME`), listed in `sys/block`.
    fn disk(&self, rel: &str) -> String {
        let rel = format!("sys/devices/{rel}");
        let name = rel.rsplit('/').next().unwrap().to_string();
        self.device(&rel, "class/block");
        self.file(&format!("{rel}/size"), "2048\n");
        self.file(&format!("{rel}/queue/rotational"), "0\n");
        self.link(&format!("sys/block/{name}"), &rel);
        rel
    }

    /// A disk on the SCSI layer, `{host}/targetH:C:T/H:C:T:L/block/NAME`, with its `device`
    /// link and the SCSI device's vendor and VPD page 0x83.
    fn scsi_disk(&self, host: &str, hctl: &str, name: &str, vendor: &str, page83: &[u8]) {
        self.scsi_disk_under(host, host, hctl, name, vendor, page83);
    }

    /// The same with the target under `parent`, below `host`: a SAS transport puts its
    /// ports and end devices between.
    fn scsi_disk_under(
        &self,
        host: &str,
        parent: &str,
        hctl: &str,
        name: &str,
        vendor: &str,
        page83: &[u8],
    ) {
        let (htc, _) = hctl.rsplit_once(':').unwrap();
        let target = format!("{parent}/target{htc}");
        let sdev = format!("{target}/{hctl}");
        self.device(&format!("sys/devices/{host}"), "bus/scsi");
        self.device(&format!("sys/devices/{target}"), "bus/scsi");
        self.device(&format!("sys/devices/{sdev}"), "bus/scsi");
        let rel = self.disk(&format!("{sdev}/block/{name}"));
        self.link(&format!("{rel}/device"), &format!("sys/devices/{sdev}"));
        self.file(
            &format!("sys/devices/{sdev}/vendor"),
            format!("{vendor:<8}\n"),
        );
        self.file(&format!("sys/devices/{sdev}/vpd_pg83"), page83);
    }

    /// The class entry `sys/class/{class}/{name}` of a device in no subsystem at
    /// `sys/devices/{rel}` (an ATA port, a SAS port, end device or expander), with the
    /// entry's attributes.
    fn class(&self, class: &str, rel: &str, attributes: &[(&str, &str)]) {
        let name = rel.rsplit('/').next().unwrap();
        self.plain(&format!("sys/devices/{rel}"));
        let dev = format!("sys/devices/{rel}/{class}/{name}");
        self.device(&dev, &format!("class/{class}"));
        self.link(&format!("sys/class/{class}/{name}"), &dev);
        for (attribute, value) in attributes {
            self.file(&format!("{dev}/{attribute}"), format!("{value}\n"));
        }
    }

    /// The facts of the tree, which must have no problems, and whose `/dev/disk/by-path/`
    /// names must agree with udev's own `path_id` on the same tree where this machine can
    /// run it.
    fn collect(&self) -> Facts {
        let facts = collect(self.0.path());
        assert_eq!(facts.problems, Vec::<String>::new());
        for disk in &facts.disks {
            if let Some(udev) = udev_path_id(self.0.path(), &disk.name) {
                // Where this does not follow path_id's road (USB), it has no name at all.
                assert!(
                    disk.by_path.is_none() || disk.by_path == udev,
                    "{}: udev's path_id says {udev:?}, we {:?}",
                    disk.name,
                    disk.by_path
                );
            }
        }
        facts
    }
}

/// What udev's `path_id` says of the disk `name` under `root`: `udevadm test-builtin
/// path_id`, for a tree other than `/` with the tree mounted over `/sys` in a mount namespace
/// of its own. None where this machine cannot run it: no udevadm, one older than systemd
/// v252 (where ATA disks had no names), not root.
fn udev_path_id(root: &Path, name: &str) -> Option<Option<String>> {
    let version = Command::new("udevadm").arg("--version").output().ok()?;
    let version: u32 = String::from_utf8_lossy(&version.stdout)
        .trim()
        .parse()
        .ok()?;
    if version < 252 {
        return None;
    }
    let path_id = format!("exec udevadm test-builtin path_id /sys/block/{name}");
    let mut command = if root == Path::new("/") {
        let mut sh = Command::new("sh");
        sh.args(["-c", &path_id]);
        sh
    } else {
        let mount = format!("mount --bind '{}/sys' /sys || exit 99", root.display());
        let mut unshare = Command::new("unshare");
        unshare.args(["-m", "sh", "-c", &format!("{mount}; {path_id}")]);
        unshare
    };
    let output = command
        // Let sd-device take a tree that is not sysfs.
        .env("SYSTEMD_DEVICE_VERIFY_SYSFS", "0")
        .output()
        .ok()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.code().is_none_or(|c| c == 99) || stderr.contains("Failed to open device") {
        return None;
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    Some(
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("ID_PATH="))
            .map(str::to_string),
    )
}

fn disk<'a>(facts: &'a Facts, name: &str) -> &'a Disk {
    facts
        .disks
        .iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("no disk {name}"))
}

/// The ids of a disk, in the order of the fields.
type Ids<'a> = (
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
);

fn ids(disk: &Disk) -> Ids<'_> {
    (
        disk.by_path.as_deref(),
        disk.wwn.as_deref(),
        disk.wwn_with_extension.as_deref(),
        disk.wwn_vendor_extension.as_deref(),
        disk.vendor.as_deref(),
        disk.hctl.as_deref(),
    )
}

/// VPD page 0x83 with the given designation descriptors (code set, association/type,
/// designator).
fn page83(descriptors: &[(u8, u8, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (code_set, kind, designator) in descriptors {
        body.extend_from_slice(&[*code_set, *kind, 0, designator.len() as u8]);
        body.extend_from_slice(designator);
    }
    let mut page = vec![0x00, 0x83];
    page.extend_from_slice(&(body.len() as u16).to_be_bytes());
    page.extend(body);
    page
}

/// An NAA designator of the logical unit, binary.
fn naa(bytes: &[u8]) -> (u8, u8, &[u8]) {
    (0x01, 0x03, bytes)
}

const SEAGATE_NAA: [u8; 8] = [0x50, 0x00, 0xc5, 0x00, 0xa1, 0xb2, 0xc3, 0xd4];

#[test]
fn ahci_sata_disks_are_named_by_controller_port_not_by_global_ata_number() {
    let s = Sysfs::new();
    s.device("sys/devices/pci0000:00/0000:00:17.0", "bus/pci");
    // libata's page 0x83: the T10 vendor id designator, then the drive's WWN as NAA 5.
    let t10: &[u8] = b"ATA     ST8000NM000A-2KE101                     WKD3ABCD";
    s.scsi_disk(
        "pci0000:00/0000:00:17.0/ata1/host0",
        "0:0:0:0",
        "sda",
        "ATA",
        &page83(&[(0x02, 0x01, t10), naa(&SEAGATE_NAA)]),
    );
    s.class(
        "ata_port",
        "pci0000:00/0000:00:17.0/ata1",
        &[("port_no", "1")],
    );
    // A second controller: its first port is ata3 in the kernel's count, port 1 on its own;
    // an older drive with no WWN.
    s.device("sys/devices/pci0000:00/0000:00:1f.2", "bus/pci");
    s.scsi_disk(
        "pci0000:00/0000:00:1f.2/ata4/host3",
        "3:0:0:0",
        "sdb",
        "ATA",
        &page83(&[(0x02, 0x01, b"ATA     WDC WD5000AAKX-00ERMA0")]),
    );
    s.class(
        "ata_port",
        "pci0000:00/0000:00:1f.2/ata4",
        &[("port_no", "2")],
    );
    let facts = s.collect();
    assert_eq!(
        ids(disk(&facts, "sda")),
        (
            Some("pci-0000:00:17.0-ata-1.0"),
            Some("0x5000c500a1b2c3d4"),
            Some("0x5000c500a1b2c3d4"),
            None,
            Some("ATA"),
            Some("0:0:0:0")
        )
    );
    assert_eq!(
        ids(disk(&facts, "sdb")),
        (
            Some("pci-0000:00:1f.2-ata-2.0"),
            None,
            None,
            None,
            Some("ATA"),
            Some("3:0:0:0")
        )
    );
}

#[test]
fn virtio_blk_is_named_by_its_pci_function() {
    let s = Sysfs::new();
    s.device("sys/devices/pci0000:00/0000:00:04.0", "bus/pci")
        .device("sys/devices/pci0000:00/0000:00:04.0/virtio2", "bus/virtio");
    let rel = s.disk("pci0000:00/0000:00:04.0/virtio2/block/vda");
    s.link(
        &format!("{rel}/device"),
        "sys/devices/pci0000:00/0000:00:04.0/virtio2",
    );
    // virtio's device id attribute, as Ironic's agent reads it too.
    s.file(
        "sys/devices/pci0000:00/0000:00:04.0/virtio2/vendor",
        "0x1af4\n",
    );
    let facts = s.collect();
    assert_eq!(
        ids(disk(&facts, "vda")),
        (
            Some("pci-0000:00:04.0"),
            None,
            None,
            None,
            Some("0x1af4"),
            None
        )
    );
}

#[test]
fn virtio_scsi_numbers_the_host_from_its_controllers_first() {
    let s = Sysfs::new();
    s.device("sys/devices/pci0000:00/0000:00:05.0", "bus/pci")
        .device("sys/devices/pci0000:00/0000:00:05.0/virtio3", "bus/virtio");
    // QEMU without a `wwn`: a vendor specific ASCII designator only.
    let host = "pci0000:00/0000:00:05.0/virtio3/host2";
    s.scsi_disk(
        host,
        "2:0:1:0",
        "sda",
        "QEMU",
        &page83(&[(0x02, 0x00, b"drive-scsi0-0-1-0")]),
    );
    // QEMU with `wwn=0x5000c500a1b2c3d4`.
    s.scsi_disk(
        host,
        "2:0:2:0",
        "sdb",
        "QEMU",
        &page83(&[naa(&SEAGATE_NAA)]),
    );
    let facts = s.collect();
    assert_eq!(
        ids(disk(&facts, "sda")),
        (
            Some("pci-0000:00:05.0-scsi-0:0:1:0"),
            None,
            None,
            None,
            Some("QEMU"),
            Some("2:0:1:0")
        )
    );
    assert_eq!(
        ids(disk(&facts, "sdb")),
        (
            Some("pci-0000:00:05.0-scsi-0:0:2:0"),
            Some("0x5000c500a1b2c3d4"),
            Some("0x5000c500a1b2c3d4"),
            None,
            Some("QEMU"),
            Some("2:0:2:0")
        )
    );
}

#[test]
fn a_raid_volume_has_a_16_byte_naa_and_the_controllers_address() {
    let s = Sysfs::new();
    // The controller behind a root port: the name has the controller's function only.
    s.device("sys/devices/pci0000:64/0000:64:02.0", "bus/pci")
        .device(
            "sys/devices/pci0000:64/0000:64:02.0/0000:65:00.0",
            "bus/pci",
        );
    let volume: [u8; 16] = [
        0x6d, 0x09, 0x46, 0x60, 0x6a, 0x8b, 0x1c, 0x00, 0x2d, 0x6b, 0x1e, 0x0f, 0x12, 0x34, 0x56,
        0x78,
    ];
    s.scsi_disk(
        "pci0000:64/0000:64:02.0/0000:65:00.0/host0",
        "0:2:0:0",
        "sda",
        "DELL",
        &page83(&[naa(&volume)]),
    );
    let facts = s.collect();
    assert_eq!(
        ids(disk(&facts, "sda")),
        (
            Some("pci-0000:65:00.0-scsi-0:2:0:0"),
            Some("0x6d0946606a8b1c00"),
            Some("0x6d0946606a8b1c002d6b1e0f12345678"),
            Some("0x2d6b1e0f12345678"),
            Some("DELL"),
            Some("0:2:0:0")
        )
    );
}

#[test]
fn sas_disks_are_named_by_phy_and_expander() {
    let s = Sysfs::new();
    let hba = "pci0000:00/0000:00:01.0/0000:01:00.0";
    s.device("sys/devices/pci0000:00/0000:00:01.0", "bus/pci")
        .device(&format!("sys/devices/{hba}"), "bus/pci");
    let host = format!("{hba}/host4");
    // Straight on the HBA's PHY 0: a SAS SSD, its target port's NAA before the LU's.
    let port = format!("{host}/port-4:0");
    let end_device = format!("{port}/end_device-4:0");
    s.class("sas_port", &port, &[("num_phys", "1")]);
    s.class(
        "sas_device",
        &end_device,
        &[
            ("sas_address", "0x5000cca0a1b2c3d5"),
            ("phy_identifier", "0"),
        ],
    );
    let target_port: &[u8] = &[0x50, 0x00, 0xcc, 0xa0, 0xa1, 0xb2, 0xc3, 0xd5];
    let lu: &[u8] = &[0x50, 0x00, 0xcc, 0xa0, 0xa1, 0xb2, 0xc3, 0xd4];
    s.scsi_disk_under(
        &host,
        &end_device,
        "4:0:0:0",
        "sda",
        "HGST",
        &page83(&[(0x61, 0x93, target_port), naa(lu)]),
    );
    // Behind an expander (on a wide port of 4 PHYs), on the expander's PHY 3.
    let wide = format!("{host}/port-4:1");
    let expander = format!("{wide}/expander-4:0");
    s.class("sas_port", &wide, &[("num_phys", "4")]);
    s.class(
        "sas_device",
        &expander,
        &[
            ("sas_address", "0x500304801f3c7e7f"),
            ("phy_identifier", "0"),
        ],
    );
    let port = format!("{expander}/port-4:0:0");
    let end_device = format!("{port}/end_device-4:0:0");
    s.class("sas_port", &port, &[("num_phys", "1")]);
    s.class(
        "sas_device",
        &end_device,
        &[
            ("sas_address", "0x5000c500a1b2c3d5"),
            ("phy_identifier", "3"),
        ],
    );
    s.scsi_disk_under(
        &host,
        &end_device,
        "4:0:1:0",
        "sdb",
        "SEAGATE",
        &page83(&[naa(&SEAGATE_NAA)]),
    );
    let facts = s.collect();
    assert_eq!(
        ids(disk(&facts, "sda")),
        (
            Some("pci-0000:01:00.0-sas-phy0-lun-0"),
            Some("0x5000cca0a1b2c3d4"),
            Some("0x5000cca0a1b2c3d4"),
            None,
            Some("HGST"),
            Some("4:0:0:0")
        )
    );
    assert_eq!(
        ids(disk(&facts, "sdb")),
        (
            Some("pci-0000:01:00.0-sas-exp0x500304801f3c7e7f-phy3-lun-0"),
            Some("0x5000c500a1b2c3d4"),
            Some("0x5000c500a1b2c3d4"),
            None,
            Some("SEAGATE"),
            Some("4:0:1:0")
        )
    );
}

/// An NVMe controller at `sys/devices/{pci}/nvme/{controller}`, listed in `sys/class/nvme`.
fn nvme_controller(s: &Sysfs, pci: &str, controller: &str) -> String {
    let rel = format!("sys/devices/{pci}/nvme/{controller}");
    s.device(&rel, "class/nvme");
    s.link(&format!("sys/class/nvme/{controller}"), &rel);
    rel
}

#[test]
fn nvme_namespaces_are_named_by_controller_function_and_namespace_id() {
    let s = Sysfs::new();
    let pci = "pci0000:00/0000:00:1d.0/0000:3c:00.0";
    s.device("sys/devices/pci0000:00/0000:00:1d.0", "bus/pci")
        .device(&format!("sys/devices/{pci}"), "bus/pci");
    let controller = nvme_controller(&s, pci, "nvme0");
    for (nsid, wwid) in [(1, "eui.0025385b71b4d6a0"), (2, "eui.0025385b71b4d6a1")] {
        let rel = s.disk(&format!("{pci}/nvme/nvme0/nvme0n{nsid}"));
        s.link(&format!("{rel}/device"), &controller);
        s.file(&format!("{rel}/nsid"), format!("{nsid}\n"));
        s.file(&format!("{rel}/wwid"), format!("{wwid}\n"));
    }
    let facts = s.collect();
    assert_eq!(
        ids(disk(&facts, "nvme0n1")),
        (
            Some("pci-0000:3c:00.0-nvme-1"),
            Some("eui.0025385b71b4d6a0"),
            None,
            None,
            None,
            None
        )
    );
    assert_eq!(
        disk(&facts, "nvme0n2").by_path.as_deref(),
        Some("pci-0000:3c:00.0-nvme-2")
    );
}

#[test]
fn nvme_multipath_goes_on_from_the_controller_and_fabrics_get_no_name() {
    let s = Sysfs::new();
    let pci = "pci0000:00/0000:00:1c.0/0000:3d:00.0";
    s.device("sys/devices/pci0000:00/0000:00:1c.0", "bus/pci")
        .device(&format!("sys/devices/{pci}"), "bus/pci");
    let controller = nvme_controller(&s, pci, "nvme1");
    let subsys = "sys/devices/virtual/nvme-subsystem/nvme-subsys1";
    s.device(subsys, "class/nvme-subsystem");
    let nguid = "eui.36344730526001520025384500000001";
    let rel = s.disk("virtual/nvme-subsystem/nvme-subsys1/nvme1n1");
    s.link(&format!("{rel}/device"), subsys);
    s.file(&format!("{rel}/nsid"), "1\n");
    s.file(&format!("{rel}/wwid"), format!("{nguid}\n"));
    // The path through the one controller, hidden behind the namespace's node.
    let path = s.disk(&format!("{pci}/nvme/nvme1/nvme1c1n1"));
    s.link(&format!("{path}/device"), &controller);
    s.file(&format!("{path}/hidden"), "1\n");
    // NVMe over TCP: the controller is virtual too.
    let fabric = "sys/devices/virtual/nvme-fabrics/ctl/nvme2";
    s.device(fabric, "class/nvme");
    s.link("sys/class/nvme/nvme2", fabric);
    s.device(
        "sys/devices/virtual/nvme-subsystem/nvme-subsys2",
        "class/nvme-subsystem",
    );
    let remote = s.disk("virtual/nvme-subsystem/nvme-subsys2/nvme2n1");
    s.file(&format!("{remote}/nsid"), "1\n");
    let facts = s.collect();
    let names: Vec<&str> = facts.disks.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["nvme1n1", "nvme2n1"]);
    assert_eq!(
        ids(disk(&facts, "nvme1n1")),
        (
            Some("pci-0000:3d:00.0-nvme-1"),
            Some(nguid),
            None,
            None,
            None,
            None
        )
    );
    assert_eq!(disk(&facts, "nvme2n1").by_path, None);
}

#[test]
fn transports_not_followed_get_no_name_rather_than_a_guess() {
    let s = Sysfs::new();
    // A USB stick: path_id would say pci-0000:00:14.0-usb-0:1:1.0-scsi-0:0:0:0.
    s.device("sys/devices/pci0000:00/0000:00:14.0", "bus/pci");
    for usb in ["usb2", "usb2/2-1", "usb2/2-1/2-1:1.0"] {
        s.device(
            &format!("sys/devices/pci0000:00/0000:00:14.0/{usb}"),
            "bus/usb",
        );
    }
    s.scsi_disk(
        "pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6",
        "6:0:0:0",
        "sda",
        "SanDisk",
        &page83(&[]),
    );
    // A disk whose sysfs has no device links at all (the minimal tree of facts.rs).
    s.file("sys/block/sdb/size", "2048\n");
    s.file("sys/block/sdb/queue/rotational", "1\n");
    let facts = s.collect();
    let sda = disk(&facts, "sda");
    assert_eq!(sda.by_path, None);
    assert_eq!(sda.hctl.as_deref(), Some("6:0:0:0"));
    assert_eq!(sda.vendor.as_deref(), Some("SanDisk"));
    assert_eq!(
        ids(disk(&facts, "sdb")),
        (None, None, None, None, None, None)
    );
}

/// The names against udev's on this machine, for every disk udev names: the links in
/// `/dev/disk/by-path` and `/dev/disk/by-id/wwn-*` where udev runs, else what its `path_id`
/// says of `/sys`. Disks udev gives no name are skipped.
#[test]
fn the_same_names_as_udev_on_this_machine() {
    let facts = collect(Path::new("/"));
    let by_path = links_to_disks(Path::new("/dev/disk/by-path"));
    let by_id = links_to_disks(Path::new("/dev/disk/by-id")).unwrap_or_default();
    let mut compared = 0;
    for disk in &facts.disks {
        let names: Vec<String> = match &by_path {
            Some(links) => links
                .iter()
                .filter(|(_, to)| *to == disk.name)
                .map(|(name, _)| name.clone())
                .collect(),
            None => udev_path_id(Path::new("/"), &disk.name)
                .flatten()
                .into_iter()
                .collect(),
        };
        if !names.is_empty() {
            // An ATA disk has a second, older link (`ata-1` beside `ata-1.0`): ours is one.
            assert!(
                disk.by_path.as_ref().is_some_and(|p| names.contains(p)),
                "{}: udev names it {names:?}, we {:?}",
                disk.name,
                disk.by_path
            );
            compared += 1;
        }
        let wwns: Vec<&str> = by_id
            .iter()
            .filter(|(_, to)| *to == disk.name)
            .filter_map(|(name, _)| name.strip_prefix("wwn-"))
            .collect();
        if let [wwn] = wwns.as_slice() {
            let ours = disk.wwn_with_extension.as_deref().or(disk.wwn.as_deref());
            assert_eq!(ours, Some(*wwn), "{}", disk.name);
        }
    }
    eprintln!(
        "compared {compared} of {} disks with udev",
        facts.disks.len()
    );
}

/// `(link name, disk name)` of the whole-disk links in `dir`; None when there is no `dir`.
fn links_to_disks(dir: &Path) -> Option<Vec<(String, String)>> {
    let mut links = Vec::new();
    for entry in fs::read_dir(dir).ok()?.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        if let Some(disk) = target.file_name().filter(|_| !name.contains("-part")) {
            links.push((name, disk.to_string_lossy().into_owned()));
        }
    }
    Some(links)
}

#[test]
fn a_disk_reported_by_an_older_agent_still_parses() {
    let old = r#"{"name":"sda","size_bytes":1024,"model":null,"serial":"S1","nvme":false,"rotational":true}"#;
    let disk: Disk = serde_json::from_str(old).unwrap();
    assert_eq!(disk.serial.as_deref(), Some("S1"));
    assert_eq!(ids(&disk), (None, None, None, None, None, None));
}
