//! The read-back phase: every mapped range is read from the disk (its cache dropped first, so
//! the reads reach the medium) and its sha256 compared with the block map's. The part of a
//! range inside the held-back first MiB is taken from memory: it is not on the disk yet.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::InstallError;
use super::bmap::MappedRange;
use super::meter::{Meter, Phase};

/// Bytes read per call.
const READ: usize = 8 << 20;

/// Checks every range of `ranges` on `disk`, with `held` standing in for the disk's start.
pub(super) fn read_back(
    disk: &File,
    ranges: &[MappedRange],
    held: &[u8],
    meter: &mut Meter<'_>,
) -> Result<(), InstallError> {
    let total = ranges.iter().map(MappedRange::len).sum();
    meter.phase(Phase::ReadBack, Some(total), Instant::now());
    let mut buf = vec![0u8; READ];
    for range in ranges {
        let mut hasher = Sha256::new();
        let mut at = range.start;
        // Each turn moves `at` forward by at least one byte, up to range.end.
        while at < range.end {
            let n = if at < held.len() as u64 {
                let n = (range.end.min(held.len() as u64) - at) as usize;
                hasher.update(&held[at as usize..at as usize + n]);
                n
            } else {
                let n = (range.end - at).min(READ as u64) as usize;
                disk.read_exact_at(&mut buf[..n], at)
                    .map_err(|source| InstallError::Read { offset: at, source })?;
                hasher.update(&buf[..n]);
                n
            };
            at += n as u64;
            meter.verified += n as u64;
            meter.tick(Instant::now());
        }
        let got: [u8; 32] = hasher.finalize().into();
        if got != range.sha256 {
            return Err(InstallError::ReadBack {
                start: range.start,
                end: range.end,
                got: hex::encode(got),
                expected: hex::encode(range.sha256),
            });
        }
    }
    meter.report(Instant::now());
    Ok(())
}
