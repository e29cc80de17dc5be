//! Writing an OS image to the node's disk (`Instruction::Install`): the block map first (its
//! sha256 checked against the plan), old signatures wiped, the zstd image streamed from the
//! appliance with only its mapped ranges written, every range read back against the block
//! map, the GPT fitted to the disk, and the first MiB (boot code, protective MBR, primary GPT)
//! written last. A failure anywhere leaves a disk whose first MiB is zero: it does not boot.
//!
//! Phases live in their own files: [`bmap`] (the map), [`fetch`] (HTTP with resume),
//! [`wipe`], `stream` (download+write), `verify` (read-back), [`gpt`] (relocation).

pub mod bmap;
pub mod bootentry;
mod device;
pub mod fetch;
pub mod firstboot;
pub mod gpt;
mod meter;
mod stream;
pub mod target;
mod verify;

/// Whether `tool` runs here; without it a test is skipped, except under CI, where it fails.
#[cfg(test)]
pub(crate) fn have(tool: &str) -> bool {
    let found = std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{tool} is missing and CI=true: install it"
        );
        eprintln!("skipping: {tool} is not installed");
    }
    found
}
pub mod wipe;

use std::fmt;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use provisioner_protocol::install::{InstallOutcome, InstallPlan};
use sha2::{Digest, Sha256};

pub use self::fetch::{FetchError, Retry};
pub use self::gpt::{GptChange, GptError, grow_gpt};
pub use self::meter::{Phase, Progress};
pub use self::wipe::{Span, WipeError, wipe_signatures};

/// A block map of a 16 GiB image is a few MiB at worst.
const BMAP_LIMIT: u64 = 64 << 20;

/// Where the image comes from and what it must hash to: the parts of an [`InstallPlan`] the
/// writer needs.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSource {
    /// The zstd-compressed raw image.
    pub url: String,
    /// sha256 of the compressed image, hex.
    pub sha256: String,
    pub bmap_url: String,
    /// sha256 of the block map, hex.
    pub bmap_sha256: String,
    /// Size of the raw image: the block map must say the same.
    pub raw_bytes: u64,
}

impl From<&InstallPlan> for ImageSource {
    fn from(plan: &InstallPlan) -> Self {
        ImageSource {
            url: plan.url.clone(),
            sha256: plan.sha256.clone(),
            bmap_url: plan.bmap_url.clone(),
            bmap_sha256: plan.bmap_sha256.clone(),
            raw_bytes: plan.raw_bytes,
        }
    }
}

#[derive(Clone, Debug)]
pub struct WriteOptions {
    /// Bounds each connection attempt.
    pub connect_timeout: Duration,
    /// Bounds each wait for the server (answer or next bytes), not the whole transfer.
    pub stall_timeout: Duration,
    /// How often a dropped transfer is resumed.
    pub retry: Retry,
    /// Move the backup GPT to the disk's end and grow the last partition (on in production;
    /// off to compare the disk with the image byte for byte).
    pub grow_gpt: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            connect_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(60),
            retry: Retry::default(),
            grow_gpt: true,
        }
    }
}

