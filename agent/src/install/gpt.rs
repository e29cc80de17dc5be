//! Fitting an image's GPT (UEFI 2.10, section 5.3) to a larger disk: the image carries its
//! backup header and entries at the image's end, not the disk's. They move to the disk's last
//! LBAs, the last partition (the root, which grows its filesystem at first boot with
//! `x-systemd.growfs`) is extended to the new last usable LBA, the protective MBR's size is
//! updated, and every CRC32 is recomputed; `sgdisk -e` plus `growpart`, in one step.
//!
//! The primary header and entries live in the image's first MiB, which the writer holds in
//! memory until everything else is verified: [`relocate`] edits them there and writes only
//! the backup copy to the disk. Hand-written over `crc32fast` rather than the `gpt` crate,
//! which reads and writes a whole disk through its own device handle and cannot edit a
//! header that is still in memory.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::device;

const SIGNATURE: &[u8; 8] = b"EFI PART";
const HEADER_MIN: usize = 92;
const ENTRY_MIN: usize = 128;
/// The spec's minimum is 128 entries; allow a generous multiple and no more.
const ENTRIES_MAX: usize = 4096;
/// Protective MBR: first partition record, its type and LBA fields, the boot signature.
const MBR_PART1: usize = 446;
const MBR_TYPE_PROTECTIVE: u8 = 0xee;
const MBR_SIGNATURE: [u8; 2] = [0x55, 0xaa];

/// What [`relocate`] changed, in LBAs of `sector` bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GptChange {
    pub sector: u64,
    /// 1-based entry number of the grown partition.
    pub partition: u32,
    pub old_last_lba: u64,
    pub new_last_lba: u64,
    pub old_backup_lba: u64,
    pub new_backup_lba: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum GptError {
    #[error("no GPT header at LBA 1 of the image (512- or 4096-byte sectors)")]
    NoGpt,
    #[error("the image has {image}-byte sectors, the disk {disk}-byte ones")]
    SectorSize { image: u64, disk: u64 },
    #[error("GPT header: {0}")]
    Header(String),
    #[error("GPT header CRC32 {got:08x}, expected {expected:08x}")]
    HeaderCrc { got: u32, expected: u32 },
    #[error("GPT partition entries CRC32 {got:08x}, expected {expected:08x}")]
    EntriesCrc { got: u32, expected: u32 },
    #[error("GPT partition entries at bytes {start}-{end} lie outside the first {held} bytes")]
    EntriesOutside { start: u64, end: u64, held: u64 },
    #[error("the disk has {disk_lbas} LBAs, fewer than the image's {image_lbas}")]
    DiskSmaller { image_lbas: u64, disk_lbas: u64 },
    #[error("the GPT has no partition to grow")]
    NoPartitions,
    #[error(
        "partition {partition} ends at LBA {last}: before its start or past the last usable LBA {last_usable}"
    )]
    PartitionPastEnd {
        partition: u32,
        last: u64,
        last_usable: u64,
    },
    #[error("open {device}: {source}")]
    Open { device: PathBuf, source: io::Error },
    #[error("{what} at byte {offset}: {source}")]
    Io {
        what: &'static str,
        offset: u64,
        source: io::Error,
    },
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// A GPT header's bytes (`header_size` of them) and its fields.
struct Header(Vec<u8>);

impl Header {
    const CRC: usize = 16;
    const MY_LBA: usize = 24;
    const ALTERNATE_LBA: usize = 32;
    const LAST_USABLE: usize = 48;
    const ENTRIES_LBA: usize = 72;
    const ENTRIES_COUNT: usize = 80;
    const ENTRY_SIZE: usize = 84;
    const ENTRIES_CRC: usize = 88;

