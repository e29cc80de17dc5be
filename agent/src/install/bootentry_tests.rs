use std::process::Command;

use super::*;
use crate::install::have;

const MIB: usize = 1 << 20;

/// The first MiB of a GPT image like the builder's (BIOS boot, ESP, root), by sfdisk.
fn first_mib(dir: &Path, with_esp: bool) -> Vec<u8> {
    let path = dir.join("img");
    File::create(&path)
        .unwrap()
        .set_len(64 * MIB as u64)
        .unwrap();
    let esp = if with_esp {
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    } else {
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
    };
    let script = format!(
        "label: gpt\nunit: sectors\nfirst-lba: 2048\n\
         start=2048, size=4096, type=21686148-6449-6E6F-744E-656564454649\n\
         start=6144, size=16384, type={esp}, uuid=6D4F2C1A-0B3E-4D5F-9A8B-7C6D5E4F3A2B\n\
         start=22528, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709\n"
    );
    crate::install::gpt::tests::run_with_input(
        Command::new("sfdisk").arg("-q").arg(&path),
        &script,
    );
    std::fs::read(&path).unwrap()[..MIB].to_vec()
}

/// PciRoot(0)/Pci(3,0)/MAC(525400990001,1)/IPv4(...), as OVMF writes its PXE entry.
fn pxe_path() -> Vec<u8> {
    let mut p = vec![0x02, 0x01, 12, 0, 0xD0, 0x41, 0x03, 0x0A, 0, 0, 0, 0];
    p.extend_from_slice(&[0x01, 0x01, 6, 0, 0, 3]);
    let mut mac = vec![0x03, 0x0B, 37, 0, 0x52, 0x54, 0, 0x99, 0, 1];
    mac.resize(36, 0);
    mac.push(1);
    p.extend(mac);
    let mut ipv4 = vec![0x03, 0x0C, 27, 0];
    ipv4.resize(27, 0);
    p.extend(ipv4);
    p.extend_from_slice(&[0x7F, 0xFF, 4, 0]);
    p
}

/// PciRoot(0)/Pci(4,0): a disk entry the firmware made itself.
fn firmware_disk_path() -> Vec<u8> {
    let mut p = vec![0x02, 0x01, 12, 0, 0xD0, 0x41, 0x03, 0x0A, 0, 0, 0, 0];
    p.extend_from_slice(&[0x01, 0x01, 6, 0, 0, 4, 0x7F, 0xFF, 4, 0]);
    p
}

fn put(dir: &Path, name: &str, data: &[u8]) {
    let mut b = ATTRIBUTES.to_le_bytes().to_vec();
    b.extend_from_slice(data);
    std::fs::write(dir.join(format!("{name}-{GLOBAL}")), b).unwrap();
}

fn option(description: &str, path: Vec<u8>) -> Vec<u8> {
    LoadOption {
        attributes: ACTIVE,
        description: description.into(),
        path,
    }
    .encode()
}

fn order(list: &[u16]) -> Vec<u8> {
    list.iter().flat_map(|n| n.to_le_bytes()).collect()
}

/// NVRAM as OVMF leaves it after a network install, with an entry of ours from before.
fn nvram(dir: &Path) {
    put(dir, "Boot0000", &option("UiApp", vec![0x7F, 0xFF, 4, 0]));
    put(
        dir,
        "Boot0001",
        &option("UEFI PXEv4 (MAC:525400990001)", pxe_path()),
    );
    put(
        dir,
        "Boot0002",
        &option("UEFI Misc Device", firmware_disk_path()),
    );
    put(
        dir,
        "Boot0003",
        &option("Provisioner: old-image", vec![0x7F, 0xFF, 4, 0]),
    );
    put(dir, "BootOrder", &order(&[1, 2, 0, 3]));
    // Another vendor's variable, never read.
    std::fs::write(
        dir.join("Lang-8be4df61-93ca-11d2-aa0d-00e098032b8c"),
        b"\x07\0\0\0eng",
    )
    .unwrap();
}

/// A temporary folder with an empty `efivars` in it; `None` (skipped) without sfdisk.
fn efivars() -> Option<(tempfile::TempDir, PathBuf)> {
    if !have("sfdisk") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("efivars");
    std::fs::create_dir(&vars).unwrap();
    Some((dir, vars))
}