/// What was done.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteSummary {
    pub image_bytes: u64,
    pub disk_bytes: u64,
    /// Bytes in the block map's ranges: what was written and read back.
    pub mapped_bytes: u64,
    /// Compressed bytes received (bytes sent twice counted twice).
    pub received_bytes: u64,
    pub written_bytes: u64,
    /// How many times the transfer was resumed or retried.
    pub retries: u32,
    pub wiped: Vec<Span>,
    pub gpt: Option<GptChange>,
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("the plan's {field} {text:?} is not a sha256 in hex")]
    PlanDigest { field: &'static str, text: String },
    #[error("open {device}: {source}")]
    Open { device: PathBuf, source: io::Error },
    #[error("{what} of {device}: {source}")]
    Device {
        device: PathBuf,
        what: &'static str,
        source: io::Error,
    },
    #[error("fetching the block map: {0}")]
    BmapFetch(FetchError),
    #[error("block map sha256 {got}, expected {expected}")]
    BmapDigest { got: String, expected: String },
    #[error("block map: {0}")]
    Bmap(#[from] bmap::BmapError),
    #[error("the block map says the image has {bmap} bytes, the plan {plan}")]
    SizeDisagrees { bmap: u64, plan: u64 },
    #[error("{device} has {bytes} bytes, the image needs {needs}")]
    DeviceTooSmall {
        device: PathBuf,
        bytes: u64,
        needs: u64,
    },
    #[error("wiping old signatures: {0}")]
    Wipe(#[from] WipeError),
    #[error("downloading the image (decompressed up to byte {at}): {source}")]
    ImageFetch { at: u64, source: FetchError },
    #[error("decompressing at image byte {at}: {source}")]
    Decompress { at: u64, source: io::Error },
    #[error("the image decompresses to {got} bytes or more, the block map says {expected}")]
    ImageLength { got: u64, expected: u64 },
    #[error(
        "compressed image sha256 {got}, expected {expected}{}",
        decompress.as_ref().map(|d| format!(" ({d})")).unwrap_or_default()
    )]
    ImageDigest {
        got: String,
        expected: String,
        decompress: Option<String>,
    },
    #[error("writing {len} bytes at byte {offset}: {source}")]
    Write {
        offset: u64,
        len: u64,
        source: io::Error,
    },
    #[error("fsync after {after}: {source}")]
    Sync {
        after: &'static str,
        source: io::Error,
    },
    #[error("read-back at byte {offset}: {source}")]
    Read { offset: u64, source: io::Error },
    #[error("read-back of range {}: sha256 {got} expected {expected}", Bytes(*start, *end))]
    ReadBack {
        start: u64,
        end: u64,
        got: String,
        expected: String,
    },
    #[error("fitting the GPT to the disk: {0}")]
    Gpt(#[from] GptError),
    #[error("writing the first MiB: {0}")]
    FirstMib(io::Error),
    #[error("the first MiB read back differs from what was written, first at byte {at}")]
    FirstMibDiffers { at: u64 },
    #[error("first-boot configuration: {0}")]
    FirstBoot(String),
}

impl InstallError {
    /// The stage that failed, for [`InstallOutcome::Failed`].
    pub fn stage(&self) -> &'static str {
        match self {
            InstallError::PlanDigest { .. } => "plan",
            InstallError::Open { .. }
            | InstallError::Device { .. }
            | InstallError::DeviceTooSmall { .. } => "disk",
            InstallError::BmapFetch(_)
            | InstallError::BmapDigest { .. }
            | InstallError::Bmap(_)
            | InstallError::SizeDisagrees { .. } => "block map",
            InstallError::Wipe(_) => "wipe",
            InstallError::ImageFetch { .. }
            | InstallError::Decompress { .. }
            | InstallError::ImageLength { .. }
            | InstallError::Write { .. } => "download+write",
            InstallError::ImageDigest { .. } => "compressed sha256",
            InstallError::Sync { after, .. } => after,
            InstallError::Read { .. } | InstallError::ReadBack { .. } => "read-back",
            InstallError::Gpt(_) => "gpt",
            InstallError::FirstMib(_) | InstallError::FirstMibDiffers { .. } => "first MiB",
            InstallError::FirstBoot(_) => "first-boot",
        }
    }

    pub fn outcome(&self) -> InstallOutcome {
        InstallOutcome::Failed {
            stage: self.stage().to_string(),
            reason: self.to_string(),
        }
    }
}

/// A byte range for messages: in MiB where it is whole MiB.
struct Bytes(u64, u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MIB: u64 = 1 << 20;
        match (self.0 % MIB, self.1 % MIB) {
            (0, 0) => write!(f, "{}-{} MiB", self.0 / MIB, self.1 / MIB),
            _ => write!(f, "bytes {}-{}", self.0, self.1),
        }
    }
}

fn digest(field: &'static str, text: &str) -> Result<[u8; 32], InstallError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut out).map_err(|_| InstallError::PlanDigest {
        field,
        text: text.to_string(),
    })?;
    Ok(out)
}

