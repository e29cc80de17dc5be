//! `Instruction::Install` on the node: the disk the appliance chose is checked against what the
//! node has now (name, size, serial: the hardware may have changed since inspection), then
//! written by [`crate::install::write_image`], and the outcome becomes the report. Only that
//! one disk is opened for writing.

use std::path::Path;
use std::time::Instant;

use provisioner_protocol::install::{
    InstallOutcome, InstallPlan, InstallReport, NodeRecord, TargetDisk,
};
use provisioner_protocol::{Disk, Facts, MacAddr};

use crate::install::{self, ImageSource, Progress, WriteOptions, bootentry, firstboot, target};

/// Why the planned disk is not the one to write, or `None` when it is.
pub fn disk_mismatch(plan: &InstallPlan, disks: &[Disk]) -> Option<String> {
    not_the_disk(&plan.disk, disks)
}

/// Why `want` (as the appliance saw it) is not on this node now, or `None` when it is.
pub fn not_the_disk(want: &TargetDisk, disks: &[Disk]) -> Option<String> {
    let Some(have) = disks.iter().find(|d| d.name == want.name) else {
        let names: Vec<&str> = disks.iter().map(|d| d.name.as_str()).collect();
        return Some(format!(
            "disk {} (chosen by {}) is not on this node now (it has: {})",
            want.name,
            want.hints,
            names.join(", ")
        ));
    };
    if have.size_bytes != want.size_bytes {
        return Some(format!(
            "disk {} has {} bytes now, {} at inspection",
            want.name, have.size_bytes, want.size_bytes
        ));
    }
    if want.serial.is_some() && have.serial != want.serial {
        return Some(format!(
            "disk {} has serial {} now, {} at inspection",
            want.name,
            have.serial.as_deref().unwrap_or("(none)"),
            want.serial.as_deref().unwrap_or("(none)")
        ));
    }
    None
}

/// The record the installed agent gets: how this agent reached the appliance, and the plan's
/// credential and image.
pub fn node_record(plan: &InstallPlan, url: &str, mac: MacAddr) -> NodeRecord {
    NodeRecord {
        url: url.trim_end_matches('/').to_string(),
        mac,
        credential: plan.first_boot.credential.clone(),
        image: plan.image.clone(),
        raw_sha256: plan.raw_sha256.clone(),
        hostname: plan.first_boot.hostname.clone(),
    }
}

/// Writes the first-boot files into the root filesystem of the image on `device`, whose
/// first MiB is `first` (not yet on the disk). A regular file standing in for a disk (a test,
/// the benchmark) has no partitions to mount: it is left as the image made it, and said so.
fn first_boot(
    device: &Path,
    first: &[u8],
    plan: &InstallPlan,
    node: &NodeRecord,
    say: &mut dyn FnMut(&str),
) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let block = std::fs::metadata(device).is_ok_and(|m| m.file_type().is_block_device());
    if !block {
        say(&format!(
            "install: {} is a file, not a disk: no first-boot files written",
            device.display()
        ));
        return Ok(());
    }
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0);
    let written = target::with_root_mounted(device, first, |root| {
        firstboot::configure(root, &plan.first_boot, node, today).map_err(|e| e.to_string())
    })
    .map_err(|e| e.to_string())?;
    say(&format!(
        "install: first-boot files written: {}",
        written.join(" ")
    ));
    Ok(())
}

/// The disk's UEFI boot entry, after the network entries; a BIOS node (no `efi`) has none.
fn boot_entry(
    efi: &Path,
    first: &[u8],
    plan: &InstallPlan,
    say: &mut dyn FnMut(&str),
) -> Result<(), String> {
    if !efi.is_dir() {
        say("install: BIOS firmware: no boot entry to add (the disk boots after the network)");
        return Ok(());
    }
    let description = format!(
        "{}{} on {}",
        bootentry::OURS,
        plan.image,
        plan.disk.serial.as_deref().unwrap_or(&plan.disk.name)
    );
    let added = bootentry::add_disk_entry(
        &efi.join("efivars"),
        first,
        &description,
        bootentry::loader(),
    )
    .map_err(|e| e.to_string())?;
    say(&format!(
        "install: UEFI boot entry \"{description}\": {added}"
    ));
    Ok(())
}

