//! The agent ↔ appliance protocol: the facts a node reports about itself, and what the
//! appliance tells it to do next. Both sides build on these types, so a field added here is
//! added to both at once. The agent reports; the appliance decides (DESIGN.md).
//!
//! Endpoints (all with `Authorization: Bearer <provisioner.token>` from the kernel command
//! line, bound to the node's MAC and to this boot):
//! - `POST /api/v1/agent/inspection` with [`InspectionReport`] → 202, or 401/403/409 with a
//!   [`Refusal`];
//! - `GET /api/v1/agent/next?mac=MAC` → [`Instruction`].

use serde::{Deserialize, Serialize};

pub mod burnin;
pub mod drivers;
pub mod ids;
pub mod install;

pub use ids::{BadId, BadMac, MacAddr, RackId, SlotId};

/// PCI vendor id of NVIDIA.
pub const VENDOR_NVIDIA: u16 = 0x10de;
/// PCI vendor id of Amazon (AWS Neuron / Trainium devices).
pub const VENDOR_AMAZON: u16 = 0x1d0f;

/// Where the agent's calls go, under `provisioner.url`.
pub const PATH_INSPECTION: &str = "/api/v1/agent/inspection";
pub const PATH_NEXT: &str = "/api/v1/agent/next";
pub const PATH_BURNIN: &str = "/api/v1/agent/burnin";
pub const PATH_PROGRESS: &str = "/api/v1/agent/progress";
pub const PATH_INSTALL: &str = "/api/v1/agent/install";
pub const PATH_INSTALLED: &str = "/api/v1/agent/installed";
pub const PATH_DRIVERS: &str = "/api/v1/agent/drivers";

/// `POST /api/v1/agent/progress`: console lines of a long step (burn-in), sent as they come,
/// so the appliance shows where a node is before its report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProgressReport {
    pub mac: MacAddr,
    pub lines: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InspectionReport {
    /// The boot interface's MAC, as given in `provisioner.mac`.
    pub mac: MacAddr,
    pub facts: Facts,
}

/// What a node is, read from sysfs and procfs on the node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    pub dmi: Dmi,
    pub cpu: Cpu,
    pub memory: Memory,
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
    /// Every PCI function.
    pub pci: Vec<PciDevice>,
    /// PCI addresses of the NVIDIA GPUs (vendor 0x10de, display or 3D controller class).
    pub gpus: Vec<String>,
    /// PCI addresses of the Neuron devices (vendor 0x1d0f, not a NIC or NVMe function).
    pub neuron_devices: Vec<String>,
    /// Anything the agent could not read, with why: facts are partial, never silently.
    #[serde(default)]
    pub problems: Vec<String>,
}

