//! The raw disk image, made in one file without a loop device or a mount: the GPT by sfdisk,
//! each ext4 by `mkfs.ext4 -d` at its offset (then a debugfs pass that sets the change and
//! creation times userspace cannot), the ESP by `mkfs.vfat --offset` and mtools, GRUB's BIOS
//! core in the BIOS boot partition with the MBR pointing at it, and GRUB's UEFI executable at
//! the ESP's removable path.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::grub;
use super::layout::{Filesystem, SECTOR, Table};
use super::recipe::{Arch, Firmware};
use super::steps::{StepError, Steps};

const BLOCK: u64 = 4096;

/// A fresh sparse file of the table's size with the GPT and every filesystem in it.
pub fn create(
    steps: &mut Steps,
    raw: &Path,
    table: &Table,
    sources: &[(String, PathBuf)],
    epoch: u64,
) -> Result<(), StepError> {
    let _ = std::fs::remove_file(raw);
    let f =
        std::fs::File::create(raw).map_err(steps.io(format!("cannot create {}", raw.display())))?;
    f.set_len(table.disk_bytes)
        .map_err(steps.io("cannot size the image"))?;
    drop(f);
    let script = table.sfdisk_script();
    sfdisk(steps, raw, &script)?;
    for p in &table.partitions {
        match p.filesystem {
            Filesystem::None => {}
            Filesystem::Vfat => {
                let id = p.fs_uuid.as_deref().unwrap_or("").replace('-', "");
                steps.run(
                    Command::new("mkfs.vfat")
                        .args(["--invariant", "-F", "32", "-s", "1", "-n", "ESP", "-i", &id])
                        .arg(format!("--offset={}", p.start_sector))
                        .arg(raw)
                        .arg((p.bytes() / 1024).to_string()),
                )?;
            }
            Filesystem::Ext4 => {
                let src = sources
                    .iter()
                    .find(|(n, _)| n == &p.name)
                    .map(|(_, s)| s.clone())
                    .ok_or_else(|| {
                        steps.check(format!("no source tree for partition {}", p.name))
                    })?;
                let uuid = p.fs_uuid.clone().unwrap_or_default();
                let seed = super::layout::derived_guid(&uuid, "hash-seed").to_lowercase();
                let label: String = p.name.chars().take(16).collect();
                steps.run(
                    Command::new("mkfs.ext4")
                        .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
                        .args(["-q", "-F", "-b", "4096", "-L", &label, "-U", &uuid, "-d"])
                        .arg(&src)
                        .arg("-E")
                        .arg(format!("offset={},hash_seed={seed},nodiscard", p.offset()))
                        .arg(raw)
                        .arg((p.bytes() / BLOCK).to_string()),
                )?;
                reset_inode_times(steps, raw, p.offset(), &src, epoch)?;
                steps.note(&format!(
                    "{} ({}): {}",
                    p.name,
                    p.mount.as_deref().unwrap_or("-"),
                    uuid
                ));
            }
        }
    }
    Ok(())
}

