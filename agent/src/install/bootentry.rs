//! The UEFI boot entry for an installed disk, written through efivarfs as `efibootmgr` would:
//! one `Boot####` load option (`HD(partition, GPT, its GUID)/\EFI\BOOT\BOOTX64.EFI`), named
//! [`OURS`] so that the next install finds it, and placed in `BootOrder` after the last
//! network entry. Network boot stays first: what a node boots is the appliance's decision, and
//! an entry of ours from an earlier install (stale: another partition GUID, another disk) is
//! removed. Entries that are not ours are never touched, and the network entries never
//! reordered.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::gpt;

/// The EFI global variable GUID, as efivarfs names its files.
pub const GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// Every description of ours starts with this.
pub const OURS: &str = "Provisioner: ";
/// EFI System Partition type GUID.
pub const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// `NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS`.
const ATTRIBUTES: u32 = 0x7;
/// `LOAD_OPTION_ACTIVE`.
const ACTIVE: u32 = 0x1;
/// `FS_IOC_GETFLAGS` / `FS_IOC_SETFLAGS` (`_IOR`/`_IOW('f', 1|2, long)`, 64-bit).
const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
const FS_IOC_SETFLAGS: libc::c_ulong = 0x4008_6602;
const FS_IMMUTABLE_FL: libc::c_long = 0x10;

#[derive(Debug, thiserror::Error)]
pub enum BootEntryError {
    #[error("the image's GPT: {0}")]
    Gpt(#[from] gpt::GptError),
    #[error("the image has no EFI system partition")]
    NoEsp,
    #[error("efivarfs is not mounted at {0} (no variables there)")]
    NoVariables(PathBuf),
    #[error("{name}: {source}")]
    Io { name: String, source: io::Error },
    #[error("every Boot#### number is taken")]
    Full,
}

/// A decoded `EFI_LOAD_OPTION`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadOption {
    pub attributes: u32,
    pub description: String,
    /// The device path list, as stored.
    pub path: Vec<u8>,
}

impl LoadOption {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&self.attributes.to_le_bytes());
        b.extend_from_slice(&(self.path.len() as u16).to_le_bytes());
        b.extend(utf16z(&self.description));
        b.extend_from_slice(&self.path);
        b
    }

    /// `None` when `b` is not a load option (too short, an unterminated description, a path
    /// list longer than what is left).
    pub fn decode(b: &[u8]) -> Option<LoadOption> {
        let attributes = u32::from_le_bytes(b.get(..4)?.try_into().ok()?);
        let path_len = u16::from_le_bytes(b.get(4..6)?.try_into().ok()?) as usize;
        let mut units = Vec::new();
        let mut at = 6;
        loop {
            let u = u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?);
            at += 2;
            if u == 0 {
                break;
            }
            units.push(u);
        }
        let path = b.get(at..at + path_len)?.to_vec();
        Some(LoadOption {
            attributes,
            description: String::from_utf16_lossy(&units),
            path,
        })
    }

    /// Whether the path boots from the network (a MAC, IPv4, IPv6 or URI node).
    pub fn is_network(&self) -> bool {
        nodes(&self.path).any(|(t, s)| t == 0x03 && matches!(s, 0x0B | 0x0C | 0x0D | 0x18))
    }
}

/// The (type, subtype) of each node of a device path, up to its end node.
fn nodes(path: &[u8]) -> impl Iterator<Item = (u8, u8)> + '_ {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let h = path.get(at..at + 4)?;
        let (t, s, len) = (h[0], h[1], u16::from_le_bytes([h[2], h[3]]) as usize);
        if (t == 0x7F && s == 0xFF) || len < 4 {
            return None;
        }
        at += len;
        Some((t, s))
    })
}

fn utf16z(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain([0])
        .flat_map(|u| u.to_le_bytes())
        .collect()
}

/// `HD(number, GPT, guid, start, size)/File(loader)/End`: the short form firmware expands
/// to whichever disk holds that partition.
pub fn disk_path(esp: &gpt::Entry, loader: &str) -> Vec<u8> {
    let mut p = vec![0x04, 0x01, 42, 0];
    p.extend_from_slice(&esp.number.to_le_bytes());
    p.extend_from_slice(&esp.first_lba.to_le_bytes());
    p.extend_from_slice(&(esp.last_lba - esp.first_lba + 1).to_le_bytes());
    p.extend_from_slice(&esp.unique_guid);
    p.extend_from_slice(&[0x02, 0x02]); // GPT, GUID signature
    let file = utf16z(loader);
    p.extend_from_slice(&[0x04, 0x04]);
    p.extend_from_slice(&((4 + file.len()) as u16).to_le_bytes());
    p.extend(file);
    p.extend_from_slice(&[0x7F, 0xFF, 0x04, 0x00]);
    p
}

/// The image's removable-media loader for this architecture.
pub fn loader() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => r"\EFI\BOOT\BOOTAA64.EFI",
        _ => r"\EFI\BOOT\BOOTX64.EFI",
    }
}

/// What [`add_disk_entry`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct Added {
    pub number: u16,
    /// Entries of ours from earlier installs, removed.
    pub removed: Vec<u16>,
    pub order: Vec<u16>,
}