    /// Reads and checks the header at the start of `sector_bytes`.
    fn read(sector_bytes: &[u8]) -> Result<Header, GptError> {
        if sector_bytes.get(..8) != Some(SIGNATURE) {
            return Err(GptError::NoGpt);
        }
        let size = u32_at(sector_bytes, 12) as usize;
        if !(HEADER_MIN..=sector_bytes.len()).contains(&size) {
            return Err(GptError::Header(format!("header size {size}")));
        }
        let header = Header(sector_bytes[..size].to_vec());
        let expected = header.crc();
        let got = header.computed_crc();
        if got != expected {
            return Err(GptError::HeaderCrc { got, expected });
        }
        Ok(header)
    }

    fn get(&self, at: usize) -> u64 {
        u64_at(&self.0, at)
    }

    fn set(&mut self, at: usize, v: u64) {
        put_u64(&mut self.0, at, v);
    }

    fn crc(&self) -> u32 {
        u32_at(&self.0, Self::CRC)
    }

    fn computed_crc(&self) -> u32 {
        let mut copy = self.0.clone();
        put_u32(&mut copy, Self::CRC, 0);
        crc32fast::hash(&copy)
    }

    fn seal(&mut self) {
        let crc = self.computed_crc();
        put_u32(&mut self.0, Self::CRC, crc);
    }

    /// The header padded with zeros to a whole sector.
    fn sector(&self, sector: usize) -> Vec<u8> {
        let mut out = vec![0u8; sector];
        out[..self.0.len()].copy_from_slice(&self.0);
        out
    }
}

/// Finds the image's sector size: the LBA 1 that holds a GPT signature.
fn image_sector(first: &[u8]) -> Result<u64, GptError> {
    [512u64, 4096]
        .into_iter()
        .find(|&s| first.get(s as usize..s as usize + 8) == Some(SIGNATURE))
        .ok_or(GptError::NoGpt)
}

/// Moves the backup GPT to the end of a disk of `disk_bytes` with `disk_sector`-byte LBAs and
/// grows the last partition to the new last usable LBA. `first` is the image's first bytes
/// (at least through the primary entries), edited in place; the backup entries and header
/// are written to `disk`, and the image's old backup area is zeroed (it now lies inside the
/// grown partition). The caller syncs and writes `first` afterwards.
pub fn relocate(
    first: &mut [u8],
    disk: &File,
    disk_bytes: u64,
    disk_sector: u64,
) -> Result<GptChange, GptError> {
    let sector = image_sector(first)?;
    if sector != disk_sector {
        return Err(GptError::SectorSize {
            image: sector,
            disk: disk_sector,
        });
    }
    let ss = sector as usize;
    let mut header = Header::read(first.get(ss..2 * ss).ok_or(GptError::NoGpt)?)?;
    if header.get(Header::MY_LBA) != 1 {
        return Err(GptError::Header(format!(
            "primary header says it is at LBA {}",
            header.get(Header::MY_LBA)
        )));
    }
    let (entries_at, entries_len) = entries_span(&header, sector, first.len() as u64)?;
    let entries = &mut first[entries_at..entries_at + entries_len];
    let expected = u32_at(&header.0, Header::ENTRIES_CRC);
    let got = crc32fast::hash(entries);
    if got != expected {
        return Err(GptError::EntriesCrc { got, expected });
    }

    let old_backup = header.get(Header::ALTERNATE_LBA);
    let old_last_usable = header.get(Header::LAST_USABLE);
    let disk_lbas = disk_bytes / sector;
    let entry_lbas = (entries_len as u64).div_ceil(sector);
    if old_last_usable >= old_backup {
        return Err(GptError::Header(format!(
            "last usable LBA {old_last_usable} is not before the backup header's {old_backup}"
        )));
    }
    let smaller = GptError::DiskSmaller {
        image_lbas: old_backup.saturating_add(1),
        disk_lbas,
    };
    if disk_lbas <= old_backup {
        return Err(smaller);
    }
    let new_backup = disk_lbas - 1;
    let new_last_usable = new_backup
        .checked_sub(entry_lbas + 1)
        .filter(|l| *l >= old_last_usable)
        .ok_or(smaller)?;
    let entry_size = u32_at(&header.0, Header::ENTRY_SIZE) as usize;
    let (partition, old_last_lba) =
        grow_last(entries, entry_size, old_last_usable, new_last_usable)?;

    header.set(Header::ALTERNATE_LBA, new_backup);
    header.set(Header::LAST_USABLE, new_last_usable);
    put_u32(&mut header.0, Header::ENTRIES_CRC, crc32fast::hash(entries));
    let entries = entries.to_vec();
    header.seal();
    first[ss..ss + header.0.len()].copy_from_slice(&header.0);
    protective_mbr(first, disk_lbas);

    let mut backup = Header(header.0.clone());
    backup.set(Header::MY_LBA, new_backup);
    backup.set(Header::ALTERNATE_LBA, 1);
    backup.set(Header::ENTRIES_LBA, new_last_usable + 1);
    backup.seal();

    // The image's old backup area (entries and header after its last usable LBA).
    if old_backup != new_backup {
        let from = (old_last_usable + 1).max(old_backup.saturating_sub(entry_lbas));
        let start = from * sector;
        let zeros = vec![0u8; ((old_backup - from + 1) * sector) as usize];
        write(disk, &zeros, start, "zeroing the image's old backup GPT")?;
    }
    let mut padded = entries;
    padded.resize((entry_lbas * sector) as usize, 0);
    write(
        disk,
        &padded,
        (new_last_usable + 1) * sector,
        "writing the backup GPT entries",
    )?;
    write(
        disk,
        &backup.sector(ss),
        new_backup * sector,
        "writing the backup GPT header",
    )?;
    Ok(GptChange {
        sector,
        partition,
        old_last_lba,
        new_last_lba: new_last_usable,
        old_backup_lba: old_backup,
        new_backup_lba: new_backup,
    })
}

