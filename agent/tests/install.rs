//! The disk writer against a real HTTP server on loopback serving a real image: a sparse GPT
//! disk made with sfdisk, compressed with zstd and mapped with `bmaptool create`, written to
//! a regular file standing in for the disk, and compared with what `bmaptool copy` makes of
//! the same image. Skipped with a message where the tools are missing, failed under CI.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

#[path = "install/server.rs"]
mod server;

use provisioner_agent::install::bmap::{self, Bmap};
use provisioner_agent::install::{
    ImageSource, InstallError, Phase, Progress, Retry, WriteOptions, write_image,
};
use sha2::{Digest, Sha256};

use self::server::{Faults, Server};

const MIB: u64 = 1 << 20;
const IMAGE: u64 = 64 * MIB;
const DISK: u64 = 96 * MIB;
/// What the disk held before: none of it may survive where the image is mapped.
const OLD: u8 = 0x5a;

/// Whether the tools run here; without them the test is skipped, except under CI.
fn have_tools() -> bool {
    let missing: Vec<_> = ["bmaptool", "zstd", "sfdisk"]
        .into_iter()
        .filter(|t| Command::new(t).arg("--version").output().is_err())
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{missing:?} missing and CI=true: install bmap-tools, zstd and fdisk"
    );
    eprintln!("skipping: {missing:?} not installed");
    false
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Deterministic bytes that do not compress.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The image, its zstd and bmap files, and `bmaptool copy` of it.
struct Image {
    dir: tempfile::TempDir,
    zst: Vec<u8>,
    bmap_text: Vec<u8>,
    bmap: Bmap,
    reference: PathBuf,
}

impl Image {
    fn make() -> Image {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("img.raw");
        File::create(&raw).unwrap().set_len(IMAGE).unwrap();
        let script = "label: gpt\nunit: sectors\nfirst-lba: 2048\n\
            start=2048, size=4096, type=21686148-6449-6E6F-744E-656564454649, name=bios\n\
            start=6144, size=16384, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp\n\
            start=22528, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name=root\n";
        let mut sfdisk = Command::new("sfdisk")
            .arg("-q")
            .arg(&raw)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        sfdisk
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(sfdisk.wait().unwrap().success());
        let file = File::options().write(true).open(&raw).unwrap();
        // Boot code before the partition table, data in the gap, one range across the first
        // MiB's end, and data in every partition, the last block of the root included.
        let data: [(u64, usize); 7] = [
            (0, 440),
            (600 * 1024, 8192),
            (MIB - 8192, 16384),
            (4 * MIB, 3 * MIB as usize),
            (20 * MIB, 10 * MIB as usize),
            (50 * MIB + 12288, MIB as usize),
            (IMAGE - 34 * 512 - 4096, 4096),
        ];
        for (i, (at, len)) in data.into_iter().enumerate() {
            file.write_all_at(&noise(i as u64 + 7, len), at).unwrap();
        }
        drop(file);
        let zst = dir.path().join("img.raw.zst");
        run(Command::new("zstd")
            .args(["-q", "-f"])
            .arg(&raw)
            .arg("-o")
            .arg(&zst));
        let bmap_path = dir.path().join("img.bmap");
        run(Command::new("bmaptool")
            .arg("create")
            .arg("-o")
            .arg(&bmap_path)
            .arg(&raw));
        let reference = dir.path().join("reference");
        run(Command::new("bmaptool")
            .arg("-q")
            .arg("copy")
            .arg("--bmap")
            .arg(&bmap_path)
            .arg(&zst)
            .arg(&reference));
        let bmap_text = std::fs::read(&bmap_path).unwrap();
        Image {
            zst: std::fs::read(&zst).unwrap(),
            bmap: bmap::parse_bytes(&bmap_text).unwrap(),
            bmap_text,
            reference,
            dir,
        }
    }

    fn source(&self, server: &Server) -> ImageSource {
        ImageSource {
            url: server.url("/img.raw.zst"),
            sha256: hex::encode(Sha256::digest(&self.zst)),
            bmap_url: server.url("/img.bmap"),
            bmap_sha256: hex::encode(Sha256::digest(&self.bmap_text)),
            raw_bytes: IMAGE,
        }
    }

    /// A disk of `size` bytes holding only [`OLD`].
    fn disk(&self, size: u64) -> PathBuf {
        let path = self.dir.path().join(format!("disk-{size}"));
        std::fs::write(&path, vec![OLD; size as usize]).unwrap();
        path
    }