impl std::fmt::Display for Added {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex = |v: &[u16]| {
            v.iter()
                .map(|n| format!("{n:04X}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        write!(f, "Boot{:04X}, BootOrder {}", self.number, hex(&self.order))?;
        if !self.removed.is_empty() {
            write!(f, " (removed ours: {})", hex(&self.removed))?;
        }
        Ok(())
    }
}

/// The variables in an efivarfs directory.
struct Vars<'a>(&'a Path);

impl Vars<'_> {
    fn file(&self, name: &str) -> PathBuf {
        self.0.join(format!("{name}-{GLOBAL}"))
    }

    fn io(name: &str) -> impl FnOnce(io::Error) -> BootEntryError + '_ {
        move |source| BootEntryError::Io {
            name: name.to_string(),
            source,
        }
    }

    /// The variable's data (without its attributes), if it exists.
    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, BootEntryError> {
        let mut b = Vec::new();
        match File::open(self.file(name)) {
            Ok(mut f) => f.read_to_end(&mut b).map_err(Self::io(name))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::io(name)(e)),
        };
        Ok(Some(b.get(4..).unwrap_or_default().to_vec()))
    }

    /// Writes the variable in one `write` (efivarfs takes nothing else), clearing the
    /// immutable flag efivarfs puts on existing variables first.
    fn write(&self, name: &str, data: &[u8]) -> Result<(), BootEntryError> {
        let path = self.file(name);
        if path.exists() {
            mutable(&path).map_err(Self::io(name))?;
        }
        let mut b = ATTRIBUTES.to_le_bytes().to_vec();
        b.extend_from_slice(data);
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(Self::io(name))?;
        let n = f.write(&b).map_err(Self::io(name))?;
        if n != b.len() {
            return Err(Self::io(name)(io::Error::other(format!(
                "{n} of {} bytes written",
                b.len()
            ))));
        }
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<(), BootEntryError> {
        let path = self.file(name);
        mutable(&path).map_err(Self::io(name))?;
        std::fs::remove_file(&path).map_err(Self::io(name))
    }

    /// The numbers of every `Boot####` variable.
    fn boot_numbers(&self) -> Result<Vec<u16>, BootEntryError> {
        let dir = std::fs::read_dir(self.0).map_err(Self::io("efivarfs"))?;
        let mut all = Vec::new();
        let mut any = false;
        for e in dir.flatten() {
            any = true;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix("Boot") else {
                continue;
            };
            if let Some((hex, guid)) = rest.split_once('-')
                && guid == GLOBAL
                && hex.len() == 4
                && let Ok(n) = u16::from_str_radix(hex, 16)
            {
                all.push(n);
            }
        }
        if !any {
            return Err(BootEntryError::NoVariables(self.0.to_path_buf()));
        }
        all.sort_unstable();
        Ok(all)
    }
}

/// Clears the immutable flag (efivarfs sets it on every variable); a filesystem without
/// flags has none to clear.
fn mutable(path: &Path) -> io::Result<()> {
    let f = File::open(path)?;
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one long through the pointer, which lives on this stack.
    if unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_GETFLAGS as _, &mut flags) } != 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOTTY | libc::EOPNOTSUPP | libc::EINVAL) => Ok(()),
            _ => Err(e),
        };
    }
    if flags & FS_IMMUTABLE_FL == 0 {
        return Ok(());
    }
    flags &= !FS_IMMUTABLE_FL;
    // SAFETY: FS_IOC_SETFLAGS reads one long through the pointer.
    if unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_SETFLAGS as _, &flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn order_of(data: &[u8]) -> Vec<u16> {
    data.chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// Adds the entry for the image whose first MiB is `first` (its ESP) under `description`
/// (which starts with [`OURS`]) to the variables in `vars` (efivarfs), after the network
/// entries, and removes earlier entries of ours.
pub fn add_disk_entry(
    vars: &Path,
    first: &[u8],
    description: &str,
    loader: &str,
) -> Result<Added, BootEntryError> {
    debug_assert!(description.starts_with(OURS));
    let (_, entries) = gpt::entries(first)?;
    let esp = entries
        .iter()
        .find(|e| e.type_guid == ESP_TYPE)
        .ok_or(BootEntryError::NoEsp)?;
    let v = Vars(vars);
    let numbers = v.boot_numbers()?;
    let mut order = order_of(&v.read("BootOrder")?.unwrap_or_default());
    let mut removed = Vec::new();
    let mut network = Vec::new();
    for &n in &numbers {
        let name = format!("Boot{n:04X}");
        let Some(option) = v.read(&name)?.as_deref().and_then(LoadOption::decode) else {
            continue;
        };
        if option.description.starts_with(OURS) {
            v.remove(&name)?;
            removed.push(n);
        } else if option.is_network() {
            network.push(n);
        }
    }
    order.retain(|n| !removed.contains(n));
    let number = (0..=u16::MAX)
        .find(|n| removed.contains(n) || !numbers.contains(n))
        .ok_or(BootEntryError::Full)?;
    let option = LoadOption {
        attributes: ACTIVE,
        description: description.to_string(),
        path: disk_path(esp, loader),
    };
    v.write(&format!("Boot{number:04X}"), &option.encode())?;
    let at = order
        .iter()
        .rposition(|n| network.contains(n))
        .map_or(order.len(), |i| i + 1);
    order.insert(at, number);
    let data: Vec<u8> = order.iter().flat_map(|n| n.to_le_bytes()).collect();
    v.write("BootOrder", &data)?;
    Ok(Added {
        number,
        removed,
        order,
    })
}

#[cfg(test)]
#[path = "bootentry_tests.rs"]
mod tests;
