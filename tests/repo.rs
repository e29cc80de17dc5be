//! `provisioner repo` as an operator uses it: vendor bundles carried in offline (built here by
//! GnuPG, dpkg-deb and apt-ftparchive, as vendors build their repositories), checked against
//! the vendor keys the operator trusts, and published as signed, immutable suites that stock
//! apt (gpgv, not our code) verifies and installs from over the appliance's HTTP.
//!
//! A refused bundle must name the file and the reason, and leave the repository as it was:
//! the test compares every file under `DATA_DIR/repo` before and after.

mod common;

use common::provisioner;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::vendor::{self, Apt, Pkg, VendorKey, pkg};
use common::{ON_LOOPBACK, Running};

/// The CUDA-like packages: two driver branches' fabric manager, so the version matters.
const CUDA: &[Pkg] = &[
    pkg("nvidia-fabricmanager", "580.95.05-1", ""),
    pkg("nvidia-fabricmanager", "580.126.20-1", ""),
    pkg("libnvidia-nscq", "580.95.05-1", ""),
    pkg("nvidia-dkms-580-open", "580.95.05-1", ""),
    pkg(
        "nvidia-open-580",
        "580.95.05-1",
        "nvidia-dkms-580-open (= 580.95.05-1)",
    ),
];

const NEURON: &[Pkg] = &[
    pkg("aws-neuronx-dkms", "2.31.7.0", ""),
    pkg("aws-neuronx-runtime-lib", "2.35.30.0-0a1b2c3d", ""),
];

/// Every file under `DATA_DIR/repo` with its content's sha256 (the lock file aside).
fn snapshot(data: &Path) -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.file_name().is_some_and(|n| n != ".lock") {
                out.push((p.clone(), common::sha256(&p)));
            }
        }
    }
    let mut out = Vec::new();
    walk(&data.join("repo"), &mut out);
    out.sort();
    out
}

fn tar_gz(dir: &Path, out: &Path) {
    vendor::run(
        Command::new("tar")
            .arg("-czf")
            .arg(out)
            .arg("-C")
            .arg(dir)
            .arg("."),
    );
}