/// Checks the disk, writes the image to `dev_dir/NAME` with the first-boot files for the
/// installed agent (`node`) and says how it went; `say` gets the console's lines (progress
/// about once a second). On a UEFI node (`efi`, the firmware's `/sys/firmware/efi`, exists)
/// the disk then gets its boot entry, after the network's ([`bootentry`]).
pub fn run(
    plan: &InstallPlan,
    facts: &Facts,
    dev_dir: &Path,
    efi: &Path,
    node: &NodeRecord,
    say: &mut dyn FnMut(&str),
) -> InstallReport {
    let started = Instant::now();
    let report = |outcome, written, received| InstallReport {
        mac: Default::default(),
        image: plan.image.clone(),
        outcome,
        written_bytes: written,
        received_bytes: received,
        seconds: started.elapsed().as_secs_f64(),
    };
    if let Some(why) = disk_mismatch(plan, &facts.disks) {
        say(&format!("install refused: {why}"));
        let failed = InstallOutcome::Failed {
            stage: "disk".into(),
            reason: why,
        };
        return report(failed, 0, 0);
    }
    let device = dev_dir.join(&plan.disk.name);
    say(&format!(
        "installing {} on {} ({} bytes, chosen by {})",
        plan.image,
        device.display(),
        plan.disk.size_bytes,
        if plan.disk.hints.is_empty() {
            "the default rule"
        } else {
            plan.disk.hints.as_str()
        }
    ));
    let lines = std::cell::RefCell::new(say);
    let mut progress = |p: Progress| (lines.borrow_mut())(&format!("install: {p}"));
    let mut first_mib = Vec::new();
    let mut configure = |first: &[u8]| {
        first_mib = first.to_vec();
        first_boot(&device, first, plan, node, &mut *lines.borrow_mut())
    };
    let written = install::write_image_then(
        &ImageSource::from(plan),
        &device,
        &WriteOptions::default(),
        &mut progress,
        &mut configure,
    );
    let say = lines.into_inner();
    match written {
        Ok(done) => {
            say(&format!(
                "install: {} MiB written and read back, {} MiB received, {} retries, {:.0} s",
                done.written_bytes >> 20,
                done.received_bytes >> 20,
                done.retries,
                done.seconds
            ));
            if let Err(why) = boot_entry(efi, &first_mib, plan, say) {
                say(&format!("install failed: boot entry: {why}"));
                let failed = InstallOutcome::Failed {
                    stage: "boot entry".into(),
                    reason: why,
                };
                return report(failed, done.written_bytes, done.received_bytes);
            }
            report(
                InstallOutcome::Written,
                done.written_bytes,
                done.received_bytes,
            )
        }
        Err(e) => {
            say(&format!("install failed: {e}"));
            report(e.outcome(), 0, 0)
        }
    }
}