    fn server(&self) -> Server {
        let server = Server::start();
        server.put("/img.raw.zst", self.zst.clone());
        server.put("/img.bmap", self.bmap_text.clone());
        server
    }
}

fn options(grow_gpt: bool) -> WriteOptions {
    WriteOptions {
        connect_timeout: Duration::from_secs(5),
        stall_timeout: Duration::from_secs(10),
        retry: Retry {
            attempts: 3,
            first: Duration::from_millis(10),
            max: Duration::from_millis(100),
        },
        grow_gpt,
    }
}

fn read(path: &Path, at: u64, len: u64) -> Vec<u8> {
    let mut buf = vec![0u8; len as usize];
    File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, at)
        .unwrap();
    buf
}

/// Every mapped byte of `disk` equals the reference's, apart from the spans in `except`.
fn assert_mapped_equal(image: &Image, disk: &Path, except: &[(u64, u64)]) {
    for r in &image.bmap.ranges {
        let (want, got) = (
            read(&image.reference, r.start, r.len()),
            read(disk, r.start, r.len()),
        );
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            let at = r.start + i as u64;
            if w != g && !except.iter().any(|(s, e)| (*s..*e).contains(&at)) {
                panic!("byte {at} is {g:#04x}, bmaptool copy wrote {w:#04x}");
            }
        }
    }
}

fn first_mib_is_zero(disk: &Path) -> bool {
    read(disk, 0, MIB).iter().all(|&b| b == 0)
}

#[test]
fn writes_the_mapped_ranges_as_bmaptool_copy_does() {
    if !have_tools() {
        return;
    }
    let image = Image::make();
    let server = image.server();
    let disk = image.disk(DISK);
    let mut seen: Vec<Progress> = Vec::new();
    let summary = write_image(&image.source(&server), &disk, &options(false), &mut |p| {
        seen.push(p)
    })
    .unwrap();

    assert_mapped_equal(&image, &disk, &[]);
    assert_eq!(summary.image_bytes, IMAGE);
    assert_eq!(summary.disk_bytes, DISK);
    assert_eq!(summary.mapped_bytes, image.bmap.mapped_bytes());
    let in_first: u64 = image
        .bmap
        .ranges
        .iter()
        .map(|r| r.end.min(MIB) - r.start.min(MIB))
        .sum();
    assert_eq!(summary.written_bytes, summary.mapped_bytes - in_first + MIB);
    assert_eq!(summary.received_bytes, image.zst.len() as u64);
    assert_eq!(summary.retries, 0);
    // Unmapped bytes are not written: the old contents stay between the ranges...
    assert!(read(&disk, 40 * MIB, MIB).iter().all(|&b| b == OLD));
    // ...but the old signatures at both ends are gone.
    assert!(read(&disk, DISK - MIB, MIB).iter().all(|&b| b == 0));
    let phases: Vec<Phase> = seen.iter().map(|p| p.phase).collect();
    let first = |ph| phases.iter().position(|p| *p == ph).unwrap();
    assert!(first(Phase::DownloadWrite) < first(Phase::ReadBack));
    assert!(first(Phase::ReadBack) < first(Phase::FirstMib));
    let last = seen.last().unwrap();
    assert_eq!(last.verified_bytes, image.bmap.mapped_bytes());
    assert_eq!(last.received_bytes, image.zst.len() as u64);
}