#[test]
fn a_load_option_survives_encoding_and_a_truncated_one_is_refused() {
    let o = LoadOption {
        attributes: ACTIVE,
        description: "Provisioner: débian".into(),
        path: pxe_path(),
    };
    let b = o.encode();
    assert_eq!(LoadOption::decode(&b), Some(o.clone()));
    assert!(o.is_network());
    for cut in [0, 3, 7, b.len() - 1] {
        assert_eq!(LoadOption::decode(&b[..cut]), None, "cut at {cut}");
    }
    let disk = LoadOption {
        path: firmware_disk_path(),
        ..o
    };
    assert!(!disk.is_network());
}

#[test]
fn the_disk_entry_goes_after_the_network_and_replaces_ours() {
    let Some((dir, vars)) = efivars() else {
        return;
    };
    nvram(&vars);
    let first = first_mib(dir.path(), true);
    let added = add_disk_entry(&vars, &first, "Provisioner: img-1 on LABDISK0", loader()).unwrap();
    assert_eq!(
        added,
        Added {
            number: 3,
            removed: vec![3],
            order: vec![1, 3, 2, 0],
        },
        "{added}"
    );
    let v = Vars(&vars);
    let raw = std::fs::read(v.file("Boot0003")).unwrap();
    assert_eq!(raw[..4], ATTRIBUTES.to_le_bytes());
    let o = LoadOption::decode(&raw[4..]).unwrap();
    assert_eq!(o.description, "Provisioner: img-1 on LABDISK0");
    assert_eq!(o.attributes, ACTIVE);
    // HD(2, GPT, the ESP's GUID, 6144, 16384)/File(loader)/End.
    assert_eq!(o.path[..4], [0x04, 0x01, 42, 0]);
    assert_eq!(u32::from_le_bytes(o.path[4..8].try_into().unwrap()), 2);
    assert_eq!(u64::from_le_bytes(o.path[8..16].try_into().unwrap()), 6144);
    assert_eq!(
        u64::from_le_bytes(o.path[16..24].try_into().unwrap()),
        16384
    );
    assert_eq!(
        gpt::guid_text(&o.path[24..40]),
        "6D4F2C1A-0B3E-4D5F-9A8B-7C6D5E4F3A2B"
    );
    assert_eq!(o.path[40..42], [0x02, 0x02]);
    assert_eq!(nodes(&o.path).collect::<Vec<_>>(), [(4, 1), (4, 4)]);
    assert!(o.path.ends_with(&[0x7F, 0xFF, 4, 0]));
    // The others are as they were.
    assert_eq!(
        LoadOption::decode(&v.read("Boot0001").unwrap().unwrap())
            .unwrap()
            .description,
        "UEFI PXEv4 (MAC:525400990001)"
    );
    assert_eq!(
        order_of(&v.read("BootOrder").unwrap().unwrap()),
        [1, 3, 2, 0]
    );
    // Installed again: the same number, the same place; nothing else moves.
    let again = add_disk_entry(&vars, &first, "Provisioner: img-2 on LABDISK0", loader()).unwrap();
    assert_eq!(again.number, 3);
    assert_eq!(again.order, [1, 3, 2, 0]);
}

#[test]
fn without_network_entries_ours_goes_last_and_without_variables_it_is_an_error() {
    let Some((dir, vars)) = efivars() else {
        return;
    };
    let first = first_mib(dir.path(), true);
    let err = add_disk_entry(&vars, &first, "Provisioner: x", loader()).unwrap_err();
    assert!(matches!(err, BootEntryError::NoVariables(_)), "{err}");
    put(&vars, "Boot0000", &option("UiApp", vec![0x7F, 0xFF, 4, 0]));
    put(&vars, "BootOrder", &order(&[0]));
    let added = add_disk_entry(&vars, &first, "Provisioner: x", loader()).unwrap();
    assert_eq!((added.number, added.order), (1, vec![0, 1]));
    let no_esp = first_mib(dir.path(), false);
    let err = add_disk_entry(&vars, &no_esp, "Provisioner: x", loader()).unwrap_err();
    assert!(matches!(err, BootEntryError::NoEsp), "{err}");
}