/// Writes the image `source` to the disk at `device` (a block device, or a file standing in
/// for one), reporting through `progress`. See the module's documentation for the order.
pub fn write_image(
    source: &ImageSource,
    device: &Path,
    options: &WriteOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<WriteSummary, InstallError> {
    write_image_then(source, device, options, progress, &mut |_| Ok(()))
}

/// [`write_image`], with `before_first_mib` run once everything else is written and read
/// back, the disk closed, and given the first MiB about to be written (its GPT already fitted
/// to the disk): the installer writes the first-boot files there. Its error fails the install
/// at stage `first-boot`, with the first MiB unwritten.
pub fn write_image_then(
    source: &ImageSource,
    device: &Path,
    options: &WriteOptions,
    progress: &mut dyn FnMut(Progress),
    before_first_mib: &mut dyn FnMut(&[u8]) -> Result<(), String>,
) -> Result<WriteSummary, InstallError> {
    let mut meter = meter::Meter::new(progress, Instant::now());
    let image_sha = digest("sha256", &source.sha256)?;
    let bmap_sha = digest("bmap_sha256", &source.bmap_sha256)?;
    let dev_err = |what| {
        move |source| InstallError::Device {
            device: device.to_path_buf(),
            what,
            source,
        }
    };
    let disk = device::open(device).map_err(|source| InstallError::Open {
        device: device.to_path_buf(),
        source,
    })?;
    let disk_bytes = device::size(&disk).map_err(dev_err("size"))?;
    let sector = device::sector_size(&disk).map_err(dev_err("sector size"))?;
    let http = fetch::Http::new(
        options.connect_timeout,
        options.stall_timeout,
        options.retry.clone(),
    );

    let bmap = fetch_bmap(&http, source, &bmap_sha)?;
    if disk_bytes < bmap.image_size {
        return Err(InstallError::DeviceTooSmall {
            device: device.to_path_buf(),
            bytes: disk_bytes,
            needs: bmap.image_size,
        });
    }
    let wiped = wipe::wipe(&disk, disk_bytes)?;

    let streamed =
        stream::download_and_write(&http, &source.url, &image_sha, &bmap, &disk, &mut meter)?;
    let mut held = streamed.held;
    let sync = |after| {
        disk.sync_all()
            .map_err(|source| InstallError::Sync { after, source })
    };
    sync("download+write")?;
    device::drop_cache(&disk).map_err(dev_err("dropping the cache"))?;
    verify::read_back(&disk, &bmap.ranges, &held, &mut meter)?;

    let gpt = match options.grow_gpt {
        true => Some(gpt::relocate(&mut held, &disk, disk_bytes, sector)?),
        false => None,
    };
    sync("gpt")?;
    // Closed while the first-boot files are written: the kernel lets nobody mount a
    // partition of a disk held exclusively.
    drop(disk);
    before_first_mib(&held).map_err(InstallError::FirstBoot)?;
    let disk = device::open(device).map_err(|source| InstallError::Open {
        device: device.to_path_buf(),
        source,
    })?;
    let sync = |after| {
        disk.sync_all()
            .map_err(|source| InstallError::Sync { after, source })
    };
    meter.phase(Phase::FirstMib, Some(held.len() as u64), Instant::now());
    disk.write_all_at(&held, 0)
        .map_err(InstallError::FirstMib)?;
    sync("first MiB")?;
    meter.written += held.len() as u64;
    check_first_mib(&disk, &held)?;
    meter.report(Instant::now());

    Ok(WriteSummary {
        image_bytes: bmap.image_size,
        disk_bytes,
        mapped_bytes: bmap.mapped_bytes(),
        received_bytes: meter.received,
        written_bytes: meter.written,
        retries: streamed.retries,
        wiped,
        gpt,
        seconds: meter.started().elapsed().as_secs_f64(),
    })
}

/// Reads the first MiB back from the medium; the block map's digests no longer apply to it
/// once the GPT is fitted, so it is compared with what was written.
fn check_first_mib(disk: &std::fs::File, held: &[u8]) -> Result<(), InstallError> {
    device::drop_cache(disk).map_err(InstallError::FirstMib)?;
    let mut back = vec![0u8; held.len()];
    disk.read_exact_at(&mut back, 0)
        .map_err(InstallError::FirstMib)?;
    match back.iter().zip(held).position(|(a, b)| a != b) {
        Some(at) => Err(InstallError::FirstMibDiffers { at: at as u64 }),
        None => Ok(()),
    }
}

/// Fetches, checks and parses the block map; refuses one that disagrees with the plan.
fn fetch_bmap(
    http: &fetch::Http,
    source: &ImageSource,
    sha256: &[u8; 32],
) -> Result<bmap::Bmap, InstallError> {
    let bytes = http
        .get_small(&source.bmap_url, BMAP_LIMIT)
        .map_err(InstallError::BmapFetch)?;
    let got: [u8; 32] = Sha256::digest(&bytes).into();
    if got != *sha256 {
        return Err(InstallError::BmapDigest {
            got: hex::encode(got),
            expected: hex::encode(sha256),
        });
    }
    let bmap = bmap::parse_bytes(&bytes)?;
    if bmap.image_size != source.raw_bytes {
        return Err(InstallError::SizeDisagrees {
            bmap: bmap.image_size,
            plan: source.raw_bytes,
        });
    }
    Ok(bmap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_back_failures_name_the_range_and_both_digests() {
        let e = InstallError::ReadBack {
            start: 512 << 20,
            end: 1024 << 20,
            got: "ab12".into(),
            expected: "cd34".into(),
        };
        assert_eq!(
            e.to_string(),
            "read-back of range 512-1024 MiB: sha256 ab12 expected cd34"
        );
        assert_eq!(
            e.outcome(),
            InstallOutcome::Failed {
                stage: "read-back".into(),
                reason: e.to_string()
            }
        );
        let e = InstallError::ReadBack {
            start: 4096,
            end: 8192,
            got: "ab12".into(),
            expected: "cd34".into(),
        };
        assert!(
            e.to_string()
                .starts_with("read-back of range bytes 4096-8192:")
        );
    }

    #[test]
    fn a_plan_digest_that_is_not_hex_is_refused_before_anything_is_opened() {
        let source = ImageSource {
            url: "http://127.0.0.1:9/x.raw.zst".into(),
            sha256: "not hex".into(),
            bmap_url: "http://127.0.0.1:9/x.bmap".into(),
            bmap_sha256: "00".repeat(32),
            raw_bytes: 1,
        };
        let err = write_image(
            &source,
            Path::new("/nonexistent/disk"),
            &WriteOptions::default(),
            &mut |_| {},
        )
        .unwrap_err();
        assert_eq!(err.stage(), "plan");
    }
}