/// `/sys/class/dmi/id`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Dmi {
    pub sys_vendor: Option<String>,
    pub product_name: Option<String>,
    pub product_serial: Option<String>,
    pub board_vendor: Option<String>,
    pub board_name: Option<String>,
    pub board_serial: Option<String>,
    pub bios_vendor: Option<String>,
    pub bios_version: Option<String>,
    pub bios_date: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    /// The machine as the kernel names it (`uname -m`: `x86_64`, `aarch64`); absent from
    /// reports of agents older than arm64 support.
    #[serde(default)]
    pub arch: Option<String>,
    pub model: Option<String>,
    pub sockets: u32,
    /// Physical cores over all sockets.
    pub cores: u32,
    /// Logical CPUs (hardware threads) over all sockets.
    pub threads: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// `MemTotal` of /proc/meminfo: what the kernel can use, a little under what is fitted.
    pub total_bytes: u64,
    /// Fitted DIMMs, where the firmware's SMBIOS tables are readable (type 17).
    pub dimms: Vec<Dimm>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Dimm {
    pub locator: String,
    pub size_bytes: u64,
    pub speed_mts: Option<u32>,
    pub manufacturer: Option<String>,
    pub part_number: Option<String>,
    pub serial: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    /// Kernel name, e.g. `nvme0n1`, `sda`, `vda`.
    pub name: String,
    pub size_bytes: u64,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub nvme: bool,
    pub rotational: bool,
    /// World Wide Name as udev's `ID_WWN` has it, which is what Ironic's `wwn` hint matches:
    /// `0x5000c500a1b2c3d4` for SCSI and SATA (the NAA designator of VPD page 0x83), the
    /// namespace's `wwid` as the kernel writes it for NVMe (`eui.0025385b71b4d6a0`).
    /// The fields from here on are absent from reports of older agents.
    #[serde(default)]
    pub wwn: Option<String>,
    /// udev's `ID_WWN_WITH_EXTENSION`: the whole 16-byte NAA of a SCSI disk that has one
    /// (`0x6d0946606a8b1c002d6b1e0f12345678`), else the same as `wwn`. None for NVMe.
    #[serde(default)]
    pub wwn_with_extension: Option<String>,
    /// udev's `ID_WWN_VENDOR_EXTENSION`: the last 8 bytes of a 16-byte NAA.
    #[serde(default)]
    pub wwn_vendor_extension: Option<String>,
    /// `device/vendor` in sysfs, trimmed: `ATA` for SATA disks, the SCSI vendor of SAS
    /// disks and RAID volumes, the virtio vendor id of virtio-blk (`0x1af4`); none for NVMe.
    #[serde(default)]
    pub vendor: Option<String>,
    /// SCSI `host:channel:target:lun`, for disks on the SCSI layer (SATA, SAS, virtio-scsi).
    #[serde(default)]
    pub hctl: Option<String>,
    /// The disk's name under `/dev/disk/by-path/` as udev's `path_id` makes it
    /// (`pci-0000:3c:00.0-nvme-1`), computed from sysfs: stable for a slot across boots.
    #[serde(default)]
    pub by_path: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Nic {
    pub name: String,
    pub mac: String,
    pub driver: Option<String>,
    pub pci_address: Option<String>,
    /// Link speed in Mb/s when the link is up and the driver says.
    pub speed_mbps: Option<u32>,
    pub carrier: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PciDevice {
    /// `0000:17:00.0`
    pub address: String,
    pub vendor: u16,
    pub device: u16,
    pub subsystem_vendor: Option<u16>,
    pub subsystem_device: Option<u16>,
    /// 24-bit class code, e.g. 0x030200 for a 3D controller.
    pub class: u32,
    pub driver: Option<String>,
    pub link: Option<PciLink>,
}

/// A PCIe link as trained, against what it can do: a GPU at x8 of x16 is a fault to find.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PciLink {
    /// e.g. `32.0 GT/s PCIe`
    pub speed: Option<String>,
    pub max_speed: Option<String>,
    pub width: Option<u32>,
    pub max_width: Option<u32>,
}

/// What the appliance tells an agent to do next.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Instruction {
    /// Send the inspection report (again).
    Report,
    /// Ask again after this many seconds.
    Wait { seconds: u32, reason: String },
    /// Power the node off.
    PowerOff { reason: String },
    /// Reboot the node (it network-boots and gets what its state says).
    Reboot { reason: String },
    /// Run the burn-in and report it (`POST /api/v1/agent/burnin`).
    BurnIn { plan: burnin::BurnInPlan },
    /// Write an OS image to a disk and report it (`POST /api/v1/agent/install`).
    Install { plan: Box<install::InstallPlan> },
    /// Check the driver set the installed image carries (`drivers::DriverSet`) on this
    /// system and report it (`POST /api/v1/agent/drivers`), before burn-in.
    VerifyDrivers { set: Box<drivers::DriverSet> },
    /// Wipe the signatures of the disk an earlier install wrote (a retired or reprovisioned
    /// node) and report it (`POST /api/v1/agent/install`, outcome `wiped`).
    Wipe {
        /// The install whose disk it is, named in the report.
        image: String,
        disk: install::TargetDisk,
        reason: String,
    },
}

/// Why a call was refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    pub error: String,
}