/// Wipes the signatures of `disk` (an earlier install of `image` wrote it) at `dev_dir/NAME`,
/// after checking it is still that disk: a retired or reprovisioned node's disk must not boot.
pub fn wipe(
    image: &str,
    disk: &TargetDisk,
    facts: &Facts,
    dev_dir: &Path,
    say: &mut dyn FnMut(&str),
) -> InstallReport {
    let started = Instant::now();
    let outcome = match not_the_disk(disk, &facts.disks) {
        Some(why) => InstallOutcome::Failed {
            stage: "disk".into(),
            reason: why,
        },
        None => match install::wipe_signatures(&dev_dir.join(&disk.name)) {
            Ok(spans) => {
                say(&format!("wiped {} ({} ranges)", disk.name, spans.len()));
                InstallOutcome::Wiped
            }
            Err(e) => InstallOutcome::Failed {
                stage: "wipe".into(),
                reason: e.to_string(),
            },
        },
    };
    if let InstallOutcome::Failed { reason, .. } = &outcome {
        say(&format!("wipe of {} failed: {reason}", disk.name));
    }
    InstallReport {
        mac: Default::default(),
        image: image.to_string(),
        outcome,
        written_bytes: 0,
        received_bytes: 0,
        seconds: started.elapsed().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use provisioner_protocol::install::FirstBoot;

    fn plan(name: &str, size: u64, serial: Option<&str>) -> InstallPlan {
        InstallPlan {
            image: "img".into(),
            url: "http://a/x.zst".into(),
            sha256: "00".repeat(32),
            raw_sha256: "00".repeat(32),
            raw_bytes: 1 << 20,
            bmap_url: "http://a/x.bmap".into(),
            bmap_sha256: "00".repeat(32),
            disk: TargetDisk {
                name: name.into(),
                size_bytes: size,
                serial: serial.map(Into::into),
                hints: "serial=S1".into(),
            },
            first_boot: FirstBoot::default(),
        }
    }

    fn disk(name: &str, size: u64, serial: &str) -> Disk {
        Disk {
            name: name.into(),
            size_bytes: size,
            serial: Some(serial.into()),
            ..Disk::default()
        }
    }

    #[test]
    fn only_the_disk_seen_at_inspection_is_written() {
        let disks = [disk("vda", 100, "S0"), disk("vdb", 200, "S1")];
        assert_eq!(disk_mismatch(&plan("vdb", 200, Some("S1")), &disks), None);
        let gone = disk_mismatch(&plan("vdc", 200, Some("S1")), &disks).unwrap();
        assert!(gone.contains("vdc") && gone.contains("vda, vdb"), "{gone}");
        let resized = disk_mismatch(&plan("vdb", 300, Some("S1")), &disks).unwrap();
        assert!(
            resized.contains("200") && resized.contains("300"),
            "{resized}"
        );
        let swapped = disk_mismatch(&plan("vdb", 200, Some("S9")), &disks).unwrap();
        assert!(
            swapped.contains("S1") && swapped.contains("S9"),
            "{swapped}"
        );
    }

    #[test]
    fn a_disk_that_changed_is_refused_before_anything_is_opened() {
        let facts = Facts {
            disks: vec![disk("vda", 100, "S0")],
            ..Facts::default()
        };
        let mut lines = Vec::new();
        let p = plan("vdb", 200, Some("S1"));
        let node = node_record(&p, "http://a/", "52:54:00:00:00:01".parse().unwrap());
        assert_eq!(node.url, "http://a");
        let r = run(
            &p,
            &facts,
            Path::new("/nonexistent-dev"),
            Path::new("/nonexistent-efi"),
            &node,
            &mut |l: &str| lines.push(l.to_string()),
        );
        let InstallOutcome::Failed { stage, reason } = &r.outcome else {
            panic!("{r:?}")
        };
        assert_eq!(stage, "disk");
        assert!(reason.contains("vdb"), "{reason}");
        assert_eq!(r.written_bytes, 0);
    }

    #[test]
    fn a_wipe_clears_the_signatures_of_that_disk_only() {
        let dir = tempfile::tempdir().unwrap();
        let size = 8u64 << 20;
        for name in ["vda", "vdb"] {
            std::fs::write(dir.path().join(name), vec![0xEEu8; size as usize]).unwrap();
        }
        let facts = Facts {
            disks: vec![disk("vda", size, "S0"), disk("vdb", size, "S1")],
            ..Facts::default()
        };
        let target = plan("vdb", size, Some("S1")).disk;
        let r = wipe("img", &target, &facts, dir.path(), &mut |_: &str| {});
        assert_eq!(r.outcome, InstallOutcome::Wiped, "{r:?}");
        let vdb = std::fs::read(dir.path().join("vdb")).unwrap();
        assert!(vdb[..1 << 20].iter().all(|b| *b == 0), "first MiB wiped");
        assert!(
            vdb[vdb.len() - (1 << 20)..].iter().all(|b| *b == 0),
            "last MiB wiped"
        );
        let vda = std::fs::read(dir.path().join("vda")).unwrap();
        assert!(
            vda.iter().all(|b| *b == 0xEE),
            "the other disk is untouched"
        );
        // A disk that is not the one the install wrote is left alone.
        let other = plan("vdb", size, Some("S9")).disk;
        let r = wipe("img", &other, &facts, dir.path(), &mut |_: &str| {});
        assert!(matches!(r.outcome, InstallOutcome::Failed { ref stage, .. } if stage == "disk"));
    }
}