#[test]
#[cfg_attr(
    not(all(tool = "gpg", tool = "apt-ftparchive", tool = "curl")),
    ignore = "needs gpg, apt-ftparchive, dpkg-scanpackages, curl (the packages .ci/run installs)"
)]
fn vendor_bundles_become_signed_suites_that_stock_apt_verifies_and_installs_from() {
    common::require_tools(vendor::TOOLS);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // NVIDIA signs with RSA, a flat repository with InRelease; the Neuron-like vendor with
    // ed25519, dists/ + pool/ with Release + Release.gpg, carried in as a tarball.
    let nvidia = VendorKey::new(
        tmp.path(),
        "cudatools <cudatools@nvidia.test>",
        "rsa3072",
        "1y",
        None,
    );
    let neuron = VendorKey::new(
        tmp.path(),
        "neuron <neuron@aws.test>",
        "ed25519",
        "1y",
        None,
    );
    let cuda_dir = tmp.path().join("cuda-ubuntu2404-x86_64");
    vendor::flat_repo(&cuda_dir, CUDA, &nvidia, true, |r| r);
    let neuron_dir = tmp.path().join("neuron-src");
    vendor::dists_repo(&neuron_dir, "jammy", NEURON, &neuron, false, |r| r);
    let neuron_tar = tmp.path().join("neuron-2.33.0.tar.gz");
    tar_gz(&neuron_dir, &neuron_tar);

    // Nothing imports before a vendor key is trusted.
    let (ok, said) = provisioner(&data, &["repo", "import", cuda_dir.to_str().unwrap()]);
    assert!(!ok && said.contains("repo trust"), "{said}");

    for k in [&nvidia, &neuron] {
        let (ok, said) = provisioner(&data, &["repo", "trust", k.public.to_str().unwrap()]);
        assert!(ok && said.contains(&k.fingerprint), "{said}");
    }
    let (ok, said) = provisioner(
        &data,
        &[
            "repo",
            "import",
            cuda_dir.to_str().unwrap(),
            "--name",
            "cuda-lab",
        ],
    );
    assert!(ok, "{said}");
    assert!(
        said.contains("imported suite cuda-lab-1: 5 packages"),
        "{said}"
    );
    assert!(
        said.contains(&nvidia.fingerprint),
        "the signer is named: {said}"
    );
    let (ok, said) = provisioner(&data, &["repo", "import", neuron_tar.to_str().unwrap()]);
    assert!(ok, "{said}");
    assert!(
        said.contains("imported suite neuron-2.33.0-1: 2 packages"),
        "{said}"
    );

    let (ok, list) = provisioner(&data, &["repo", "list"]);
    assert!(
        ok && list.contains("cuda-lab-1") && list.contains("neuron-2.33.0-1"),
        "{list}"
    );
    let (ok, show) = provisioner(&data, &["repo", "show", "cuda-lab-1"]);
    assert!(ok, "{show}");
    for p in CUDA {
        assert!(
            show.lines()
                .any(|l| l.contains(p.name) && l.contains(p.version)),
            "{} {} in {show}",
            p.name,
            p.version
        );
    }
    assert!(
        show.contains("nvidia-fabricmanager_580.126.20-1_amd64.deb"),
        "where it came from: {show}"
    );
    let neuron_show = provisioner(&data, &["repo", "show", "neuron-2.33.0-1", "--json"]).1;
    let meta: serde_json::Value = serde_json::from_str(&neuron_show).unwrap();
    assert_eq!(meta["packages"][0]["release"], "dists/jammy/Release.gpg");
    assert_eq!(meta["packages"][0]["signer"], neuron.fingerprint.as_str());

    // The same bundle again is a new suite; the first is not touched.
    let first = snapshot(&data)
        .into_iter()
        .filter(|(p, _)| p.to_string_lossy().contains("cuda-lab-1"))
        .collect::<Vec<_>>();
    let (ok, said) = provisioner(
        &data,
        &[
            "repo",
            "import",
            cuda_dir.to_str().unwrap(),
            "--name",
            "cuda-lab",
        ],
    );
    assert!(ok && said.contains("cuda-lab-2"), "{said}");
    let after = snapshot(&data)
        .into_iter()
        .filter(|(p, _)| p.to_string_lossy().contains("cuda-lab-1"))
        .collect::<Vec<_>>();
    assert_eq!(first, after, "an import never changes an earlier suite");

    // Served: stock apt (gpgv) checks the appliance's signature, the indexes and packages.
    let mut app = Running::start(
        &[
            &["--data-dir", data.to_str().unwrap()][..],
            &ON_LOOPBACK[..],
        ]
        .concat(),
    );
    let http = app.addr("HTTP listening");
    let key = tmp.path().join("archive.asc");
    vendor::run(
        Command::new("curl")
            .args(["-sfo"])
            .arg(&key)
            .arg(format!("http://{http}/repo/archive.asc")),
    );
    let (ok, printed) = provisioner(&data, &["repo", "key"]);
    assert!(
        ok && printed.contains(&std::fs::read_to_string(&key).unwrap().trim().to_string()),
        "{printed}"
    );
    let apt = Apt::new(
        &tmp.path().join("apt"),
        &format!("http://{http}/repo cuda-lab-1 main"),
        &key,
    );
    let (ok, said) = apt.get(&["update"]);
    assert!(
        ok && !said.contains("W:") && !said.contains("E:"),
        "apt update: {said}"
    );
    let (ok, said) = apt.get(&[
        "install",
        "-s",
        "nvidia-open-580",
        "nvidia-fabricmanager=580.95.05-1",
    ]);
    assert!(ok, "{said}");
    assert!(
        said.contains("Inst nvidia-dkms-580-open (580.95.05-1"),
        "{said}"
    );
    assert!(
        said.contains("Inst nvidia-fabricmanager (580.95.05-1"),
        "{said}"
    );
    let (ok, said) = apt.get(&["download", "nvidia-fabricmanager=580.126.20-1"]);
    assert!(ok, "{said}");
    let got = apt
        .root
        .join("download/nvidia-fabricmanager_580.126.20-1_amd64.deb");
    assert_eq!(
        common::sha256(&got),
        common::sha256(&cuda_dir.join("nvidia-fabricmanager_580.126.20-1_amd64.deb")),
        "apt got the vendor's package, byte for byte"
    );
    // Range and ETag, as for every file served.
    let head = vendor::run(
        Command::new("curl")
            .args(["-sfI", "-r", "0-9"])
            .arg(format!("http://{http}/repo/dists/cuda-lab-1/InRelease")),
    );
    assert!(
        head.contains("206") && head.to_ascii_lowercase().contains("etag"),
        "{head}"
    );
    for bad in [
        "repo/meta/cuda-lab-1.json",
        "repo/trusted",
        "repo/dists/../meta/cuda-lab-1.json",
        "repo/pool",
    ] {
        let code = vendor::run(
            Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--path-as-is",
                ])
                .arg(format!("http://{http}/{bad}")),
        );
        assert_eq!(code, "404", "{bad}");
    }

    // A package changed on the appliance's disk: apt refuses it (the index's hash holds).
    let pool_file = std::fs::read_dir(data.join("repo/pool"))
        .unwrap()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("libnvidia-nscq"))
        .unwrap();
    let mut bytes = std::fs::read(&pool_file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&pool_file, &bytes).unwrap();
    let (ok, said) = apt.get(&["download", "libnvidia-nscq"]);
    assert!(!ok && said.contains("Hash Sum mismatch"), "{said}");
    // A suite's index changed after signing: apt refuses the suite.
    let release = data.join("repo/dists/cuda-lab-2/InRelease");
    let text = std::fs::read_to_string(&release).unwrap();
    std::fs::write(
        &release,
        text.replace("Label: Provisioner", "Label: Tampered"),
    )
    .unwrap();
    let apt2 = Apt::new(
        &tmp.path().join("apt2"),
        &format!("http://{http}/repo cuda-lab-2 main"),
        &key,
    );
    let (_, said) = apt2.get(&["update"]);
    assert!(
        said.contains("BADSIG") || said.contains("not signed") || said.contains("invalid"),
        "{said}"
    );
    drop(app);

    // Remove: the suite goes, and only the packages no other suite holds.
    let (ok, said) = provisioner(&data, &["repo", "remove", "cuda-lab-1"]);
    assert!(ok, "{said}");
    let (_, list) = provisioner(&data, &["repo", "list"]);
    assert!(
        !list.contains("cuda-lab-1") && list.contains("cuda-lab-2"),
        "{list}"
    );
    assert_eq!(
        std::fs::read_dir(data.join("repo/pool")).unwrap().count(),
        7,
        "cuda-lab-2 and neuron still hold theirs"
    );
    assert!(provisioner(&data, &["repo", "remove", "cuda-lab-2"]).0);
    assert_eq!(
        std::fs::read_dir(data.join("repo/pool")).unwrap().count(),
        2,
        "only neuron's are left"
    );
    let (ok, said) = provisioner(&data, &["repo", "show", "cuda-lab-2"]);
    assert!(!ok && said.contains("no suite cuda-lab-2"), "{said}");
    // A removed suite's name is never given again: nodes and caches may still name it.
    let (ok, said) = provisioner(
        &data,
        &[
            "repo",
            "import",
            cuda_dir.to_str().unwrap(),
            "--name",
            "cuda-lab",
        ],
    );
    assert!(ok && said.contains("cuda-lab-3"), "{said}");
    // A suite the shipped driver sets name is not removed under them.
    let (ok, said) = provisioner(
        &data,
        &[
            "repo",
            "import",
            cuda_dir.to_str().unwrap(),
            "--name",
            "cuda-580",
        ],
    );
    assert!(ok && said.contains("cuda-580-1"), "{said}");
    let (ok, said) = provisioner(&data, &["repo", "remove", "cuda-580-1"]);
    assert!(
        !ok && said.contains("driver set nvidia-580-hgx-hopper"),
        "{said}"
    );
}