/// Byte offset and length of the primary entries, checked to lie within `held` bytes.
fn entries_span(header: &Header, sector: u64, held: u64) -> Result<(usize, usize), GptError> {
    let count = u32_at(&header.0, Header::ENTRIES_COUNT) as usize;
    let size = u32_at(&header.0, Header::ENTRY_SIZE) as usize;
    if size < ENTRY_MIN || !size.is_power_of_two() || count == 0 || count > ENTRIES_MAX {
        return Err(GptError::Header(format!("{count} entries of {size} bytes")));
    }
    let lba = header.get(Header::ENTRIES_LBA);
    let len = (count * size) as u64;
    let start = lba.checked_mul(sector).filter(|s| *s >= 2 * sector);
    match start {
        Some(start) if start + len <= held => Ok((start as usize, len as usize)),
        _ => Err(GptError::EntriesOutside {
            start: lba.saturating_mul(sector),
            end: lba.saturating_mul(sector).saturating_add(len),
            held,
        }),
    }
}

/// One used entry of a GPT, in LBAs of the table's sector size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// 1-based entry number: the kernel's partition number.
    pub number: u32,
    /// The type GUID, upper case, as the specifications write it.
    pub type_guid: String,
    pub first_lba: u64,
    pub last_lba: u64,
    /// The partition's own GUID as stored (the bytes a UEFI `HD()` device path carries).
    pub unique_guid: [u8; 16],
}

/// The sector size and used entries of the GPT in `first` (the image's first bytes, primary
/// header and entries), both CRCs checked.
pub fn entries(first: &[u8]) -> Result<(u64, Vec<Entry>), GptError> {
    let sector = image_sector(first)?;
    let ss = sector as usize;
    let header = Header::read(first.get(ss..2 * ss).ok_or(GptError::NoGpt)?)?;
    let (at, len) = entries_span(&header, sector, first.len() as u64)?;
    let table = &first[at..at + len];
    let expected = u32_at(&header.0, Header::ENTRIES_CRC);
    let got = crc32fast::hash(table);
    if got != expected {
        return Err(GptError::EntriesCrc { got, expected });
    }
    let size = u32_at(&header.0, Header::ENTRY_SIZE) as usize;
    let used = table
        .chunks_exact(size)
        .enumerate()
        .filter(|(_, e)| e[..16].iter().any(|b| *b != 0))
        .map(|(i, e)| Entry {
            number: i as u32 + 1,
            type_guid: guid_text(&e[..16]),
            first_lba: u64_at(e, 32),
            last_lba: u64_at(e, 40),
            unique_guid: e[16..32].try_into().expect("16 bytes"),
        })
        .collect();
    Ok((sector, used))
}

