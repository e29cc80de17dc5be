//! The partition table of an OS image: a GPT with the BIOS boot partition (where the recipe
//! boots on BIOS), the ESP, the separate filesystems of the hardening profile, and root last
//! so that it can grow to the disk at first boot. Every GUID and filesystem UUID is derived
//! from the image's name, so two builds of one recipe give one table.

use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::recipe::Arch;

pub const SECTOR: u64 = 512;
/// Every partition starts on a MiB.
const ALIGN: u64 = 2048;
/// Sectors the backup GPT takes at the end of the disk (header and 128 entries).
const BACKUP_GPT: u64 = 33;

/// GPT partition type GUIDs (UEFI spec; Discoverable Partitions Specification for root).
pub const TYPE_BIOS_BOOT: &str = "21686148-6449-6E6F-744E-656564454649";
pub const TYPE_ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// "Linux filesystem data": the separate filesystems are mounted by fstab, never guessed.
pub const TYPE_LINUX_DATA: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

pub fn root_type(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
        Arch::Arm64 => "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filesystem {
    /// No filesystem: GRUB's core image.
    None,
    Vfat,
    Ext4,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// GPT partition name: `bios`, `esp`, `root`, or the mount point with `-` for `/`.
    pub name: String,
    pub number: u32,
    pub type_guid: String,
    pub partuuid: String,
    pub start_sector: u64,
    pub sectors: u64,
    pub filesystem: Filesystem,
    /// The filesystem's UUID (ext4) or volume id written `XXXX-XXXX` (FAT).
    pub fs_uuid: Option<String>,
    /// Where the installed system mounts it, and with which options.
    pub mount: Option<String>,
    pub options: Option<String>,
}

impl Partition {
    pub fn offset(&self) -> u64 {
        self.start_sector * SECTOR
    }
    pub fn bytes(&self) -> u64 {
        self.sectors * SECTOR
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    pub disk_guid: String,
    pub disk_bytes: u64,
    pub partitions: Vec<Partition>,
}

/// A separate filesystem the hardening profile asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub path: String,
    pub size_mib: u64,
    pub options: String,
}

/// What the table is made from.
#[derive(Clone, Debug)]
pub struct Want<'a> {
    /// Seeds every GUID: the image's name.
    pub seed: &'a str,
    pub arch: Arch,
    pub disk_mib: u64,
    pub bios_boot_mib: Option<u64>,
    pub esp_mib: u64,
    pub mounts: &'a [Mount],
    pub root_min_mib: u64,
    pub root_options: &'a str,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error(
        "a {disk} MiB disk leaves root {root} MiB, under the {min} MiB the recipe asks for: raise disk_size_mib"
    )]
    RootTooSmall { disk: u64, root: u64, min: u64 },
    #[error("mount point {0:?} is not an absolute path of plain names, or is mounted twice")]
    BadMount(String),
}

/// A GUID from a hash of `seed` and `what`, with the RFC 9562 version 8 and variant bits.
pub fn derived_guid(seed: &str, what: &str) -> String {
    let h = sha2::Sha256::digest(format!("provisioner-image\0{seed}\0{what}"));
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b).to_uppercase();
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

/// The 32-bit FAT volume id derived like the GUIDs.
pub fn derived_volume_id(seed: &str) -> u32 {
    let h = sha2::Sha256::digest(format!("provisioner-image\0{seed}\0esp-volume-id"));
    u32::from_be_bytes([h[0], h[1], h[2], h[3]])
}