/// One bad bundle: what the import said, after checking that it failed and changed nothing.
fn refused(data: &Path, bundle: &Path) -> String {
    let before = snapshot(data);
    let (ok, said) = provisioner(data, &["repo", "import", bundle.to_str().unwrap()]);
    assert!(!ok, "{} was imported: {said}", bundle.display());
    assert_eq!(
        before,
        snapshot(data),
        "a refused import changed the repository: {said}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(data.join("repo"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".staging"))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind");
    said
}

#[test]
#[cfg_attr(
    not(all(tool = "gpg", tool = "apt-ftparchive")),
    ignore = "needs gpg, apt-ftparchive, dpkg-scanpackages (the packages .ci/run installs)"
)]
fn bad_bundles_are_refused_naming_the_file_and_change_nothing() {
    common::require_tools(vendor::TOOLS);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let vendor_key = VendorKey::new(tmp.path(), "vendor <v@vendor.test>", "ed25519", "1y", None);
    let stranger = VendorKey::new(
        tmp.path(),
        "stranger <s@stranger.test>",
        "ed25519",
        "1y",
        None,
    );
    // A key that expired: made and used in November, valid for a day.
    let expired = VendorKey::new(
        tmp.path(),
        "expired <e@vendor.test>",
        "ed25519",
        "1d",
        Some("20261101T000000"),
    );
    for k in [&vendor_key, &expired] {
        assert!(provisioner(&data, &["repo", "trust", k.public.to_str().unwrap()]).0);
    }
    // One good import first, so "unchanged" covers a repository with a suite in it.
    let good = tmp.path().join("good");
    vendor::flat_repo(&good, CUDA, &vendor_key, true, |r| r);
    assert!(provisioner(&data, &["repo", "import", good.to_str().unwrap()]).0);

    let case = |name: &str| tmp.path().join(name);

    // Unsigned: a Release with no signature beside it.
    let dir = case("unsigned");
    vendor::flat_repo(&dir, CUDA, &vendor_key, false, |r| r);
    std::fs::remove_file(dir.join("Release.gpg")).unwrap();
    let said = refused(&data, &dir);
    assert!(
        said.contains("Release") && said.contains("unsigned"),
        "{said}"
    );

    // Signed by a key nobody trusts.
    let dir = case("stranger");
    vendor::flat_repo(&dir, CUDA, &stranger, true, |r| r);
    let said = refused(&data, &dir);
    assert!(
        said.contains("InRelease")
            && said.contains("does not trust")
            && said.contains(&stranger.fingerprint),
        "{said}"
    );

    // Signed by a trusted key that has expired.
    let dir = case("expired-key");
    vendor::flat_repo(&dir, CUDA, &expired, true, |r| r);
    let said = refused(&data, &dir);
    assert!(
        said.contains("InRelease") && said.contains("expired"),
        "{said}"
    );

    // A Release whose Valid-Until has passed.
    let dir = case("valid-until");
    vendor::flat_repo(&dir, CUDA, &vendor_key, true, |r| {
        r.replacen(
            "Date:",
            "Valid-Until: Mon, 02 Nov 2026 00:00:00 UTC\nDate:",
            1,
        )
    });
    let said = refused(&data, &dir);
    assert!(
        said.contains("InRelease") && said.contains("Valid-Until"),
        "{said}"
    );

    // Signed with SHA-1, which apt refuses.
    let dir = case("sha1");
    vendor::flat_repo(&dir, CUDA, &vendor_key, true, |r| r);
    vendor::run(
        vendor_key
            .gpg()
            .args(["--digest-algo", "SHA1", "--clearsign", "-o"])
            .arg(dir.join("InRelease"))
            .arg(dir.join("Release")),
    );
    let said = refused(&data, &dir);
    assert!(
        said.contains("InRelease") && said.contains("a hash apt refuses"),
        "{said}"
    );

    // A package changed after signing (same size), one truncated, one nothing lists.
    let dir = case("tampered");
    vendor::flat_repo(&dir, CUDA, &vendor_key, true, |r| r);
    let deb = dir.join("libnvidia-nscq_580.95.05-1_amd64.deb");
    let mut bytes = std::fs::read(&deb).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&deb, &bytes).unwrap();
    let said = refused(&data, &dir);
    assert!(
        said.contains("libnvidia-nscq_580.95.05-1_amd64.deb") && said.contains("sha256"),
        "{said}"
    );

    let dir = case("truncated");
    vendor::flat_repo(&dir, CUDA, &vendor_key, true, |r| r);
    let deb = dir.join("nvidia-open-580_580.95.05-1_amd64.deb");
    let bytes = std::fs::read(&deb).unwrap();
    std::fs::write(&deb, &bytes[..bytes.len() / 2]).unwrap();
    let said = refused(&data, &dir);
    assert!(
        said.contains("nvidia-open-580_580.95.05-1_amd64.deb") && said.contains("truncated"),
        "{said}"
    );

    let dir = case("unlisted");
    vendor::flat_repo(&dir, CUDA, &vendor_key, true, |r| r);
    vendor::build_deb(&dir, &pkg("nvidia-imex", "580.95.05-1", ""));
    let said = refused(&data, &dir);
    assert!(
        said.contains("nvidia-imex_580.95.05-1_amd64.deb") && said.contains("not listed"),
        "{said}"
    );

    // An index changed after the Release was signed.
    let dir = case("index");
    vendor::flat_repo(&dir, CUDA, &vendor_key, true, |r| r);
    let packages = std::fs::read_to_string(dir.join("Packages")).unwrap();
    std::fs::write(
        dir.join("Packages"),
        packages.replacen("Description: synthetic", "Description: changed", 1),
    )
    .unwrap();
    let said = refused(&data, &dir);
    assert!(
        said.contains("Packages") && said.contains("changed or truncated"),
        "{said}"
    );

    // InRelease changed after signing.
    let dir = case("inrelease");
    vendor::flat_repo(&dir, CUDA, &vendor_key, true, |r| r);
    let text = std::fs::read_to_string(dir.join("InRelease")).unwrap();
    std::fs::write(
        dir.join("InRelease"),
        text.replacen("Origin: Test Vendor", "Origin: Test Vendos", 1),
    )
    .unwrap();
    let said = refused(&data, &dir);
    assert!(
        said.contains("InRelease") && said.contains("does not verify"),
        "{said}"
    );

    // A tarball cut short, and one with a path outside the bundle.
    let tarball = case("cut.tar.gz");
    tar_gz(&good, &tarball);
    let bytes = std::fs::read(&tarball).unwrap();
    std::fs::write(&tarball, &bytes[..bytes.len() / 2]).unwrap();
    let said = refused(&data, &tarball);
    assert!(said.contains("cut.tar.gz"), "{said}");
    let evil = case("evil.tar");
    vendor::run(
        Command::new("tar")
            .arg("-cf")
            .arg(&evil)
            .arg("-P")
            .arg("--transform=s,^,../../,")
            .arg("-C")
            .arg(&good)
            .arg("InRelease"),
    );
    let said = refused(&data, &evil);
    assert!(said.contains("evil.tar"), "{said}");
    assert!(!tmp.path().join("InRelease").exists() && !data.join("InRelease").exists());
}

