//! The installed root filesystem, mounted while the disk still has no partition table: the
//! first MiB (protective MBR, primary GPT) is written last, so the kernel is told where the
//! root partition lies (`BLKPG_ADD_PARTITION`, from the GPT held in memory), the filesystem is
//! mounted, the first-boot files written and synced, and everything undone before the first
//! MiB goes down.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::gpt;

/// Root partition type GUIDs (Discoverable Partitions Specification): x86-64, arm64.
pub const ROOT_TYPES: [&str; 2] = [
    "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
    "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
];
/// `BLKPG` = `_IO(0x12, 105)`, the same on x86-64 and arm64.
const BLKPG: libc::c_ulong = 0x1269;
const BLKPG_ADD_PARTITION: libc::c_int = 1;
const BLKPG_DEL_PARTITION: libc::c_int = 2;
/// Where the root filesystem is mounted (the discovery system's /run is memory).
const MOUNT_AT: &str = "/run/provisioner-target";

/// `struct blkpg_partition` (linux/blkpg.h).
#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; 64],
    volname: [libc::c_char; 64],
}

/// `struct blkpg_ioctl_arg`.
#[repr(C)]
struct BlkpgArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("the image's GPT: {0}")]
    Gpt(#[from] gpt::GptError),
    #[error("the image has no root partition (type {})", ROOT_TYPES.join(" or "))]
    NoRoot,
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("{0}")]
    Configure(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> TargetError {
    let what = what.into();
    move |source| TargetError::Io { what, source }
}

/// The kernel's name for partition `n` of disk `disk` (`vda3`, `nvme0n1p3`).
pub fn partition_name(disk: &str, n: u32) -> String {
    match disk.ends_with(|c: char| c.is_ascii_digit()) {
        true => format!("{disk}p{n}"),
        false => format!("{disk}{n}"),
    }
}

fn blkpg(disk: &File, op: libc::c_int, pno: u32, start: u64, length: u64) -> io::Result<()> {
    let mut part = BlkpgPartition {
        start: start as libc::c_longlong,
        length: length as libc::c_longlong,
        pno: pno as libc::c_int,
        devname: [0; 64],
        volname: [0; 64],
    };
    let mut arg = BlkpgArg {
        op,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
        data: (&mut part as *mut BlkpgPartition).cast(),
    };
    // SAFETY: BLKPG reads `arg` and the partition record it points at, both alive here.
    let rc = unsafe { libc::ioctl(disk.as_raw_fd(), BLKPG as _, &mut arg) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn cstring(p: &Path) -> Result<std::ffi::CString, TargetError> {
    std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| TargetError::Configure(format!("{} holds a NUL", p.display())))
}

/// Mounts the root filesystem of the image whose first bytes are `first`, written to the block
/// device `device`, runs `f` on it, and unmounts (after a sync) whatever `f` returned.
pub fn with_root_mounted<T>(
    device: &Path,
    first: &[u8],
    f: impl FnOnce(&Path) -> Result<T, String>,
) -> Result<T, TargetError> {
    let (sector, entries) = gpt::entries(first)?;
    let root = entries
        .iter()
        .find(|e| ROOT_TYPES.contains(&e.type_guid.as_str()))
        .ok_or(TargetError::NoRoot)?;
    let name = device
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| TargetError::Configure(format!("{} has no name", device.display())))?;
    let part: PathBuf = device.with_file_name(partition_name(name, root.number));
    let disk = File::open(device).map_err(io_err(format!("open {}", device.display())))?;
    // Partitions the kernel still knows from the disk's previous life would overlap.
    for pno in 1..=128 {
        let _ = blkpg(&disk, BLKPG_DEL_PARTITION, pno, 0, 0);
    }
    let start = root.first_lba * sector;
    let length = (root.last_lba + 1 - root.first_lba) * sector;
    blkpg(&disk, BLKPG_ADD_PARTITION, root.number, start, length).map_err(io_err(format!(
        "telling the kernel about partition {} of {}",
        root.number,
        device.display()
    )))?;
    let result = mount_and_run(&part, f);
    let removed = blkpg(&disk, BLKPG_DEL_PARTITION, root.number, 0, 0);
    let value = result?;
    removed.map_err(io_err(format!("removing {} again", part.display())))?;
    Ok(value)
}

fn mount_and_run<T>(
    part: &Path,
    f: impl FnOnce(&Path) -> Result<T, String>,
) -> Result<T, TargetError> {
    // devtmpfs makes the node as the kernel adds the partition; give it a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !part.exists() {
        if Instant::now() > deadline {
            return Err(TargetError::Configure(format!(
                "{} did not appear",
                part.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let at = Path::new(MOUNT_AT);
    std::fs::create_dir_all(at).map_err(io_err(format!("create {MOUNT_AT}")))?;
    let (src, dst, fstype) = (cstring(part)?, cstring(at)?, c"ext4");
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOATIME;
    // SAFETY: every pointer is a NUL-terminated string alive for the call; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            fstype.as_ptr(),
            flags,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io_err(format!(
            "mount {} (ext4) on {MOUNT_AT}",
            part.display()
        ))(io::Error::last_os_error()));
    }
    let result = f(at);
    // SAFETY: sync(2) takes nothing; umount2 a NUL-terminated path alive for the call.
    let rc = unsafe {
        libc::sync();
        libc::umount2(dst.as_ptr(), 0)
    };
    let unmounted = match rc {
        0 => Ok(()),
        _ => Err(io_err(format!("umount {MOUNT_AT}"))(
            io::Error::last_os_error(),
        )),
    };
    let value = result.map_err(TargetError::Configure)?;
    unmounted?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_named_as_the_kernel_names_them() {
        assert_eq!(partition_name("vda", 3), "vda3");
        assert_eq!(partition_name("sdb", 12), "sdb12");
        assert_eq!(partition_name("nvme0n1", 3), "nvme0n1p3");
        assert_eq!(partition_name("mmcblk0", 1), "mmcblk0p1");
    }

    #[test]
    fn an_image_without_a_root_partition_is_refused_before_the_disk_is_touched() {
        // A GPT-less first MiB: refused from the bytes alone, the device never opened.
        let err =
            with_root_mounted(Path::new("/nonexistent/vda"), &[0u8; 4096], |_| Ok(())).unwrap_err();
        assert!(matches!(err, TargetError::Gpt(_)), "{err}");
    }
}
