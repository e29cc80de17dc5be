use std::path::Path;
use std::process::Command;

use super::*;

const MIB: u64 = 1 << 20;

use crate::install::have;

/// A 64 MiB GPT image like the image builder's: BIOS boot, ESP, root to the end.
fn image(path: &Path) {
    let file = File::create(path).unwrap();
    file.set_len(64 * MIB).unwrap();
    let script = "label: gpt\nunit: sectors\nfirst-lba: 2048\n\
        start=2048, size=4096, type=21686148-6449-6E6F-744E-656564454649, name=bios\n\
        start=6144, size=16384, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp, \
        uuid=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n\
        start=22528, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name=root\n";
    run_with_input(Command::new("sfdisk").arg("-q").arg(path), script);
}

/// Runs `cmd` with `input` on its stdin; it must succeed.
pub(crate) fn run_with_input(cmd: &mut Command, input: &str) {
    use std::io::Write;
    let mut child = cmd.stdin(std::process::Stdio::piped()).spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Copies the 64 MiB image into a 96 MiB disk.
fn disk_from(image: &Path, disk: &Path) {
    std::fs::copy(image, disk).unwrap();
    File::options()
        .write(true)
        .open(disk)
        .unwrap()
        .set_len(96 * MIB)
        .unwrap();
}

#[test]
fn moves_the_backup_to_the_end_and_grows_the_last_partition() {
    if !have("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (img, disk) = (dir.path().join("img"), dir.path().join("disk"));
    image(&img);
    disk_from(&img, &disk);
    assert!(output(Command::new("sfdisk").arg("--verify").arg(&disk)).contains("not on the end"));

    let change = grow_gpt(&disk).unwrap();
    let lbas = 96 * MIB / 512;
    assert_eq!(
        change,
        GptChange {
            sector: 512,
            partition: 3,
            // sfdisk ends root on a MiB boundary: 22528 + 106496 - 1.
            old_last_lba: 129023,
            new_last_lba: lbas - 34,
            old_backup_lba: 64 * MIB / 512 - 1,
            new_backup_lba: lbas - 1,
        }
    );

    let verify = output(Command::new("sfdisk").arg("--verify").arg(&disk));
    assert!(verify.contains("No errors detected"), "{verify}");
    assert!(!verify.contains("mismatch"), "{verify}");
    let table = |p: &Path| -> serde_json::Value {
        let mut t: serde_json::Value =
            serde_json::from_str(&output(Command::new("sfdisk").arg("-J").arg(p))).unwrap();
        // Partition device names follow the file's name.
        for part in t["partitiontable"]["partitions"].as_array_mut().unwrap() {
            part.as_object_mut().unwrap().remove("node");
        }
        t
    };
    let (before, after) = (table(&img), table(&disk));
    let (before, after) = (&before["partitiontable"], &after["partitiontable"]);
    assert_eq!(after["lastlba"], lbas - 34);
    assert_eq!(after["id"], before["id"]);
    let parts = after["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    // The first two are untouched; root starts where it did and ends at the last usable LBA.
    assert_eq!(parts[..2], before["partitions"].as_array().unwrap()[..2]);
    assert_eq!(parts[2]["start"], 22528);
    assert_eq!(parts[2]["size"], lbas - 34 - 22528 + 1);
    assert_eq!(parts[2]["uuid"], before["partitions"][2]["uuid"]);

    // The image's old backup header is gone from what is now inside root.
    let disk_file = File::open(&disk).unwrap();
    let mut old = [0u8; 512];
    disk_file.read_exact_at(&mut old, 64 * MIB - 512).unwrap();
    assert!(old.iter().all(|&b| b == 0));

    if Command::new("sgdisk").arg("--version").output().is_ok() {
        let v = output(Command::new("sgdisk").arg("-v").arg(&disk));
        assert!(v.contains("No problems found"), "{v}");
    }
    // Relocating again changes nothing but confirms it is already at the end.
    let again = grow_gpt(&disk).unwrap();
    assert_eq!(again.new_backup_lba, lbas - 1);
    assert_eq!(again.old_last_lba, lbas - 34);
}

#[test]
fn refuses_what_it_cannot_fit() {
    if !have("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (img, disk) = (dir.path().join("img"), dir.path().join("disk"));
    image(&img);
    disk_from(&img, &disk);
    let file = device::open(&disk).unwrap();
    let mut first = vec![0u8; MIB as usize];
    file.read_exact_at(&mut first, 0).unwrap();

    let err = relocate(&mut first.clone(), &file, 96 * MIB, 4096).unwrap_err();
    assert!(
        matches!(
            err,
            GptError::SectorSize {
                image: 512,
                disk: 4096
            }
        ),
        "{err}"
    );
    let err = relocate(&mut first.clone(), &file, 32 * MIB, 512).unwrap_err();
    assert!(matches!(err, GptError::DiskSmaller { .. }), "{err}");

    let mut bent = first.clone();
    bent[512 + 40] ^= 1;
    let err = relocate(&mut bent, &file, 96 * MIB, 512).unwrap_err();
    assert!(matches!(err, GptError::HeaderCrc { .. }), "{err}");
    let mut bent = first.clone();
    bent[1024 + 200] ^= 1;
    let err = relocate(&mut bent, &file, 96 * MIB, 512).unwrap_err();
    assert!(matches!(err, GptError::EntriesCrc { .. }), "{err}");
    let err = relocate(&mut vec![0u8; MIB as usize], &file, 96 * MIB, 512).unwrap_err();
    assert!(matches!(err, GptError::NoGpt), "{err}");
    // Entries held in fewer bytes than they need.
    let err = relocate(&mut first[..4096].to_vec(), &file, 96 * MIB, 512).unwrap_err();
    assert!(matches!(err, GptError::EntriesOutside { .. }), "{err}");
}

#[test]
fn the_entries_are_read_as_sfdisk_wrote_them() {
    if !have("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    image(&img);
    let first = std::fs::read(&img).unwrap()[..MIB as usize].to_vec();
    let (sector, used) = entries(&first).unwrap();
    assert_eq!(sector, 512);
    let got: Vec<(u32, &str, u64, u64)> = used
        .iter()
        .map(|e| (e.number, e.type_guid.as_str(), e.first_lba, e.last_lba))
        .collect();
    assert_eq!(
        got,
        [
            (1, "21686148-6449-6E6F-744E-656564454649", 2048, 6143),
            (2, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", 6144, 22527),
            (3, "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", 22528, 129023),
        ]
    );
    // The partition's own GUID, in its stored (mixed-endian) bytes.
    assert_eq!(
        guid_text(&used[1].unique_guid),
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
    );
    assert_eq!(used[1].unique_guid[..4], [0xAF, 0x3D, 0xC6, 0x0F]);
    // A flipped bit in the entries is caught by their CRC.
    let mut bad = first.clone();
    bad[1024 + 130] ^= 1;
    assert!(matches!(entries(&bad), Err(GptError::EntriesCrc { .. })));
    assert!(matches!(entries(&[0u8; 4096]), Err(GptError::NoGpt)));
}
