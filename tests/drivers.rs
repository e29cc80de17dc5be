//! Driver sets, end to end on synthetic packages with the real names and versions: two driver
//! versions (580.95.05 and 580.126.20) of NVIDIA's packages, fabric manager and NSCQ, a DKMS
//! package whose postinst builds and signs (with openssl, as DKMS signs with its MOK key)
//! the `nvidia` and `nvidia-uvm` modules when the kernel's headers are there and, like real
//! DKMS, says so and exits 0 when they are not, and a fake headers package.
//!
//! The vendor's bundle is imported into the appliance's repository; stock apt installs from the
//! appliance over HTTP into an image's tree (dpkg `--root`), held by the preferences
//! `provisioner drivers pins` writes and then `apt-mark hold`; the agent's verifier
//! (`provisioner-agent --verify-drivers`) judges the result. Three outcomes must come out:
//! the pinned set installs exactly and passes; a fabric manager left unpinned drifts to the
//! newer version and is caught; missing headers leave no module, and that is caught although
//! apt said nothing was wrong.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::vendor::{self, Apt, Pkg, VendorKey, pkg};
use common::{ON_LOOPBACK, Running};

const KERNEL: &str = "6.1.0-28-amd64";

/// A DKMS postinst, chrootless: builds a module per kernel that has headers, signs it,
/// runs depmod; skips (exit 0) a kernel without headers, as DKMS does.
const DKMS_POSTINST: &str = r#"#!/bin/sh
set -e
[ "$1" = configure ] || exit 0
R="${DPKG_ROOT:-}"
for d in "$R"/lib/modules/*/; do
  K=$(basename "$d")
  if [ ! -d "$R/usr/src/linux-headers-$K" ]; then
    echo "Module build for kernel $K was skipped since the kernel headers for this kernel do not seem to be installed."
    continue
  fi
  out="$R/lib/modules/$K/updates/dkms"
  mkdir -p "$out" "$R/var/lib/dkms"
  key="$R/var/lib/dkms/mok.key"
  cert="$R/var/lib/dkms/mok.pem"
  [ -f "$key" ] || openssl req -new -x509 -newkey rsa:2048 -nodes -days 3650 \
    -subj "/CN=DKMS module signing key" -keyout "$key" -out "$cert" 2>/dev/null
  for m in nvidia nvidia-uvm; do
    t=$(mktemp -d)
    printf 'version=@UPSTREAM@\0license=Dual MIT/GPL\0name=%s\0vermagic=%s SMP preempt mod_unload modversions \0' "$m" "$K" > "$t/info"
    objcopy -I binary -O elf64-x86-64 -B i386:x86-64 --rename-section .data=.modinfo "$t/info" "$t/$m.ko"
    openssl cms -sign -nocerts -noattr -binary -in "$t/$m.ko" -signer "$cert" -inkey "$key" -outform DER -out "$t/sig"
    n=$(stat -c %s "$t/sig")
    cat "$t/sig" >> "$t/$m.ko"
    printf '\000\000\002\000\000\000\000\000' >> "$t/$m.ko"
    printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $((n>>24&255)) $((n>>16&255)) $((n>>8&255)) $((n&255)))" >> "$t/$m.ko"
    printf '~Module signature appended~\n' >> "$t/$m.ko"
    cp "$t/$m.ko" "$out/$m.ko"
    rm -rf "$t"
  done
  depmod -b "$R/" "$K"
  echo "DKMS: install completed for $K."
done
"#;

const fn dkms(version: &'static str) -> Pkg {
    Pkg {
        name: "nvidia-dkms-580-open",
        version,
        arch: "amd64",
        depends: "",
        postinst: DKMS_POSTINST,
        files: &[],
    }
}

/// Two driver versions of every package the hopper set has, DCGM, and the headers.
fn packages() -> Vec<Pkg> {
    let mut out = Vec::new();
    for (v, meta_dep) in [
        (
            "580.95.05-1",
            "nvidia-dkms-580-open (= 580.95.05-1), libnvidia-compute-580 (= 580.95.05-1), nvidia-utils-580 (= 580.95.05-1)",
        ),
        (
            "580.126.20-1",
            "nvidia-dkms-580-open (= 580.126.20-1), libnvidia-compute-580 (= 580.126.20-1), nvidia-utils-580 (= 580.126.20-1)",
        ),
    ] {
        out.push(pkg("nvidia-open-580", v, meta_dep));
        out.push(dkms(v));
        out.push(pkg("libnvidia-compute-580", v, ""));
        out.push(pkg("nvidia-utils-580", v, ""));
        out.push(pkg("nvidia-fabricmanager", v, ""));
        out.push(pkg("libnvidia-nscq", v, ""));
    }
    out.push(pkg("datacenter-gpu-manager-4-core", "1:4.4.1-1", ""));
    out.push(pkg(
        "datacenter-gpu-manager-4-cuda13",
        "1:4.4.1-1",
        "datacenter-gpu-manager-4-core (= 1:4.4.1-1)",
    ));
    out.push(Pkg {
        files: &["/usr/src/linux-headers-6.1.0-28-amd64/Makefile"],
        ..pkg("linux-headers-6.1.0-28-amd64", "6.1.119-1", "")
    });
    out
}

/// The hopper set of the shipped file, with exact pins; `drop_fm_pin` leaves fabric manager
/// out of the set's pins (the mistake the research saw: apt then takes the newest).
const DRIVERS: &str = r#"version = 1
[set.nvidia-580-hgx-hopper]
description = "test: NVIDIA 580, HGX H100/H200"
vendor = "nvidia"
driver = "580.95.05"
suite = "cuda-580-1"
fabric = "nvswitch3"
skus = ["hgx-h100", "hgx-h200"]
[set.nvidia-580-hgx-hopper.packages]
nvidia-open-580 = "580.95.05-1"
nvidia-dkms-580-open = "580.95.05-1"
libnvidia-compute-580 = "580.95.05-1"
nvidia-utils-580 = "580.95.05-1"
nvidia-fabricmanager = "580.95.05-*"
libnvidia-nscq = "580.95.05-1"
datacenter-gpu-manager-4-core = "1:4.4.1-*"
datacenter-gpu-manager-4-cuda13 = "1:4.4.1-1"
"#;

fn provisioner(data: &Path, config: &Path, args: &[&str]) -> (bool, String, String) {
    let config = config.to_str().unwrap();
    let out = common::provisioner_output(data, &[args, &["--config", config]].concat());
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn agent() -> PathBuf {
    static AGENT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    AGENT
        .get_or_init(|| {
            common::agent_binary().expect("the agent binary (cargo build -p provisioner-agent)")
        })
        .clone()
}

/// An image's tree with its kernel's module folder and an empty dpkg database.
fn image_root(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("lib/modules").join(KERNEL).join("kernel")).unwrap();
    dir.to_path_buf()
}

/// The agent's verdict on the tree: exit status and the report.
fn verify(set: &Path, root: &Path) -> (bool, serde_json::Value, String) {
    let out = Command::new(agent())
        .arg("--verify-drivers")
        .arg(set)
        .arg("--root")
        .arg(root)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (
        out.status.success(),
        report,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report}"))
}

#[test]
#[cfg_attr(
    not(all(tool = "gpg", tool = "apt-ftparchive", tool = "curl")),
    ignore = "needs gpg, apt-ftparchive, dpkg-scanpackages, curl, kmod, binutils, openssl (the packages .ci/run installs)"
)]
fn a_pinned_set_installs_exactly_and_drift_or_a_missing_module_is_caught() {
    common::require_tools(vendor::TOOLS);
    common::require_tools(&[
        ("modinfo", "kmod"),
        ("depmod", "kmod"),
        ("objcopy", "binutils"),
        ("openssl", "openssl"),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = tmp.path().join("provisioner.toml");
    let drivers = tmp.path().join("drivers.toml");
    std::fs::write(&drivers, DRIVERS).unwrap();
    std::fs::write(
        &config,
        format!("[lifecycle]\ndrivers = \"{}\"\n", drivers.display()),
    )
    .unwrap();

    // The set waits for its suite, and says which.
    let (ok, out, _) = provisioner(&data, &config, &["drivers", "list"]);
    assert!(
        ok && out.contains("not ready")
            && out.contains("suite cuda-580-1 is not in the repository"),
        "{out}"
    );

    let nvidia = VendorKey::new(
        tmp.path(),
        "cudatools <cudatools@nvidia.test>",
        "rsa3072",
        "1y",
        None,
    );
    let bundle = tmp.path().join("cuda");
    vendor::flat_repo(&bundle, &packages(), &nvidia, true, |r| r);
    assert!(
        provisioner(
            &data,
            &config,
            &["repo", "trust", nvidia.public.to_str().unwrap()]
        )
        .0
    );
    let (ok, out, err) = provisioner(
        &data,
        &config,
        &[
            "repo",
            "import",
            bundle.to_str().unwrap(),
            "--name",
            "cuda-580",
        ],
    );
    assert!(ok && out.contains("cuda-580-1"), "{out}{err}");

    let (ok, out, err) = provisioner(
        &data,
        &config,
        &["drivers", "check", "nvidia-580-hgx-hopper"],
    );
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("nvidia-fabricmanager") && out.contains("580.95.05-1"),
        "{out}"
    );
    let (ok, set_json, err) = provisioner(
        &data,
        &config,
        &["drivers", "show", "nvidia-580-hgx-hopper"],
    );
    assert!(ok, "{err}");
    let set: serde_json::Value = serde_json::from_str(&set_json).unwrap();
    assert_eq!(
        set["packages"]["nvidia-fabricmanager"], "580.95.05-1",
        "the glob resolved to the one 580.95.05"
    );
    assert_eq!(set["devices"], 8);
    assert_eq!(set["modules"], serde_json::json!(["nvidia", "nvidia-uvm"]));
    let set_file = tmp.path().join("set.json");
    std::fs::write(&set_file, &set_json).unwrap();
    let (ok, prefs, _) = provisioner(
        &data,
        &config,
        &["drivers", "pins", "nvidia-580-hgx-hopper"],
    );
    assert!(
        ok && prefs.contains(
            "Package: nvidia-fabricmanager\nPin: version 580.95.05-1\nPin-Priority: 1001"
        ),
        "{prefs}"
    );
    // A suite a set names cannot be removed under it.
    let (ok, _, err) = provisioner(&data, &config, &["repo", "remove", "cuda-580-1"]);
    assert!(
        !ok && err.contains("driver set nvidia-580-hgx-hopper"),
        "{err}"
    );

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
            .arg("-sfo")
            .arg(&key)
            .arg(format!("http://{http}/repo/archive.asc")),
    );
    let source = format!("http://{http}/repo cuda-580-1 main");
    let names: Vec<String> = set["packages"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let mut install: Vec<&str> = vec!["install", "--no-install-recommends"];
    install.extend(names.iter().map(String::as_str));

    // 1. Headers, the set's preferences: apt (by package names alone) installs exactly the
    //    set, then holds it in a run of its own; every check passes.
    let root = image_root(&tmp.path().join("exact"));
    let apt = Apt::new(&root, &source, &key).installing_into_root();
    std::fs::write(
        root.join("etc/apt/preferences.d/provisioner-drivers.pref"),
        &prefs,
    )
    .unwrap();
    let (ok, said) = apt.get(&["update"]);
    assert!(ok, "{said}");
    let (ok, said) = apt.get(&["install", "linux-headers-6.1.0-28-amd64"]);
    assert!(ok, "{said}");
    let (ok, said) = apt.get(&install);
    assert!(ok, "{said}");
    assert!(
        said.contains("DKMS: install completed for 6.1.0-28-amd64"),
        "{said}"
    );
    let (ok, said) = apt.mark(
        &[
            &["hold"][..],
            &names.iter().map(String::as_str).collect::<Vec<_>>()[..],
        ]
        .concat(),
    );
    assert!(ok, "{said}");
    let (ok, report, err) = verify(&set_file, &root);
    assert!(ok, "{report:#}\n{err}");
    for c in report["checks"].as_array().unwrap() {
        assert_eq!(c["outcome"], "pass", "{c}");
    }
    assert!(
        check(&report, "module nvidia")["detail"]
            .as_str()
            .unwrap()
            .contains("signed by \"DKMS module signing key\"")
    );
    let fm = report["installed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["package"] == "nvidia-fabricmanager")
        .unwrap();
    assert_eq!(fm["version"], "580.95.05-1");
    assert_eq!(fm["sha256"], set["sha256"]["nvidia-fabricmanager"]);
    assert_eq!(
        fm["sha256"].as_str().unwrap(),
        common::sha256(&bundle.join("nvidia-fabricmanager_580.95.05-1_amd64.deb")),
        "the record names the vendor's package by its digest"
    );
    // Held: a later upgrade does not move the set.
    let (ok, said) = apt.get(&["upgrade"]);
    assert!(ok && said.contains("0 upgraded"), "{said}");

    // 2. Fabric manager left out of the pins (the meta-package and driver pinned): apt takes
    //    the newer fabric manager, and the verifier says so.
    let root = image_root(&tmp.path().join("drift"));
    let apt = Apt::new(&root, &source, &key).installing_into_root();
    let without_fm: String = prefs
        .split("\n\n")
        .filter(|stanza| !stanza.contains("Package: nvidia-fabricmanager"))
        .collect::<Vec<_>>()
        .join("\n\n");
    std::fs::write(
        root.join("etc/apt/preferences.d/provisioner-drivers.pref"),
        &without_fm,
    )
    .unwrap();
    assert!(apt.get(&["update"]).0);
    assert!(apt.get(&["install", "linux-headers-6.1.0-28-amd64"]).0);
    let (ok, said) = apt.get(&install);
    assert!(ok, "apt sees nothing wrong: {said}");
    let (ok, report, _) = verify(&set_file, &root);
    assert!(!ok);
    assert_eq!(check(&report, "packages")["outcome"], "fail");
    assert_eq!(
        check(&report, "packages")["detail"],
        "nvidia-fabricmanager is 580.126.20-1, the set pins 580.95.05-1"
    );
    assert_eq!(
        check(&report, "module nvidia")["outcome"],
        "pass",
        "only the drift is reported"
    );

    // 3. No headers: DKMS builds nothing, apt exits 0, the verifier finds no module.
    let root = image_root(&tmp.path().join("no-headers"));
    let apt = Apt::new(&root, &source, &key).installing_into_root();
    std::fs::write(
        root.join("etc/apt/preferences.d/provisioner-drivers.pref"),
        &prefs,
    )
    .unwrap();
    assert!(apt.get(&["update"]).0);
    let (ok, said) = apt.get(&install);
    assert!(ok, "apt sees nothing wrong: {said}");
    assert!(said.contains("skipped since the kernel headers"), "{said}");
    let (ok, said) = apt.mark(
        &[
            &["hold"][..],
            &names.iter().map(String::as_str).collect::<Vec<_>>()[..],
        ]
        .concat(),
    );
    assert!(ok, "{said}");
    let (ok, report, err) = verify(&set_file, &root);
    assert_eq!(
        check(&report, "packages")["outcome"],
        "pass",
        "only the module is missing"
    );
    assert_eq!(check(&report, "held")["outcome"], "pass");
    assert!(!ok);
    let m = check(&report, "module nvidia");
    assert_eq!(m["outcome"], "fail");
    assert!(
        m["detail"]
            .as_str()
            .unwrap()
            .contains("no nvidia module for kernel 6.1.0-28-amd64"),
        "{m}"
    );
    assert!(err.contains("module nvidia failed"), "{err}");
    drop(app);
}

/// A real vendor bundle: Debian's signed bookworm archive (several signatures, dists/ and
/// pool/, indexes of thousands of packages of which the bundle carries fourteen), checked
/// against Debian's own keyring and resolved into the lab's driver set.
#[test]
#[cfg_attr(
    not(tool = "apt-get"),
    ignore = "needs apt-get and Debian's archive keyring (the packages .ci/run installs)"
)]
fn debians_driver_imports_as_a_bundle_and_resolves_into_the_lab_set() {
    use common::debian_driver;
    let bundle = debian_driver::bundle();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let drivers = tmp.path().join("drivers.toml");
    std::fs::write(&drivers, debian_driver::drivers_toml()).unwrap();
    let config = tmp.path().join("provisioner.toml");
    std::fs::write(
        &config,
        format!("[lifecycle]\ndrivers = \"{}\"\n", drivers.display()),
    )
    .unwrap();
    let (ok, out, err) = provisioner(&data, &config, &["repo", "trust", debian_driver::KEYRING]);
    assert!(ok, "{out}{err}");
    let started = std::time::Instant::now();
    let (ok, out, err) = provisioner(
        &data,
        &config,
        &[
            "repo",
            "import",
            bundle.to_str().unwrap(),
            "--name",
            "debian-nvidia-535",
        ],
    );
    assert!(ok, "{out}{err}");
    eprintln!(
        "MEASURED import of Debian's driver bundle: {:.1} s: {out}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.contains(&format!(
            "imported suite {}: {} packages",
            debian_driver::SUITE,
            debian_driver::PACKAGES.len()
        )),
        "{out}"
    );
    assert!(
        out.contains("Debian Archive Automatic Signing Key (12/bookworm)"),
        "{out}"
    );
    let (ok, set, err) = provisioner(&data, &config, &["drivers", "show", debian_driver::SET]);
    assert!(ok, "{err}");
    let set: serde_json::Value = serde_json::from_str(&set).unwrap();
    assert_eq!(set["packages"]["nvidia-kernel-dkms"], "535.261.03-1");
    assert_eq!(
        set["modules"],
        serde_json::json!(["nvidia-current", "nvidia-current-uvm"])
    );
}
