//! `provisioner image import` as an operator uses it with an image carried in from another
//! appliance or a staging site: only an image whose manifest is signed by a trusted key and
//! whose every file matches its sha256 enters the library, and a refusal names the file and
//! leaves the library and the artifact store as they were. `key show` gives a key Debian's
//! `minisign` checks the manifest with; `image remove` is refused while a plan slot names it;
//! imported files are served as artifacts with Range and their digest as ETag.
//!
//! The image here is small and not bootable (the build test makes real ones): what is tested
//! is the import's judgement, which must not depend on the size.

mod common;

use common::provisioner;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::images::{NAME, staged_image};
use provisioner::keys::ApplianceKey;

/// What a refused import must not have changed: the library and the artifact store.
fn snapshot(data: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for d in ["images/os", "artifacts"] {
        if let Ok(rd) = std::fs::read_dir(data.join(d)) {
            files.extend(rd.flatten().map(|e| e.path()));
        }
    }
    files.sort();
    files
}

struct Sites {
    _tmp: tempfile::TempDir,
    staging: PathBuf,
    appliance: PathBuf,
    image: PathBuf,
}

fn sites() -> Sites {
    let tmp = tempfile::tempdir().unwrap();
    let staging = tmp.path().join("staging");
    let appliance = tmp.path().join("appliance");
    let image = tmp.path().join("carried").join(NAME);
    staged_image(&staging, &image);
    Sites {
        staging,
        appliance,
        image,
        _tmp: tmp,
    }
}

fn trust_staging(s: &Sites) {
    let (ok, said) = provisioner(&s.staging, &["key", "show"]);
    assert!(ok, "{said}");
    let pub_file = s.staging.join("keys/appliance.pub");
    assert!(
        said.contains(std::fs::read_to_string(&pub_file).unwrap().trim()),
        "{said}"
    );
    let (ok, said) = provisioner(&s.appliance, &["key", "trust", pub_file.to_str().unwrap()]);
    assert!(ok, "{said}");
}

fn refused(s: &Sites, from: &Path, expect: &[&str]) {
    let before = snapshot(&s.appliance);
    let (ok, said) = provisioner(&s.appliance, &["image", "import", from.to_str().unwrap()]);
    assert!(!ok, "import of {} must be refused: {said}", from.display());
    for e in expect {
        assert!(said.contains(e), "the refusal must say {e:?}: {said}");
    }
    assert_eq!(
        snapshot(&s.appliance),
        before,
        "a refused import changed the library or the store"
    );
    let (_, list) = provisioner(&s.appliance, &["image", "list"]);
    assert!(!list.contains(NAME), "{list}");
}

#[test]
fn an_image_from_an_untrusted_key_is_refused_until_the_operator_trusts_it() {
    let s = sites();
    let staging_id = ApplianceKey::load_or_create(&s.staging)
        .unwrap()
        .public
        .id_hex();
    refused(
        &s,
        &s.image,
        &["image.json.minisig", &staging_id, "does not trust"],
    );
    trust_staging(&s);
    let (ok, said) = provisioner(
        &s.appliance,
        &["image", "import", s.image.to_str().unwrap()],
    );
    assert!(ok, "{said}");
    let (_, list) = provisioner(&s.appliance, &["image", "list"]);
    assert!(list.contains(NAME) && list.contains("x86_64"), "{list}");
    let (ok, show) = provisioner(&s.appliance, &["image", "show", NAME]);
    assert!(
        ok && show.contains("SPDX 2.3") && show.contains("not graded"),
        "{show}"
    );
    // Importing the same image again changes nothing and is not an error.
    let before = snapshot(&s.appliance);
    let (ok, said) = provisioner(
        &s.appliance,
        &["image", "import", s.image.to_str().unwrap()],
    );
    assert!(ok, "{said}");
    assert_eq!(snapshot(&s.appliance), before);
}

#[test]
fn a_tampered_truncated_or_unsigned_image_is_refused_naming_the_file() {
    let s = sites();
    trust_staging(&s);
    let copy = |tag: &str| {
        let dir = s.image.with_file_name(format!("{NAME}-{tag}"));
        std::fs::create_dir_all(&dir).unwrap();
        for e in std::fs::read_dir(&s.image).unwrap().flatten() {
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
        dir
    };
    // One byte of the compressed image changed after signing.
    let tampered = copy("tampered");
    let zst = tampered.join(format!("{NAME}.raw.zst"));
    let mut bytes = std::fs::read(&zst).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&zst, bytes).unwrap();
    refused(&s, &tampered, &[&format!("{NAME}.raw.zst"), "sha256"]);
    // The block map cut short in transit.
    let truncated = copy("truncated");
    let bmap = truncated.join(format!("{NAME}.bmap"));
    let len = std::fs::metadata(&bmap).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&bmap)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    refused(&s, &truncated, &[&format!("{NAME}.bmap"), "truncated"]);
    // No signature at all.
    let unsigned = copy("unsigned");
    std::fs::remove_file(unsigned.join("image.json.minisig")).unwrap();
    refused(&s, &unsigned, &["unsigned", "image.json.minisig"]);
    // The manifest edited after signing (a sha256 swapped for the tampered file's).
    let edited = copy("edited");
    let m = edited.join("image.json");
    let text = std::fs::read_to_string(&m)
        .unwrap()
        .replace("\"packages\": 1", "\"packages\": 2");
    std::fs::write(&m, text).unwrap();
    refused(&s, &edited, &["image.json.minisig", "does not match"]);
    // Signed by another appliance's key that happens to be trusted? No: a key never trusted.
    let other = copy("other-key");
    let rogue = s.staging.with_file_name("rogue");
    staged_image(&rogue, &other);
    refused(&s, &other, &["does not trust"]);
}

