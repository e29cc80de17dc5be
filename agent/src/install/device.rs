//! The target disk as an open file: its size, its logical sector size, and dropping its cached
//! pages so that a read-back reads the medium, not memory. A regular file stands in for a disk
//! in tests; everything here works on both.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// `BLKSSZGET` = `_IO(0x12, 104)`: the logical sector size of a block device (same number on
/// x86-64 and arm64).
const BLKSSZGET: libc::c_ulong = 0x1268;
/// What a regular file standing in for a disk is taken to have.
pub const FILE_SECTOR: u64 = 512;

/// Opens the disk for reading and writing; never creates or truncates it. A block device is
/// opened exclusively: the kernel refuses (EBUSY) one that is mounted or part of an array.
pub fn open(path: &Path) -> io::Result<File> {
    let block = std::fs::metadata(path)?.file_type().is_block_device();
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    if block {
        options.custom_flags(libc::O_EXCL);
    }
    options.open(path)
}

/// Size in bytes: the end of a block device, the length of a file.
pub fn size(file: &File) -> io::Result<u64> {
    let mut f = file;
    f.seek(SeekFrom::End(0))
}

/// Logical sector size: the kernel's for a block device, [`FILE_SECTOR`] for a file.
pub fn sector_size(file: &File) -> io::Result<u64> {
    if !file.metadata()?.file_type().is_block_device() {
        return Ok(FILE_SECTOR);
    }
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which points at `size`.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKSSZGET as _, &mut size) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    u64::try_from(size)
        .ok()
        .filter(|s| s.is_power_of_two() && *s >= 512)
        .ok_or_else(|| io::Error::other(format!("logical sector size {size}")))
}

/// Drops the clean cached pages of the whole disk (after an fsync they are all clean), so
/// the next reads come from the medium.
pub fn drop_cache(file: &File) -> io::Result<()> {
    // SAFETY: plain syscall on an open descriptor; offsets 0, 0 mean the whole file.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}
