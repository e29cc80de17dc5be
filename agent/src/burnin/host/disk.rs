//! Disks: a sequential read of each, with O_DIRECT so the figure is the disk's and not the
//! page cache's; and a write-read-verify of scratch regions, only on a disk the plan lets the
//! burn-in wipe. Writing needs a [`WritableDisk`], which only the plan's list can make: a
//! write to any other disk does not compile.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use provisioner_protocol::burnin::BurnInPlan;

use super::memory::splitmix64;

/// O_DIRECT wants buffers, offsets and lengths aligned to the logical block size; 4 KiB is a
/// multiple of every one in use.
pub const ALIGN: usize = 4096;
/// Bytes per read or write.
const IO_SIZE: usize = 1 << 20;
/// At most this much of a disk is written per scratch region.
const MAX_REGION: u64 = 256 << 20;
/// Bad blocks reported by offset; all are counted.
const REPORTED: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{}: cannot open: {source}", .path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("{}: read at {offset}: {source}", .path.display())]
    Read {
        path: PathBuf,
        offset: u64,
        source: io::Error,
    },
    #[error("{}: write at {offset}: {source}", .path.display())]
    Write {
        path: PathBuf,
        offset: u64,
        source: io::Error,
    },
    #[error("{}: flush: {source}", .path.display())]
    Flush { path: PathBuf, source: io::Error },
}

