//! A small signed OS image as `provisioner image build` stages it: not bootable (the build
//! test makes real ones), for what depends only on the files and their signature (import,
//! serving, the install instruction).

use std::path::Path;
use std::process::Command;

use provisioner::image::os::layout::{Filesystem, Partition};
use provisioner::image::os::manifest::{self, FileDigest, ImageManifest, KernelInfo};
use provisioner::image::os::recipe::{Arch, Firmware};
use provisioner::keys::ApplianceKey;

pub const NAME: &str = "test-image-1.0.0-x86_64";

/// A signed image folder as `image build` writes it, signed by the appliance of `site`.
pub fn staged_image(site: &Path, out: &Path) -> ImageManifest {
    staged_image_with(site, out, None)
}

/// [`staged_image`] with a driver set built in (as `image build --drivers` records it).
pub fn staged_image_with(
    site: &Path,
    out: &Path,
    drivers: Option<provisioner_protocol::drivers::DriverSet>,
) -> ImageManifest {
    std::fs::create_dir_all(out).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = out.join(name);
        std::fs::write(&p, bytes).unwrap();
        FileDigest::of(&p).unwrap()
    };
    let raw: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let raw_d = write(&format!("{NAME}.raw"), &raw);
    let zst = zstd_of(&out.join(format!("{NAME}.raw")));
    let compressed = write(&format!("{NAME}.raw.zst"), &zst);
    std::fs::remove_file(out.join(format!("{NAME}.raw"))).unwrap();
    let bmap = write(
        &format!("{NAME}.bmap"),
        b"<?xml version=\"1.0\" ?>\n<bmap version=\"2.0\">\n<BlockSize> 4096 </BlockSize>\n<MappedBlocksCount> 49 </MappedBlocksCount>\n</bmap>\n",
    );
    let sbom = write(
        &format!("{NAME}.spdx.json"),
        b"{\"spdxVersion\": \"SPDX-2.3\"}\n",
    );
    let m = ImageManifest {
        format: manifest::FORMAT,
        name: NAME.into(),
        recipe: "test-image".into(),
        recipe_version: "1.0.0".into(),
        architecture: Arch::X86_64,
        firmware: vec![Firmware::Bios, Firmware::Uefi],
        source_date_epoch: 1_764_547_200,
        raw: raw_d,
        compressed,
        bmap,
        mapped_bytes: 49 * 4096,
        sbom,
        packages: 1,
        kernel: KernelInfo {
            package: "linux-image-6.1.0-0-amd64".into(),
            version: "6.1.0-0".into(),
            release: "6.1.0-0-amd64".into(),
            cmdline: "root=PARTUUID=x ro".into(),
        },
        disk_guid: "00000000-0000-8000-8000-000000000000".into(),
        partitions: vec![Partition {
            name: "root".into(),
            number: 1,
            type_guid: "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709".into(),
            partuuid: "00000000-0000-8000-8000-000000000001".into(),
            start_sector: 2048,
            sectors: 300,
            filesystem: Filesystem::Ext4,
            fs_uuid: Some("x".into()),
            mount: Some("/".into()),
            options: Some("defaults".into()),
        }],
        hardening: None,
        grade: None,
        build_seconds: 1.0,
        drivers,
    };
    let key = ApplianceKey::load_or_create(site).unwrap();
    manifest::write_signed(out, &m, &key).unwrap();
    m
}

fn zstd_of(path: &Path) -> Vec<u8> {
    let out = Command::new("zstd")
        .args(["-q", "-c"])
        .arg(path)
        .output()
        .expect("run zstd (apt-get install zstd)");
    assert!(out.status.success());
    out.stdout
}
