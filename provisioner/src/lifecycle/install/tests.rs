use super::*;

const GIB: u64 = 1 << 30;

fn entry(name: &str, arch: &str, raw: u64) -> Entry {
    let digest =
        |file: &str| serde_json::json!({ "file": file, "size": raw, "sha256": "ab".repeat(32) });
    let manifest = serde_json::from_value(serde_json::json!({
        "format": 1,
        "name": name,
        "recipe": "debian12-hardened",
        "recipe_version": "1.0.0",
        "architecture": arch,
        "firmware": ["bios", "uefi"],
        "source_date_epoch": 1764547200u64,
        "raw": digest("x.raw"),
        "compressed": digest("x.raw.zst"),
        "bmap": digest("x.bmap"),
        "mapped_bytes": 1u64 << 30,
        "sbom": digest("x.spdx.json"),
        "packages": 271,
        "kernel": { "package": "linux-image-amd64", "version": "6.1", "release": "6.1.0-57-amd64", "cmdline": "ro" },
        "disk_guid": "00000000-0000-0000-0000-000000000000",
        "partitions": [],
        "hardening": null,
        "grade": null,
        "build_seconds": 1.0
    }))
    .expect("a manifest");
    Entry {
        dir: PathBuf::from("/nonexistent"),
        manifest,
    }
}

fn disk(name: &str, gib: u64, serial: &str) -> Disk {
    Disk {
        name: name.into(),
        size_bytes: gib * GIB,
        serial: Some(serial.into()),
        ..Disk::default()
    }
}

fn facts(arch: &str, disks: Vec<Disk>) -> Facts {
    let mut f = Facts::default();
    f.cpu.arch = Some(arch.into());
    f.disks = disks;
    f
}

fn library(
    have: &'static [&'static str],
    arch: &'static str,
) -> impl Fn(&str) -> Result<Entry, LibraryError> {
    move |name| {
        if have.contains(&name) {
            Ok(entry(name, arch, 16 * GIB))
        } else {
            Err(LibraryError::NotFound(name.into()))
        }
    }
}

fn sku(image: Option<&str>, hints: Option<&str>) -> Sku {
    let mut text = "description = \"t\"\nmemory_min_mib = 1\n".to_string();
    if let Some(i) = image {
        text += &format!("image = \"{i}\"\n");
    }
    if let Some(h) = hints {
        text += &format!("root_device = {h}\n");
    }
    toml::from_str(&text).expect("a SKU")
}

const IMG: &str = "debian12-hardened-1.0.0-x86_64";

#[test]
fn the_plan_row_names_the_image_else_the_sku_else_the_node_waits_saying_why() {
    let two = facts("x86_64", vec![disk("vda", 20, "A"), disk("vdb", 40, "B")]);
    let sku_with = sku(Some(IMG), None);
    let sku_without = sku(None, None);
    let plan = |image, sku| SlotInstall {
        slot: "lab/r1/a01/U10",
        sku_name: "qemu-lab",
        sku,
        driver_set: None,
        image,
        hints: None,
    };
    // The SKU's default; no hints: the smallest disk of at least 4 GiB.
    let Choice::Install { image, disk, .. } = choose(
        &plan(None, Some(&sku_with)),
        &two,
        library(&[IMG], "x86_64"),
    ) else {
        panic!()
    };
    assert_eq!(
        (image.manifest.name.as_str(), disk.name.as_str()),
        (IMG, "vda")
    );
    // The row's image wins over the SKU's.
    let other = "other-1.0.0-x86_64";
    let Choice::Install { image, .. } = choose(
        &plan(Some(other), Some(&sku_with)),
        &two,
        library(&[IMG, "other-1.0.0-x86_64"], "x86_64"),
    ) else {
        panic!()
    };
    assert_eq!(image.manifest.name, other);
    // Neither names one.
    let Choice::Wait(why) = choose(
        &plan(None, Some(&sku_without)),
        &two,
        library(&[], "x86_64"),
    ) else {
        panic!()
    };
    assert!(
        why.contains("no OS image") && why.contains("qemu-lab"),
        "{why}"
    );
    // Named but not imported yet.
    let Choice::Wait(why) = choose(&plan(None, Some(&sku_with)), &two, library(&[], "x86_64"))
    else {
        panic!()
    };
    assert!(
        why.contains("not in the library") && why.contains(IMG),
        "{why}"
    );
    // A SKU with a driver set waits for an image built with it.
    let with_set = SlotInstall {
        driver_set: Some("nvidia-580-hgx-hopper"),
        ..plan(None, Some(&sku_with))
    };
    let Choice::Wait(why) = choose(&with_set, &two, library(&[IMG], "x86_64")) else {
        panic!()
    };
    assert!(
        why.contains("gets driver set nvidia-580-hgx-hopper")
            && why.contains("carries none")
            && why.contains("--drivers nvidia-580-hgx-hopper"),
        "{why}"
    );
}