#[test]
fn a_tarball_is_imported_and_one_with_a_path_out_of_it_is_refused() {
    let s = sites();
    trust_staging(&s);
    let parent = s.image.parent().unwrap();
    let evil = parent.join("evil.tar");
    let st = Command::new("tar")
        .arg("-cf")
        .arg(&evil)
        .arg("-C")
        .arg(parent)
        .arg(format!("{NAME}/image.json"))
        .arg("--transform")
        .arg("s,^,../../,")
        .status()
        .unwrap();
    assert!(st.success());
    refused(&s, &evil, &["evil.tar", "not a plain name"]);
    let good = parent.join("image.tar");
    let st = Command::new("tar")
        .arg("-cf")
        .arg(&good)
        .arg("-C")
        .arg(parent)
        .arg(NAME)
        .status()
        .unwrap();
    assert!(st.success());
    let (ok, said) = provisioner(&s.appliance, &["image", "import", good.to_str().unwrap()]);
    assert!(ok, "{said}");
    assert!(
        !s.appliance
            .join("images/os")
            .read_dir()
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with('.'))
    );
}

#[cfg_attr(
    not(tool = "minisign"),
    ignore = "needs minisign (apt-get install minisign)"
)]
#[test]
fn debians_minisign_verifies_the_manifest_with_the_key_key_show_prints() {
    common::require_tools(&[("minisign", "minisign")]);
    let s = sites();
    let (ok, shown) = provisioner(&s.staging, &["key", "show"]);
    assert!(ok, "{shown}");
    let key_file = s.image.with_file_name("staging.pub");
    std::fs::write(
        &key_file,
        shown.lines().take(2).collect::<Vec<_>>().join("\n") + "\n",
    )
    .unwrap();
    let verify = |dir: &Path| {
        Command::new("minisign")
            .arg("-V")
            .arg("-p")
            .arg(&key_file)
            .arg("-m")
            .arg(dir.join("image.json"))
            .output()
            .unwrap()
    };
    let out = verify(&s.image);
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "minisign refused our signature: {said}"
    );
    assert!(
        said.contains(&format!("image:{NAME}")),
        "the trusted comment names the image: {said}"
    );
    let m = s.image.join("image.json");
    let text = std::fs::read_to_string(&m)
        .unwrap()
        .replace("x86_64", "arm64");
    std::fs::write(&m, text).unwrap();
    assert!(
        !verify(&s.image).status.success(),
        "minisign must refuse an edited manifest"
    );
}

#[test]
fn an_image_a_plan_slot_names_cannot_be_removed_and_its_files_are_served() {
    let s = sites();
    trust_staging(&s);
    let (ok, said) = provisioner(
        &s.appliance,
        &["image", "import", s.image.to_str().unwrap()],
    );
    assert!(ok, "{said}");
    let plan = s.image.with_file_name("plan.csv");
    std::fs::write(
        &plan,
        format!("site,row,rack,u,serial,mac,sku,image\nlab,r1,a01,10,SN1,,qemu-lab,{NAME}\nlab,r1,a01,12,SN2,,qemu-lab,\n"),
    )
    .unwrap();
    let (ok, said) = provisioner(&s.appliance, &["plan", "import", plan.to_str().unwrap()]);
    assert!(ok, "{said}");
    let before = snapshot(&s.appliance);
    let (ok, said) = provisioner(&s.appliance, &["image", "remove", NAME]);
    assert!(!ok, "{said}");
    assert!(
        said.contains("lab/r1/a01/U10"),
        "the refusal names the slot: {said}"
    );
    assert_eq!(snapshot(&s.appliance), before);

    // Served as an artifact: Range and the digest as ETag, like the discovery image.
    let entry = provisioner::image::os::library::find(&s.appliance, NAME).unwrap();
    let c = &entry.manifest.compressed;
    let app_data = s.appliance.clone();
    let app = common::inproc::App::seeded(
        "site,row,rack,u,serial,mac,sku\nlab,r1,a01,10,SN1,,qemu-lab\n",
        move |data| {
            provisioner::keys::trust(
                data,
                &app_data
                    .join("keys/trusted")
                    .read_dir()
                    .unwrap()
                    .flatten()
                    .next()
                    .unwrap()
                    .path(),
            )
            .unwrap();
        },
        "",
    );
    let dir = s.image.clone();
    let lib = provisioner::image::os::library::import(&app.data(), &dir).unwrap();
    assert_eq!(lib.manifest.compressed.sha256, c.sha256);
    let path = format!("/artifacts/{}/{}", c.sha256, c.file);
    let r = app.call("GET", &path, &[("range", "bytes=0-9")], "");
    assert_eq!(r.status, 206, "{path}");
    let header = |name: &str| {
        r.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(header("content-length"), "10");
    assert_eq!(header("content-range"), format!("bytes 0-9/{}", c.size));
    assert!(
        header("etag").contains(&c.sha256.to_string()),
        "{}",
        header("etag")
    );

    // Once no slot names it, it goes, files and all.
    std::fs::write(
        &plan,
        "site,row,rack,u,serial,mac,sku\nlab,r1,a01,12,SN2,,qemu-lab\n",
    )
    .unwrap();
    let (ok, said) = provisioner(&s.appliance, &["plan", "import", plan.to_str().unwrap()]);
    assert!(ok, "{said}");
    let (ok, said) = provisioner(&s.appliance, &["image", "remove", NAME]);
    assert!(ok, "{said}");
    let (_, list) = provisioner(&s.appliance, &["image", "list"]);
    assert!(!list.contains(NAME), "{list}");
    assert!(
        !s.appliance
            .join("artifacts")
            .join(c.sha256.to_string())
            .exists()
    );
}