/// A buffer whose bytes start on an `ALIGN` boundary, without unsafe allocation: a little
/// more is allocated and the aligned part used.
pub struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    pub fn new(len: usize) -> AlignedBuf {
        let storage = vec![0u8; len + ALIGN];
        let start = storage.as_ptr().align_offset(ALIGN);
        AlignedBuf {
            storage,
            start,
            len,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// How the disk was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// O_DIRECT: the disk itself.
    Direct,
    /// Through the page cache, where O_DIRECT was refused (EINVAL): a file system that does
    /// not support it, or an odd block size.
    Cached,
}

/// A disk the plan lets the burn-in write to. Its fields are private and its only
/// constructor checks the plan, so holding one is the proof that writing is allowed.
#[derive(Debug)]
pub struct WritableDisk {
    name: String,
    path: PathBuf,
}

impl WritableDisk {
    /// The disk `name` (a kernel name, as in `/sys/block`) in `dev` (`/dev` on a node), if
    /// and only if the plan's `disks_writable` names it.
    pub fn from_plan(plan: &BurnInPlan, name: &str, dev: &Path) -> Option<WritableDisk> {
        let plain = !name.is_empty() && !name.contains('/') && name != "." && name != "..";
        (plain && plan.disks_writable.iter().any(|w| w == name)).then(|| WritableDisk {
            name: name.to_string(),
            path: dev.join(name),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A sequential read.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadRun {
    pub bytes: u64,
    pub elapsed: Duration,
    pub mode: Mode,
    pub timed_out: bool,
}

impl ReadRun {
    /// Decimal megabytes per second, as disks are rated.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Reads `bytes` (rounded down to `ALIGN`) from the start of `path`, sequentially, until
/// `deadline`.
pub fn sequential_read(path: &Path, bytes: u64, deadline: Instant) -> Result<ReadRun, DiskError> {
    let bytes = bytes - bytes % ALIGN as u64;
    let (file, mode) = open(path, false)?;
    match read_all(path, &file, bytes, mode, deadline) {
        // O_DIRECT accepted at open but refused at the first read.
        Err(DiskError::Read {
            offset: 0, source, ..
        }) if mode == Mode::Direct && source.raw_os_error() == Some(libc::EINVAL) => {
            let file = open_with(path, false, false)?;
            read_all(path, &file, bytes, Mode::Cached, deadline)
        }
        other => other,
    }
}

fn read_all(
    path: &Path,
    file: &File,
    bytes: u64,
    mode: Mode,
    deadline: Instant,
) -> Result<ReadRun, DiskError> {
    let mut buf = AlignedBuf::new(IO_SIZE);
    let start = Instant::now();
    let mut offset = 0u64;
    let mut timed_out = false;
    while offset < bytes {
        if Instant::now() >= deadline {
            timed_out = true;
            break;
        }
        let len = (bytes - offset).min(IO_SIZE as u64) as usize;
        let n = file
            .read_at(&mut buf.as_mut_slice()[..len], offset)
            .map_err(|source| DiskError::Read {
                path: path.to_path_buf(),
                offset,
                source,
            })?;
        offset += n as u64;
        // The end of the disk, or a short read that would leave the next one unaligned.
        if n == 0 || n % ALIGN != 0 {
            break;
        }
    }
    Ok(ReadRun {
        bytes: offset,
        elapsed: start.elapsed(),
        mode,
        timed_out,
    })
}

/// A part of a disk that is written and read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub offset: u64,
    pub len: u64,
}

/// Where to write on a disk of `size` bytes, with about `budget` bytes in all: at its start,
/// its middle and its end, so a fault in addressing far into the disk shows. Each region is
/// aligned, at least one block and at most `MAX_REGION`.
pub fn scratch_regions(size: u64, budget: u64) -> Vec<Region> {
    let align = ALIGN as u64;
    let size = size - size % align;
    if size == 0 {
        return Vec::new();
    }
    let len = (budget / 3).clamp(align, MAX_REGION);
    let len = len - len % align;
    if size < 3 * len {
        return vec![Region {
            offset: 0,
            len: len.min(size),
        }];
    }
    let middle = size / 2 - (size / 2) % align;
    vec![
        Region { offset: 0, len },
        Region {
            offset: middle,
            len,
        },
        Region {
            offset: size - len,
            len,
        },
    ]
}

/// What a write-read-verify found.
#[derive(Clone, Debug, PartialEq)]
pub struct Verify {
    /// `ALIGN`-sized blocks written and read back.
    pub blocks: u64,
    /// Blocks that read back different from what was written.
    pub bad_blocks: u64,
    /// Byte offsets of the first bad blocks.
    pub bad_offsets: Vec<u64>,
    pub mode: Mode,
    pub timed_out: bool,
}

/// The contents of the block at byte `offset`: a stream seeded by the offset, so a block
/// written to the wrong place reads back wrong too.
pub fn block_pattern(block: &mut [u8], offset: u64, seed: u64) {
    for (i, word) in block.chunks_exact_mut(8).enumerate() {
        let value = splitmix64(seed ^ (offset + i as u64 * 8));
        word.copy_from_slice(&value.to_le_bytes());
    }
}

/// Writes each region of `disk` with `block_pattern`, flushes it to the disk, reads it back
/// and counts the blocks that differ, until `deadline`.
pub fn write_read_verify(
    disk: &WritableDisk,
    regions: &[Region],
    seed: u64,
    deadline: Instant,
) -> Result<Verify, DiskError> {
    let path = disk.path();
    let (file, mode) = open(path, true)?;
    let mut verify = Verify {
        blocks: 0,
        bad_blocks: 0,
        bad_offsets: Vec::new(),
        mode,
        timed_out: false,
    };
    let mut buf = AlignedBuf::new(IO_SIZE);
    let mut expected = vec![0u8; IO_SIZE];
    for region in regions {
        let pieces = pieces(region);
        for &(offset, len) in &pieces {
            if Instant::now() >= deadline {
                verify.timed_out = true;
                return Ok(verify);
            }
            let block = &mut buf.as_mut_slice()[..len];
            for (i, b) in block.chunks_exact_mut(ALIGN).enumerate() {
                block_pattern(b, offset + (i * ALIGN) as u64, seed);
            }
            file.write_all_at(block, offset)
                .map_err(|source| DiskError::Write {
                    path: path.to_path_buf(),
                    offset,
                    source,
                })?;
        }
        flush(path, &file, mode, region)?;
        for &(offset, len) in &pieces {
            if Instant::now() >= deadline {
                verify.timed_out = true;
                return Ok(verify);
            }
            let block = &mut buf.as_mut_slice()[..len];
            file.read_exact_at(block, offset)
                .map_err(|source| DiskError::Read {
                    path: path.to_path_buf(),
                    offset,
                    source,
                })?;
            for (i, (got, want)) in block
                .chunks_exact(ALIGN)
                .zip(expected[..len].chunks_exact_mut(ALIGN))
                .enumerate()
            {
                let at = offset + (i * ALIGN) as u64;
                block_pattern(want, at, seed);
                verify.blocks += 1;
                if got != want {
                    verify.bad_blocks += 1;
                    if verify.bad_offsets.len() < REPORTED {
                        verify.bad_offsets.push(at);
                    }
                }
            }
        }
    }
    Ok(verify)
}

/// A region as the writes and reads that cover it.
fn pieces(region: &Region) -> Vec<(u64, usize)> {
    let mut pieces = Vec::new();
    let mut offset = region.offset;
    let end = region.offset + region.len;
    while offset < end {
        let len = (end - offset).min(IO_SIZE as u64) as usize;
        pieces.push((offset, len));
        offset += len as u64;
    }
    pieces
}

/// Makes the region's writes reach the disk, and, without O_DIRECT, drops them from the page
/// cache so the read that follows comes from the disk.
fn flush(path: &Path, file: &File, mode: Mode, region: &Region) -> Result<(), DiskError> {
    file.sync_data().map_err(|source| DiskError::Flush {
        path: path.to_path_buf(),
        source,
    })?;
    if mode == Mode::Cached {
        let (Ok(offset), Ok(len)) = (
            libc::off_t::try_from(region.offset),
            libc::off_t::try_from(region.len),
        ) else {
            return Ok(());
        };
        // SAFETY: posix_fadvise only advises the kernel about the open descriptor's pages.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED);
        }
    }
    Ok(())
}

/// Opens with O_DIRECT, or without it where the kernel refuses it (EINVAL).
fn open(path: &Path, write: bool) -> Result<(File, Mode), DiskError> {
    match open_with(path, write, true) {
        Ok(file) => Ok((file, Mode::Direct)),
        Err(DiskError::Open { source, .. }) if source.raw_os_error() == Some(libc::EINVAL) => {
            Ok((open_with(path, write, false)?, Mode::Cached))
        }
        Err(e) => Err(e),
    }
}

fn open_with(path: &Path, write: bool, direct: bool) -> Result<File, DiskError> {
    let mut flags = if direct { libc::O_DIRECT } else { 0 };
    if write {
        // On a block device, O_EXCL fails while the disk is mounted or otherwise in use: a
        // disk the plan calls scratch but that holds a live file system is not written.
        flags |= libc::O_EXCL;
    }
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(flags)
        .open(path)
        .map_err(|source| DiskError::Open {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(writable: &[&str]) -> BurnInPlan {
        BurnInPlan {
            gemm_seconds: 0,
            hbm_fraction: 0.9,
            cpu_seconds: 0,
            memory_fraction: 0.0,
            disk_read_bytes: 0,
            disks_writable: writable.iter().map(|s| s.to_string()).collect(),
            nic_speed_mbps: None,
            tool_timeout_seconds: 1,
            only: Vec::new(),
        }
    }

    #[test]
    fn only_the_plans_disks_are_writable() {
        let dev = Path::new("/dev");
        let plan = plan(&["nvme1n1"]);
        let disk = WritableDisk::from_plan(&plan, "nvme1n1", dev).unwrap();
        assert_eq!(disk.path(), Path::new("/dev/nvme1n1"));
        assert!(WritableDisk::from_plan(&plan, "nvme0n1", dev).is_none());
        assert!(WritableDisk::from_plan(&plan, "../nvme1n1", dev).is_none());
    }

    #[test]
    fn a_name_with_a_slash_is_never_writable() {
        let plan = plan(&["../sda", "sda/..", ""]);
        for name in ["../sda", "sda/..", ""] {
            assert!(WritableDisk::from_plan(&plan, name, Path::new("/dev")).is_none());
        }
    }

    #[test]
    fn buffers_are_aligned_for_o_direct() {
        for len in [ALIGN, 3 * ALIGN, IO_SIZE] {
            let mut buf = AlignedBuf::new(len);
            assert_eq!(buf.as_slice().as_ptr() as usize % ALIGN, 0);
            assert_eq!(buf.as_mut_slice().len(), len);
        }
    }

    #[test]
    fn regions_at_the_start_middle_and_end() {
        let gib = 1u64 << 30;
        let regions = scratch_regions(100 * gib, 3 * (64 << 20));
        assert_eq!(
            regions,
            [
                Region {
                    offset: 0,
                    len: 64 << 20
                },
                Region {
                    offset: 50 * gib,
                    len: 64 << 20
                },
                Region {
                    offset: 100 * gib - (64 << 20),
                    len: 64 << 20
                },
            ]
        );
        // A small disk: one region, as much as there is.
        assert_eq!(
            scratch_regions(10_000, 1 << 30),
            [Region {
                offset: 0,
                len: 8192
            }]
        );
        assert!(scratch_regions(100, 1 << 20).is_empty());
        // Never more than MAX_REGION each, never less than a block.
        assert!(
            scratch_regions(1 << 50, 1 << 40)
                .iter()
                .all(|r| r.len == MAX_REGION)
        );
        assert_eq!(scratch_regions(gib, 0)[0].len, ALIGN as u64);
    }

    #[test]
    fn each_block_is_its_own() {
        let mut a = vec![0u8; ALIGN];
        let mut b = vec![0u8; ALIGN];
        block_pattern(&mut a, 0, 1);
        block_pattern(&mut b, ALIGN as u64, 1);
        assert_ne!(a, b);
        let mut again = vec![0u8; ALIGN];
        block_pattern(&mut again, 0, 1);
        assert_eq!(a, again);
    }
}