#[test]
fn fits_the_gpt_to_the_larger_disk() {
    if !have_tools() {
        return;
    }
    let image = Image::make();
    let server = image.server();
    let disk = image.disk(DISK);
    let summary = write_image(&image.source(&server), &disk, &options(true), &mut |_| {}).unwrap();
    let gpt = summary.gpt.unwrap();
    assert_eq!((gpt.partition, gpt.new_backup_lba), (3, DISK / 512 - 1));

    // Only the protective MBR's size, the primary GPT and the old backup GPT differ.
    assert_mapped_equal(&image, &disk, &[(446, 34 * 512), (IMAGE - 33 * 512, IMAGE)]);
    let sfdisk = |args: &[&str]| {
        let out = Command::new("sfdisk")
            .args(args)
            .arg(&disk)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let verify = sfdisk(&["--verify"]);
    assert!(
        verify.contains("No errors detected") && !verify.contains("mismatch"),
        "{verify}"
    );
    let table: serde_json::Value = serde_json::from_str(&sfdisk(&["-J"])).unwrap();
    let root = &table["partitiontable"]["partitions"][2];
    assert_eq!(root["start"], 22528);
    assert_eq!(root["size"], DISK / 512 - 34 - 22528 + 1);
    if let Ok(out) = Command::new("sgdisk").arg("-v").arg(&disk).output() {
        let v = String::from_utf8_lossy(&out.stdout);
        assert!(v.contains("No problems found"), "{v}");
    }
}

#[test]
fn a_dropped_connection_resumes_with_a_range_request() {
    if !have_tools() {
        return;
    }
    let image = Image::make();
    let server = image.server();
    let cut_at = image.zst.len() as u64 / 3;
    *server.faults() = Faults {
        cuts: 1,
        cut_at,
        ..Faults::default()
    };
    let disk = image.disk(DISK);
    let summary = write_image(&image.source(&server), &disk, &options(false), &mut |_| {}).unwrap();
    assert_eq!(summary.retries, 1);
    assert_eq!(summary.received_bytes, image.zst.len() as u64);
    let ranges: Vec<_> = server.log().into_iter().filter_map(|(_, r)| r).collect();
    assert_eq!(ranges, [format!("bytes={cut_at}-")]);
    assert_mapped_equal(&image, &disk, &[]);
}

#[test]
fn a_server_that_ignores_range_sends_it_all_again_and_the_repeat_is_skipped() {
    if !have_tools() {
        return;
    }
    let image = Image::make();
    let server = image.server();
    let cut_at = image.zst.len() as u64 / 2;
    *server.faults() = Faults {
        cuts: 1,
        cut_at,
        ignore_range: true,
        ..Faults::default()
    };
    let disk = image.disk(DISK);
    let summary = write_image(&image.source(&server), &disk, &options(false), &mut |_| {}).unwrap();
    assert_eq!(summary.retries, 1);
    assert_eq!(summary.received_bytes, image.zst.len() as u64 + cut_at);
    assert_mapped_equal(&image, &disk, &[]);
}

#[test]
fn a_file_that_changes_while_resuming_is_refused() {
    if !have_tools() {
        return;
    }
    let image = Image::make();
    let server = image.server();
    *server.faults() = Faults {
        cuts: 1,
        cut_at: 4096,
        new_etag_after_first: true,
        ..Faults::default()
    };
    let disk = image.disk(DISK);
    let err = write_image(&image.source(&server), &disk, &options(false), &mut |_| {}).unwrap_err();
    assert_eq!(err.stage(), "download+write");
    assert!(err.to_string().contains("the ETag changed"), "{err}");
    assert!(first_mib_is_zero(&disk));
}

#[test]
fn a_server_without_etags_is_still_resumed() {
    if !have_tools() {
        return;
    }
    let image = Image::make();
    let server = image.server();
    *server.faults() = Faults {
        cuts: 2,
        cut_at: 1 << 20,
        no_etag: true,
        ..Faults::default()
    };
    let disk = image.disk(DISK);
    let summary = write_image(&image.source(&server), &disk, &options(false), &mut |_| {}).unwrap();
    assert_eq!(summary.retries, 2);
    assert_mapped_equal(&image, &disk, &[]);
}

#[test]
fn a_resumed_answer_from_the_wrong_byte_is_refused() {
    if !have_tools() {
        return;
    }
    let image = Image::make();
    let server = image.server();
    *server.faults() = Faults {
        cuts: 1,
        cut_at: 1 << 20,
        shifted_range: true,
        ..Faults::default()
    };
    let disk = image.disk(DISK);
    let err = write_image(&image.source(&server), &disk, &options(false), &mut |_| {}).unwrap_err();
    let text = err.to_string();
    assert_eq!(err.stage(), "download+write");
    assert!(
        text.contains("from byte 1048576: Content-Range \"bytes 1048577-"),
        "{text}"
    );
    assert!(first_mib_is_zero(&disk));
}

#[test]
fn retries_are_bounded_and_each_is_told() {
    if !have_tools() {
        return;
    }
    let image = Image::make();
    let server = image.server();
    *server.faults() = Faults {
        cuts: 100,
        cut_at: 0,
        ..Faults::default()
    };
    let disk = image.disk(DISK);
    let err = write_image(&image.source(&server), &disk, &options(false), &mut |_| {}).unwrap_err();
    let text = err.to_string();
    assert_eq!(err.stage(), "download+write");
    assert!(text.contains("gave up after 4 tries"), "{text}");
    assert_eq!(text.matches("at byte 0:").count(), 4, "{text}");
    assert!(first_mib_is_zero(&disk));
}

#[test]
fn a_flipped_byte_in_the_compressed_image_fails_and_the_disk_stays_unbootable() {
    if !have_tools() {
        return;
    }
    let image = Image::make();
    let server = image.server();
    let mut bent = image.zst.clone();
    let at = bent.len() / 2;
    bent[at] ^= 0x01;
    server.put("/img.raw.zst", bent);
    let disk = image.disk(DISK);
    let err = write_image(&image.source(&server), &disk, &options(true), &mut |_| {}).unwrap_err();
    assert!(
        matches!(
            err,
            InstallError::ImageDigest { .. } | InstallError::ReadBack { .. }
        ),
        "{err}"
    );
    assert!(
        ["compressed sha256", "read-back"].contains(&err.stage()),
        "{}",
        err.stage()
    );
    assert!(
        err.to_string().contains(&image.source(&server).sha256),
        "{err}"
    );
    assert!(first_mib_is_zero(&disk));
}

#[test]
fn a_wrong_block_map_digest_fails_before_anything_is_written() {
    if !have_tools() {
        return;
    }
    let image = Image::make();
    let server = image.server();
    let mut source = image.source(&server);
    source.bmap_sha256 = "11".repeat(32);
    let disk = image.disk(DISK);
    let err = write_image(&source, &disk, &options(true), &mut |_| {}).unwrap_err();
    assert_eq!(err.stage(), "block map");
    assert!(err.to_string().contains(&"11".repeat(32)), "{err}");
    assert!(std::fs::read(&disk).unwrap().iter().all(|&b| b == OLD));
    assert!(server.log().iter().all(|(path, _)| path == "/img.bmap"));
}

#[test]
fn a_disk_smaller_than_the_image_is_refused_with_both_sizes() {
    if !have_tools() {
        return;
    }
    let image = Image::make();
    let server = image.server();
    let disk = image.disk(IMAGE - MIB);
    let err = write_image(&image.source(&server), &disk, &options(true), &mut |_| {}).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&(IMAGE - MIB).to_string()) && text.contains(&IMAGE.to_string()),
        "{text}"
    );
    assert!(std::fs::read(&disk).unwrap().iter().all(|&b| b == OLD));
}

