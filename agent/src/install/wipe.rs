//! Wiping the old signatures off a disk before an image is written to it, so that nothing of
//! the old layout can be found on the new disk (and nothing boots until the new first MiB is
//! written last).
//!
//! The first MiB holds the protective MBR and primary GPT (LBA 0-33), an LVM2 label (one of
//! the first 4 sectors), md 1.1 (offset 0) and 1.2 (4 KiB) superblocks, and the ext2/3/4
//! (1 KiB), xfs (0), btrfs (64 KiB) and swap (last bytes of the first page) signatures. The
//! last MiB holds the backup GPT (the last 33 LBAs) and md 0.90 and 1.0 superblocks (0.90 at
//! the last 64 KiB boundary at least 64 KiB from the end, 1.0 8 KiB before the end).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::device;

/// How much is zeroed at each end.
pub const WIPE_BYTES: u64 = 1 << 20;

/// One zeroed span of the disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub len: u64,
    /// What used to live there.
    pub covers: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum WipeError {
    #[error("open {device}: {source}")]
    Open { device: PathBuf, source: io::Error },
    #[error("size of {device}: {source}")]
    Size { device: PathBuf, source: io::Error },
    #[error("zeroing {len} bytes at byte {start}: {source}")]
    Write {
        start: u64,
        len: u64,
        source: io::Error,
    },
    #[error("fsync after wiping: {0}")]
    Sync(io::Error),
}

/// Zeroes the first and last MiB of the disk at `dev` and syncs; returns what was zeroed.
pub fn wipe_signatures(dev: &Path) -> Result<Vec<Span>, WipeError> {
    let file = device::open(dev).map_err(|source| WipeError::Open {
        device: dev.to_path_buf(),
        source,
    })?;
    let size = device::size(&file).map_err(|source| WipeError::Size {
        device: dev.to_path_buf(),
        source,
    })?;
    wipe(&file, size)
}

/// The spans to zero on a disk of `size` bytes: one when the ends meet.
pub fn spans(size: u64) -> Vec<Span> {
    if size <= 2 * WIPE_BYTES {
        return vec![Span {
            start: 0,
            len: size,
            covers: "the whole disk: every signature",
        }];
    }
    vec![
        Span {
            start: 0,
            len: WIPE_BYTES,
            covers: "MBR, primary GPT, LVM2 label, md 1.1/1.2, ext4, xfs, btrfs, swap",
        },
        Span {
            start: size - WIPE_BYTES,
            len: WIPE_BYTES,
            covers: "backup GPT, md 0.90/1.0",
        },
    ]
}

/// Zeroes [`spans`] of an open disk of `size` bytes and syncs.
pub fn wipe(file: &File, size: u64) -> Result<Vec<Span>, WipeError> {
    let spans = spans(size);
    let zeros = vec![0u8; WIPE_BYTES as usize];
    for span in &spans {
        let mut at = span.start;
        let end = span.start + span.len;
        while at < end {
            let n = (end - at).min(WIPE_BYTES);
            // n <= WIPE_BYTES = zeros.len()
            file.write_all_at(&zeros[..n as usize], at)
                .map_err(|source| WipeError::Write {
                    start: span.start,
                    len: span.len,
                    source,
                })?;
            at += n;
        }
    }
    file.sync_all().map_err(WipeError::Sync)?;
    Ok(spans)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    use std::process::{Command, Stdio};

    use super::*;

    use crate::install::have;

    /// The signature types `wipefs` finds on `path`.
    fn signatures(path: &Path) -> Vec<String> {
        let out = Command::new("wipefs")
            .args(["--noheadings", "--output", "TYPE"])
            .arg(path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn leaves_nothing_wipefs_can_find() {
        if !["wipefs", "sfdisk", "mkfs.ext4", "mkswap"]
            .iter()
            .all(|t| have(t))
        {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        let makers: [(&str, &[&str]); 3] = [
            ("sfdisk", &["-q"]),
            ("mkfs.ext4", &["-q", "-F"]),
            ("mkswap", &["-q"]),
        ];
        for (tool, args) in makers {
            File::create(&path).unwrap().set_len(16 << 20).unwrap();
            let mut child = Command::new(tool)
                .args(args)
                .arg(&path)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(b"label: gpt\n,,L\n").unwrap();
            drop(stdin);
            assert!(child.wait().unwrap().success(), "{tool}");
            assert!(!signatures(&path).is_empty(), "{tool} left no signature");
            wipe_signatures(&path).unwrap();
            assert_eq!(signatures(&path), Vec::<String>::new(), "after {tool}");
        }
    }

    #[test]
    fn zeroes_both_ends_and_nothing_between() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        let size = 5 * WIPE_BYTES + 4096;
        std::fs::write(&path, vec![0xa5u8; size as usize]).unwrap();
        let spans = wipe_signatures(&path).unwrap();
        assert_eq!(
            spans.iter().map(|s| (s.start, s.len)).collect::<Vec<_>>(),
            [(0, WIPE_BYTES), (size - WIPE_BYTES, WIPE_BYTES)]
        );
        let disk = std::fs::read(&path).unwrap();
        let mib = WIPE_BYTES as usize;
        assert!(disk[..mib].iter().all(|&b| b == 0));
        assert!(disk[mib..disk.len() - mib].iter().all(|&b| b == 0xa5));
        assert!(disk[disk.len() - mib..].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_small_disk_is_zeroed_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::write(&path, vec![1u8; 3 << 19]).unwrap();
        let spans = wipe_signatures(&path).unwrap();
        assert_eq!(spans.len(), 1);
        let file = File::open(&path).unwrap();
        let mut back = vec![1u8; 3 << 19];
        file.read_exact_at(&mut back, 0).unwrap();
        assert!(back.iter().all(|&b| b == 0));
    }
}
