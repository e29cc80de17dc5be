//! Installing an OS image: what the appliance tells the agent to write (`Instruction::Install`)
//! and what the agent reports back (`POST /api/v1/agent/install`). The appliance chose the disk
//! from the inspection facts and the root device hints; the agent checks that the disk it finds
//! is still that one before it writes a byte.

use serde::{Deserialize, Serialize};

/// `Instruction::Install`: one image onto one disk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstallPlan {
    /// The image's name in the appliance's library (`debian12-hardened-1.0.0-x86_64`).
    pub image: String,
    /// The zstd-compressed raw image: an artifact URL, served with Range and ETag.
    pub url: String,
    /// sha256 of the compressed image, hex.
    pub sha256: String,
    /// sha256 of the raw image, hex (what the installed system reports back).
    pub raw_sha256: String,
    /// Size of the raw image in bytes: the disk must hold at least this.
    pub raw_bytes: u64,
    /// The block map (bmaptool's XML, format 2.0): which ranges to write, with their sha256.
    pub bmap_url: String,
    /// sha256 of the block map, hex.
    pub bmap_sha256: String,
    /// The disk to write.
    pub disk: TargetDisk,
    /// What the installed system is configured with on its first boot.
    pub first_boot: FirstBoot,
}

/// The disk chosen from the inspection report. The agent refuses to write a disk whose name,
/// size or serial differ from these: the hardware changed since inspection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetDisk {
    /// Kernel name at inspection (`sda`, `nvme0n1`).
    pub name: String,
    pub size_bytes: u64,
    pub serial: Option<String>,
    /// The hints that chose it, in their compact form, for messages.
    pub hints: String,
}

/// First-boot configuration written into the installed system by the agent. The installed
/// agent reaches the appliance at the URL the installing agent used.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FirstBoot {
    /// From the slot (`r01-u07`).
    pub hostname: String,
    /// `authorized_keys` lines for the operator's account.
    pub ssh_authorized_keys: Vec<String>,
    /// NTP servers (the appliance's address unless configured).
    pub ntp: Vec<String>,
    /// apt `deb` lines: only the appliance's own repository.
    pub apt_sources: Vec<String>,
    /// The appliance's archive key (OpenPGP, armored) the `deb` lines name as `signed-by`
    /// (`/etc/apt/keyrings/provisioner-archive.asc`); empty when there are no sources.
    #[serde(default)]
    pub apt_keyring: String,
    /// The node's own credential for the installed agent (`Authorization: Bearer`). Only its
    /// hash is kept on the appliance; each install makes a new one.
    pub credential: String,
}

/// `POST /api/v1/agent/install`: how the write went.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstallReport {
    pub mac: crate::MacAddr,
    pub image: String,
    pub outcome: InstallOutcome,
    /// Bytes written to the disk (the mapped ranges).
    pub written_bytes: u64,
    /// Bytes received over the network.
    pub received_bytes: u64,
    pub seconds: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum InstallOutcome {
    /// Written, read back against the block map, first MiB written last.
    Written,
    /// The disk's signatures were wiped (`Instruction::Wipe`): it boots nothing.
    Wiped,
    /// A stage failed: which, and the numbers (`read-back of range 512-1024 MiB: sha256 ...
    /// expected ...`). The disk is left without a bootable first MiB.
    Failed { stage: String, reason: String },
}

/// `POST /api/v1/agent/installed`: the installed system's first call, with its install's
/// credential: what it booted, read from the system itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstalledReport {
    pub mac: crate::MacAddr,
    /// The image's name, as the installer recorded it on the disk.
    pub image: String,
    /// sha256 of the raw image, as the installer recorded it after its read-back.
    pub raw_sha256: String,
    /// `uname -r` of the running kernel.
    pub kernel_release: String,
}

/// `/etc/provisioner/node.json` on an installed system (mode 0600): what the installer wrote
/// for the installed agent, so that it finds the appliance and proves who it is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The appliance, as the installing agent reached it (`http://10.99.0.1:8080`).
    pub url: String,
    /// The boot interface the node was installed through.
    pub mac: crate::MacAddr,
    /// The install's credential (`Authorization: Bearer`).
    pub credential: String,
    pub image: String,
    /// sha256 of the raw image the installer wrote and read back.
    pub raw_sha256: String,
    pub hostname: String,
}