/// A GUID's 16 bytes as text: the first three fields are stored little-endian.
pub fn guid_text(b: &[u8]) -> String {
    format!(
        "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{}",
        u32_at(b, 0),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        b[8],
        b[9],
        b[10..16]
            .iter()
            .map(|x| format!("{x:02X}"))
            .collect::<String>()
    )
}

/// Extends the used entry that ends last to `new_last`; returns its number and old end.
fn grow_last(
    entries: &mut [u8],
    entry_size: usize,
    old_last_usable: u64,
    new_last: u64,
) -> Result<(u32, u64), GptError> {
    const FIRST_LBA: usize = 32;
    const LAST_LBA: usize = 40;
    let mut last: Option<(usize, u64)> = None;
    for (i, entry) in entries.chunks_exact(entry_size).enumerate() {
        if entry[..16].iter().all(|&b| b == 0) {
            continue;
        }
        let end = u64_at(entry, LAST_LBA);
        let number = i as u32 + 1;
        if end > old_last_usable || end < u64_at(entry, FIRST_LBA) {
            return Err(GptError::PartitionPastEnd {
                partition: number,
                last: end,
                last_usable: old_last_usable,
            });
        }
        if last.is_none_or(|(_, e)| end > e) {
            last = Some((i, end));
        }
    }
    let (i, old_end) = last.ok_or(GptError::NoPartitions)?;
    put_u64(&mut entries[i * entry_size..], LAST_LBA, new_last);
    Ok((i as u32 + 1, old_end))
}

/// A pure protective MBR (one 0xEE record from LBA 1) covers the whole disk, or as much as
/// 32 bits can say. A hybrid MBR is left as the image made it.
fn protective_mbr(first: &mut [u8], disk_lbas: u64) {
    let record = &mut first[MBR_PART1..MBR_PART1 + 16];
    let protective = record[4] == MBR_TYPE_PROTECTIVE && u32_at(record, 8) == 1;
    if first[510..512] == MBR_SIGNATURE && protective {
        let size = u32::try_from(disk_lbas - 1).unwrap_or(u32::MAX);
        put_u32(&mut first[MBR_PART1..], 12, size);
    }
}

fn write(disk: &File, bytes: &[u8], offset: u64, what: &'static str) -> Result<(), GptError> {
    disk.write_all_at(bytes, offset)
        .map_err(|source| GptError::Io {
            what,
            offset,
            source,
        })
}

/// [`relocate`] on a disk already written whole: reads its first MiB, relocates, writes it
/// back and syncs.
pub fn grow_gpt(dev: &Path) -> Result<GptChange, GptError> {
    let open_err = |source| GptError::Open {
        device: dev.to_path_buf(),
        source,
    };
    let disk = device::open(dev).map_err(open_err)?;
    let size = device::size(&disk).map_err(open_err)?;
    let sector = device::sector_size(&disk).map_err(open_err)?;
    let mut first = vec![0u8; size.min(1 << 20) as usize];
    disk.read_exact_at(&mut first, 0)
        .map_err(|source| GptError::Io {
            what: "reading the first MiB",
            offset: 0,
            source,
        })?;
    let change = relocate(&mut first, &disk, size, sector)?;
    write(&disk, &first, 0, "writing the first MiB")?;
    disk.sync_all().map_err(|source| GptError::Io {
        what: "fsync",
        offset: 0,
        source,
    })?;
    Ok(change)
}

#[cfg(test)]
#[path = "gpt_tests.rs"]
pub(crate) mod tests;