fn mount_ok(path: &str) -> bool {
    path.starts_with('/')
        && path.len() > 1
        && path[1..].split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

/// The table for `want`.
pub fn plan(want: &Want) -> Result<Table, LayoutError> {
    let mut parts = Vec::new();
    let mut next = ALIGN;
    let mut add =
        |name: &str, type_guid: &str, mib: u64, fs: Filesystem, mount: Option<(&str, &str)>| {
            let number = parts.len() as u32 + 1;
            let sectors = mib * 1024 * 1024 / SECTOR;
            parts.push(Partition {
                name: name.to_string(),
                number,
                type_guid: type_guid.to_string(),
                partuuid: derived_guid(want.seed, &format!("part-{name}")),
                start_sector: next,
                sectors,
                filesystem: fs,
                fs_uuid: match fs {
                    Filesystem::None => None,
                    Filesystem::Vfat => {
                        let id = derived_volume_id(want.seed);
                        Some(format!("{:04X}-{:04X}", id >> 16, id & 0xffff))
                    }
                    Filesystem::Ext4 => {
                        Some(derived_guid(want.seed, &format!("fs-{name}")).to_lowercase())
                    }
                },
                mount: mount.map(|(m, _)| m.to_string()),
                options: mount.map(|(_, o)| o.to_string()),
            });
            next += sectors.div_ceil(ALIGN) * ALIGN;
        };
    if let Some(mib) = want.bios_boot_mib {
        add("bios", TYPE_BIOS_BOOT, mib, Filesystem::None, None);
    }
    add(
        "esp",
        TYPE_ESP,
        want.esp_mib,
        Filesystem::Vfat,
        Some(("/boot/efi", "umask=0077,nodev,nosuid,noexec")),
    );
    let mut seen = std::collections::BTreeSet::new();
    for m in want.mounts {
        if !mount_ok(&m.path) || !seen.insert(m.path.as_str()) {
            return Err(LayoutError::BadMount(m.path.clone()));
        }
        let name = m.path[1..].replace('/', "-");
        add(
            &name,
            TYPE_LINUX_DATA,
            m.size_mib,
            Filesystem::Ext4,
            Some((&m.path, &m.options)),
        );
    }
    let disk_sectors = want.disk_mib * 1024 * 1024 / SECTOR;
    let last_usable = disk_sectors.saturating_sub(BACKUP_GPT + 1);
    let root_sectors = (last_usable + 1).saturating_sub(next);
    let root_mib = root_sectors * SECTOR / (1024 * 1024);
    if root_mib < want.root_min_mib {
        return Err(LayoutError::RootTooSmall {
            disk: want.disk_mib,
            root: root_mib,
            min: want.root_min_mib,
        });
    }
    parts.push(Partition {
        name: "root".to_string(),
        number: parts.len() as u32 + 1,
        type_guid: root_type(want.arch).to_string(),
        partuuid: derived_guid(want.seed, "part-root"),
        start_sector: next,
        sectors: root_sectors,
        filesystem: Filesystem::Ext4,
        fs_uuid: Some(derived_guid(want.seed, "fs-root").to_lowercase()),
        mount: Some("/".to_string()),
        options: Some(want.root_options.to_string()),
    });
    Ok(Table {
        disk_guid: derived_guid(want.seed, "disk"),
        disk_bytes: disk_sectors * SECTOR,
        partitions: parts,
    })
}

impl Table {
    /// The input `sfdisk` reads to write this table.
    pub fn sfdisk_script(&self) -> String {
        let mut s = format!(
            "label: gpt\nlabel-id: {}\nunit: sectors\nfirst-lba: {ALIGN}\nsector-size: {SECTOR}\n\n",
            self.disk_guid
        );
        for p in &self.partitions {
            s += &format!(
                "start={}, size={}, type={}, uuid={}, name=\"{}\"\n",
                p.start_sector, p.sectors, p.type_guid, p.partuuid, p.name
            );
        }
        s
    }

    pub fn get(&self, name: &str) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.name == name)
    }

    pub fn root(&self) -> &Partition {
        // plan() always ends with root.
        &self.partitions[self.partitions.len() - 1]
    }

    /// The filesystem holding `/boot` (its own, where the profile asks for one, else root)
    /// and where `/boot` is inside it: what GRUB searches for and reads the kernel from.
    pub fn boot(&self) -> (&Partition, &'static str) {
        match self
            .partitions
            .iter()
            .find(|p| p.mount.as_deref() == Some("/boot"))
        {
            Some(p) => (p, ""),
            None => (self.root(), "/boot"),
        }
    }

    /// `/etc/fstab`: every filesystem by UUID, the deepest mounts after their parents.
    pub fn fstab(&self) -> String {
        let mut lines = vec![
            "# Written by provisioner image build: every filesystem by UUID.".to_string(),
            "# <file system> <mount point> <type> <options> <dump> <pass>".to_string(),
        ];
        let mut mounted: Vec<&Partition> = self
            .partitions
            .iter()
            .filter(|p| p.mount.is_some())
            .collect();
        mounted.sort_by_key(|p| {
            let m = p.mount.as_deref().unwrap_or("");
            (m != "/", m.matches('/').count(), m.to_string())
        });
        for p in mounted {
            let (Some(uuid), Some(mount)) = (&p.fs_uuid, &p.mount) else {
                continue;
            };
            let (fstype, pass) = match p.filesystem {
                Filesystem::Vfat => ("vfat", 2),
                _ if mount == "/" => ("ext4", 1),
                _ => ("ext4", 2),
            };
            lines.push(format!(
                "UUID={uuid} {mount} {fstype} {} 0 {pass}",
                p.options.as_deref().unwrap_or("defaults")
            ));
        }
        lines.join("\n") + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounts() -> Vec<Mount> {
        vec![
            Mount {
                path: "/var".into(),
                size_mib: 512,
                options: "nodev".into(),
            },
            Mount {
                path: "/var/log".into(),
                size_mib: 256,
                options: "nodev,nosuid,noexec".into(),
            },
            Mount {
                path: "/tmp".into(),
                size_mib: 256,
                options: "nodev,nosuid,noexec".into(),
            },
        ]
    }

    fn want(m: &[Mount]) -> Want<'_> {
        Want {
            seed: "debian12-hardened-1.0.0-x86_64",
            arch: Arch::X86_64,
            disk_mib: 4096,
            bios_boot_mib: Some(1),
            esp_mib: 128,
            mounts: m,
            root_min_mib: 2048,
            root_options: "defaults,x-systemd.growfs",
        }
    }

    #[test]
    fn root_comes_last_and_fills_the_disk_to_the_backup_gpt() {
        let m = mounts();
        let t = plan(&want(&m)).unwrap();
        let names: Vec<&str> = t.partitions.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["bios", "esp", "var", "var-log", "tmp", "root"]);
        let root = t.root();
        assert_eq!(root.start_sector + root.sectors, 4096 * 2048 - 33);
        for w in t.partitions.windows(2) {
            assert!(w[0].start_sector + w[0].sectors <= w[1].start_sector);
            assert_eq!(w[1].start_sector % ALIGN, 0);
        }
        assert_eq!(t.partitions[0].start_sector, 2048);
        assert_eq!(t.boot(), (t.root(), "/boot"));
        let mut with_boot = m.clone();
        with_boot.push(Mount {
            path: "/boot".into(),
            size_mib: 512,
            options: "nodev".into(),
        });
        let t = plan(&want(&with_boot)).unwrap();
        assert_eq!(t.boot().0.name, "boot");
        assert_eq!(t.boot().1, "");
    }

    #[test]
    fn guids_depend_on_the_image_name_only() {
        let m = mounts();
        let a = plan(&want(&m)).unwrap();
        assert_eq!(a, plan(&want(&m)).unwrap());
        let mut other = want(&m);
        other.seed = "debian12-hardened-1.0.1-x86_64";
        let b = plan(&other).unwrap();
        assert_ne!(a.disk_guid, b.disk_guid);
        assert_ne!(a.root().fs_uuid, b.root().fs_uuid);
        let g = derived_guid("x", "y");
        assert_eq!(g.len(), 36);
        assert_eq!(&g[14..15], "8", "version 8: {g}");
    }

    #[test]
    fn a_disk_too_small_for_root_or_a_hostile_mount_is_refused() {
        let m = mounts();
        let mut w = want(&m);
        w.disk_mib = 2048;
        assert!(matches!(plan(&w), Err(LayoutError::RootTooSmall { .. })));
        for bad in ["/var/../etc", "var", "/", "/a b", "/var"] {
            let mut m = mounts();
            m.push(Mount {
                path: bad.into(),
                size_mib: 8,
                options: "defaults".into(),
            });
            assert!(
                matches!(plan(&want(&m)), Err(LayoutError::BadMount(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn fstab_mounts_parents_first_and_sfdisk_gets_every_partition() {
        let m = mounts();
        let t = plan(&want(&m)).unwrap();
        let fstab = t.fstab();
        let order: Vec<&str> = fstab
            .lines()
            .filter(|l| l.starts_with("UUID="))
            .map(|l| l.split(' ').nth(1).unwrap())
            .collect();
        assert_eq!(order, ["/", "/tmp", "/var", "/boot/efi", "/var/log"]);
        assert!(fstab.contains(" /var/log ext4 nodev,nosuid,noexec 0 2"));
        let script = t.sfdisk_script();
        assert_eq!(script.matches("start=").count(), 6);
        assert!(script.contains(&format!("type={TYPE_BIOS_BOOT}")));
    }
}