fn sfdisk(steps: &mut Steps, raw: &Path, script: &str) -> Result<(), StepError> {
    let mut child = Command::new("sfdisk")
        .args(["--no-reread", "--no-tell-kernel", "-q"])
        .arg(raw)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| StepError::Spawn {
            step: "partition table".into(),
            tool: "sfdisk".into(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(steps.io("cannot feed sfdisk"))?;
    }
    let out = child.wait_with_output().map_err(steps.io("sfdisk"))?;
    if !out.status.success() {
        return Err(steps.check(format!(
            "sfdisk refused the table: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// debugfs commands that set every inode's change and creation time to `epoch`: mkfs.ext4 -d
/// copies each file's ctime from the build host, which no userspace call can set.
pub fn time_script(src: &Path, epoch: u64) -> std::io::Result<String> {
    let mut script = String::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let inside = format!("/{}", rel.display());
        // debugfs reads a quoted name literally (backslashes included, as in systemd's
        // `\x2d` unit names) up to the next quote.
        if inside.contains('"') || inside.contains('\n') {
            return Err(std::io::Error::other(format!(
                "{inside:?}: a name with a quote or newline cannot be given to debugfs"
            )));
        }
        // Access times too: reading the tree after its times were clamped (GRUB's modules,
        // the split's listing of mount points) moves them.
        for field in ["ctime", "crtime", "atime"] {
            script +=
                &format!("sif \"{inside}\" {field} @{epoch}\nsif \"{inside}\" {field}_extra 0\n");
        }
        let full = src.join(&rel);
        if std::fs::symlink_metadata(&full)?.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(&full)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()?;
            names.sort();
            for n in names.into_iter().rev() {
                stack.push(rel.join(n));
            }
        }
    }
    Ok(script)
}

fn reset_inode_times(
    steps: &mut Steps,
    raw: &Path,
    offset: u64,
    src: &Path,
    epoch: u64,
) -> Result<(), StepError> {
    let script =
        time_script(src, epoch).map_err(steps.io(format!("cannot list {}", src.display())))?;
    let file = raw.with_extension(format!("debugfs-{offset}"));
    std::fs::write(&file, script).map_err(steps.io("cannot write the debugfs script"))?;
    let target = format!("{}?offset={offset}", raw.display());
    let out = steps.run_quiet(
        Command::new("debugfs")
            .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
            .args(["-w", "-f"])
            .arg(&file)
            .arg(&target),
    );
    let _ = std::fs::remove_file(&file);
    out?;
    // A last check that the filesystem is whole after the edits.
    steps.run(Command::new("e2fsck").args(["-f", "-n"]).arg(&target))?;
    Ok(())
}

fn read_at(f: &mut std::fs::File, at: u64, n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    f.seek(SeekFrom::Start(at))?;
    f.read_exact(&mut buf)?;
    Ok(buf)
}

fn write_at(f: &mut std::fs::File, at: u64, data: &[u8]) -> std::io::Result<()> {
    f.seek(SeekFrom::Start(at))?;
    f.write_all(data)
}

/// GRUB for every firmware the recipe boots on, with the image's own modules (`grub_lib`: a
/// copy of its `/usr/lib/grub`).
#[allow(clippy::too_many_arguments)]
pub fn install_grub(
    steps: &mut Steps,
    raw: &Path,
    table: &Table,
    arch: Arch,
    firmware: &[Firmware],
    grub_lib: &Path,
    work: &Path,
    epoch: u64,
) -> Result<(), StepError> {
    std::fs::create_dir_all(work).map_err(steps.io("cannot create the GRUB folder"))?;
    let (boot, boot_dir) = table.boot();
    let boot_uuid = boot.fs_uuid.clone().unwrap_or_default();
    let config = work.join("embedded.cfg");
    std::fs::write(&config, grub::embedded_config(&boot_uuid, boot_dir))
        .map_err(steps.io("cannot write the GRUB config"))?;
    for fw in firmware {
        let Some(target) = grub::target(arch, *fw) else {
            return Err(steps.check(format!("{arch} cannot boot on {fw:?}")));
        };
        let moddir = grub_lib.join(target);
        if !moddir.is_dir() {
            return Err(steps.check(format!(
                "the image has no GRUB modules for {target} ({})",
                moddir.display()
            )));
        }
        let modules: Vec<&str> = grub::modules(target)
            .into_iter()
            .filter(|m| moddir.join(format!("{m}.mod")).is_file())
            .collect();
        let out = work.join(format!("core-{target}.img"));
        steps.run(
            Command::new("grub-mkimage")
                .env("SOURCE_DATE_EPOCH", epoch.to_string())
                .arg("-d")
                .arg(&moddir)
                .args(["-O", target, "-o"])
                .arg(&out)
                .arg("-c")
                .arg(&config)
                .args(["-p", "/boot/grub"])
                .args(&modules),
        )?;
        let core = std::fs::read(&out).map_err(steps.io("cannot read the GRUB core"))?;
        match fw {
            Firmware::Bios => {
                let bios = table
                    .get("bios")
                    .ok_or_else(|| steps.check("no BIOS boot partition for a BIOS recipe"))?;
                let core = grub::patch_core(&core, bios.start_sector, bios.bytes())
                    .map_err(|e| steps.check(e.to_string()))?;
                let boot_img = std::fs::read(moddir.join("boot.img"))
                    .map_err(steps.io("cannot read boot.img"))?;
                let mut f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(raw)
                    .map_err(steps.io("cannot open the image"))?;
                let mbr: [u8; 512] = read_at(&mut f, 0, 512)
                    .map_err(steps.io("cannot read the MBR"))?
                    .try_into()
                    .map_err(|_| steps.check("short MBR"))?;
                let mbr = grub::patch_mbr(&mbr, &boot_img, bios.start_sector)
                    .map_err(|e| steps.check(e.to_string()))?;
                write_at(&mut f, bios.start_sector * SECTOR, &core)
                    .map_err(steps.io("cannot write the core"))?;
                write_at(&mut f, 0, &mbr).map_err(steps.io("cannot write the MBR"))?;
                f.sync_all().map_err(steps.io("cannot sync the image"))?;
                steps.note(&format!(
                    "BIOS: core.img {} bytes at sector {}",
                    core.len(),
                    bios.start_sector
                ));
            }
            Firmware::Uefi => {
                let esp = table.get("esp").ok_or_else(|| steps.check("no ESP"))?;
                let at = format!("{}@@{}", raw.display(), esp.offset());
                let name = grub::efi_removable_name(arch);
                let efi = work.join(name);
                std::fs::write(&efi, &core).map_err(steps.io("cannot write the EFI executable"))?;
                set_mtime(&efi, epoch).map_err(steps.io("cannot set the EFI executable's time"))?;
                let epoch_s = epoch.to_string();
                let dirs_exist = steps
                    .run(
                        Command::new("mdir")
                            .env("SOURCE_DATE_EPOCH", &epoch_s)
                            .args(["-i", &at, "::/EFI/BOOT"]),
                    )
                    .is_ok();
                if !dirs_exist {
                    steps.run(
                        Command::new("mmd")
                            .env("SOURCE_DATE_EPOCH", &epoch_s)
                            .args(["-i", &at, "::/EFI", "::/EFI/BOOT"]),
                    )?;
                }
                steps.run(
                    Command::new("mcopy")
                        .env("SOURCE_DATE_EPOCH", &epoch_s)
                        .args(["-o", "-m", "-i", &at])
                        .arg(&efi)
                        .arg(format!("::/EFI/BOOT/{name}")),
                )?;
                steps.note(&format!("UEFI: /EFI/BOOT/{name} {} bytes", core.len()));
            }
        }
    }
    Ok(())
}

fn set_mtime(path: &Path, epoch: u64) -> std::io::Result<()> {
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    let t = TimeSpec::new(epoch as i64, 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_script_names_every_path_once_and_refuses_what_debugfs_cannot_quote() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/c d"), "x").unwrap();
        let s = time_script(dir.path(), 42).unwrap();
        assert!(s.starts_with("sif \"/\" ctime @42\n"), "{s}");
        assert!(s.contains("sif \"/a/b/c d\" crtime @42\n"));
        assert_eq!(s.matches("ctime @42").count(), 4);
        assert_eq!(s.matches("atime @42").count(), 4);
        std::fs::write(dir.path().join("a/x\\x2dy"), "x").unwrap();
        assert!(
            time_script(dir.path(), 42)
                .unwrap()
                .contains("\"/a/x\\x2dy\"")
        );
        std::fs::write(dir.path().join("a/q\"uote"), "x").unwrap();
        assert!(time_script(dir.path(), 42).is_err());
    }
}