/// A suite an image was built from is not removed under it: the image's manifest names it.
#[test]
#[cfg_attr(
    not(all(tool = "gpg", tool = "apt-ftparchive")),
    ignore = "needs gpg, apt-ftparchive, dpkg-scanpackages (the packages .ci/run installs)"
)]
fn a_suite_an_image_was_built_from_is_not_removed_under_it() {
    common::require_tools(vendor::TOOLS);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let key = VendorKey::new(tmp.path(), "vendor <v@vendor.test>", "ed25519", "1y", None);
    let bundle = tmp.path().join("cuda");
    vendor::flat_repo(&bundle, CUDA, &key, true, |r| r);
    assert!(provisioner(&data, &["repo", "trust", key.public.to_str().unwrap()]).0);
    assert!(
        provisioner(
            &data,
            &[
                "repo",
                "import",
                bundle.to_str().unwrap(),
                "--name",
                "cuda-img"
            ]
        )
        .0
    );
    let set = provisioner_protocol::drivers::DriverSet {
        name: "nvidia-580-hgx-hopper".into(),
        suite: "cuda-img-1".into(),
        ..Default::default()
    };
    let staged = tmp.path().join("staged");
    common::images::staged_image_with(&data, &staged, Some(set));
    provisioner::image::os::library::import(&data, &staged).unwrap();
    let (ok, said) = provisioner(&data, &["repo", "remove", "cuda-img-1"]);
    assert!(
        !ok && said.contains(&format!("image {}", common::images::NAME)),
        "{said}"
    );
    assert!(provisioner(&data, &["image", "remove", common::images::NAME]).0);
    let (ok, said) = provisioner(&data, &["repo", "remove", "cuda-img-1"]);
    assert!(ok, "{said}");
}