#[test]
fn hints_choose_exactly_one_disk_or_the_install_is_refused_naming_the_candidates() {
    let two = facts("x86_64", vec![disk("vda", 20, "A"), disk("vdb", 40, "B")]);
    let by_serial = sku(Some(IMG), Some("{ serial = \"B\" }"));
    let plan = |sku, hints| SlotInstall {
        slot: "s",
        sku_name: "k",
        sku,
        driver_set: None,
        image: None,
        hints,
    };
    let Choice::Install { disk, hints, .. } = choose(
        &plan(Some(&by_serial), None),
        &two,
        library(&[IMG], "x86_64"),
    ) else {
        panic!()
    };
    assert_eq!(disk.name, "vdb");
    assert_eq!(hints.to_string(), "serial=B");
    // The row's hints win over the SKU's.
    let row: RootDeviceHints = "serial=A".parse().unwrap();
    let Choice::Install { disk, .. } = choose(
        &plan(Some(&by_serial), Some(&row)),
        &two,
        library(&[IMG], "x86_64"),
    ) else {
        panic!()
    };
    assert_eq!(disk.name, "vda");
    // Two match: refused, naming both.
    let both: RootDeviceHints = "size=>=10".parse().unwrap();
    let Choice::Refuse(why) = choose(
        &plan(Some(&by_serial), Some(&both)),
        &two,
        library(&[IMG], "x86_64"),
    ) else {
        panic!()
    };
    assert!(why.contains("vda") && why.contains("vdb"), "{why}");
    // None match: refused, listing the candidates.
    let none: RootDeviceHints = "serial=Z".parse().unwrap();
    let Choice::Refuse(why) = choose(
        &plan(Some(&by_serial), Some(&none)),
        &two,
        library(&[IMG], "x86_64"),
    ) else {
        panic!()
    };
    assert!(why.contains("vda") && why.contains("vdb"), "{why}");
}

#[test]
fn an_image_of_another_architecture_or_larger_than_the_disk_is_refused() {
    let arm = facts("aarch64", vec![disk("nvme0n1", 900, "A")]);
    let s = sku(Some(IMG), None);
    let plan = SlotInstall {
        slot: "s",
        sku_name: "k",
        sku: Some(&s),
        driver_set: None,
        image: None,
        hints: None,
    };
    let Choice::Refuse(why) = choose(&plan, &arm, library(&[IMG], "x86_64")) else {
        panic!()
    };
    assert!(why.contains("x86_64") && why.contains("arm64"), "{why}");
    let small = facts("x86_64", vec![disk("vda", 8, "A")]);
    let Choice::Refuse(why) = choose(&plan, &small, library(&[IMG], "x86_64")) else {
        panic!()
    };
    assert!(
        why.contains("vda") && why.contains(&(16 * GIB).to_string()),
        "{why}"
    );
}

#[test]
fn a_slot_gives_a_valid_host_name() {
    assert_eq!(hostname_of("dc1/r1/a01/U10"), "dc1-r1-a01-u10");
    assert_eq!(hostname_of("Lab Site/r_1//a01/U7"), "lab-site-r-1-a01-u7");
    assert_eq!(hostname_of("///"), "node");
    let long = hostname_of(&"a/".repeat(100));
    assert!(long.len() <= 63 && !long.ends_with('-'), "{long}");
}