/// A loop device over a file, detached when dropped.
struct Loop(PathBuf);

impl Loop {
    /// `None` where loop devices cannot be had (not root, no /dev/loop-control).
    fn attach(file: &Path, sector: u32) -> Option<Loop> {
        let out = Command::new("losetup")
            .args(["--find", "--show", "--sector-size", &sector.to_string()])
            .arg(file)
            .output()
            .ok()?;
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !dev.is_empty()).then(|| Loop(PathBuf::from(dev)))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

#[test]
fn writes_a_real_block_device_and_refuses_other_sector_sizes() {
    if !have_tools() {
        return;
    }
    let image = Image::make();
    let server = image.server();
    let backing = image.disk(DISK);
    let Some(dev) = Loop::attach(&backing, 512) else {
        eprintln!("skipping: no loop device here (losetup needs root and /dev/loop-control)");
        return;
    };
    // A disk in use (held exclusively, as a mount or an array would) is not written.
    let holder = {
        use std::os::unix::fs::OpenOptionsExt;
        File::options()
            .read(true)
            .custom_flags(libc::O_EXCL)
            .open(&dev.0)
            .unwrap()
    };
    let err = write_image(&image.source(&server), &dev.0, &options(true), &mut |_| {}).unwrap_err();
    assert_eq!(err.stage(), "disk", "{err}");
    drop(holder);

    let summary = write_image(&image.source(&server), &dev.0, &options(true), &mut |_| {}).unwrap();
    assert_eq!(summary.disk_bytes, DISK);
    assert_eq!(summary.gpt.unwrap().new_backup_lba, DISK / 512 - 1);
    drop(dev);
    assert_mapped_equal(
        &image,
        &backing,
        &[(446, 34 * 512), (IMAGE - 33 * 512, IMAGE)],
    );
    let out = Command::new("sfdisk")
        .arg("--verify")
        .arg(&backing)
        .output()
        .unwrap();
    let verify = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(verify.contains("No errors detected"), "{verify}");

    // The image's GPT is laid out in 512-byte sectors: a 4Kn disk would not find it.
    let backing = image.disk(DISK);
    let Some(dev) = Loop::attach(&backing, 4096) else {
        return;
    };
    let err = write_image(&image.source(&server), &dev.0, &options(true), &mut |_| {}).unwrap_err();
    assert_eq!(err.stage(), "gpt");
    assert!(
        err.to_string().contains("512-byte sectors, the disk 4096"),
        "{err}"
    );
    assert!(first_mib_is_zero(&dev.0));
}