/// Vendors sign with a subkey (NVIDIA's and Debian's keys have signing subkeys): a signature by
/// a subkey bound to a trusted key, with its back-signature, is good.
#[test]
#[cfg_attr(
    not(all(tool = "gpg", tool = "apt-ftparchive")),
    ignore = "needs gpg, apt-ftparchive, dpkg-scanpackages (the packages .ci/run installs)"
)]
fn a_signature_by_a_trusted_keys_signing_subkey_is_good() {
    common::require_tools(vendor::TOOLS);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let key = VendorKey::new(tmp.path(), "vendor <v@vendor.test>", "ed25519", "1y", None);
    vendor::run(
        key.gpg()
            .args(["--quick-add-key", &key.fingerprint, "rsa3072", "sign", "1y"]),
    );
    // Exported again, with the subkey.
    vendor::run(
        key.gpg()
            .args(["--export", "-o"])
            .arg(&key.public)
            .arg(&key.fingerprint),
    );
    let bundle = tmp.path().join("cuda");
    vendor::flat_repo(&bundle, CUDA, &key, true, |r| r);
    // GnuPG signed with the (RSA) subkey, not the (ed25519) primary key.
    let verified = key
        .gpg()
        .arg("--verify")
        .arg(bundle.join("InRelease"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verified.stderr);
    assert!(said.contains("using RSA key"), "{said}");
    assert!(provisioner(&data, &["repo", "trust", key.public.to_str().unwrap()]).0);
    let (ok, said) = provisioner(&data, &["repo", "import", bundle.to_str().unwrap()]);
    assert!(ok, "{said}");
    assert!(
        said.contains(&key.fingerprint),
        "the primary key is named: {said}"
    );
}
