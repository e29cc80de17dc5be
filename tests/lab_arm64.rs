//! An arm64 node, as a GB200 compute tray (Grace) is, is inspected: QEMU `virt` with AAVMF
//! network-boots from the appliance, gets the arm64 iPXE by its architecture, boots the arm64
//! discovery image that `provisioner image build-discovery --arch arm64` builds (Debian's arm64
//! kernel, busybox and modules, the cross-built agent with its arm64 libraries), and its agent's
//! report puts it in its slot of the rack plan, with its facts.
//!
//! Needs root, qemu-system-arm, qemu-efi-aarch64, the arm64 cross toolchain
//! (gcc-aarch64-linux-gnu, libc6-dev-arm64-cross, `rustup target add aarch64-unknown-linux-gnu`)
//! and the network once: Debian's arm64 packages are cached in `target/debs`. TCG emulates the
//! node, so it is slow: the bounds are generous and nothing is asserted about time.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::{appliance, firmware_dir, require, sha256, target_dir, workspace};

const RUST_TARGET: &str = "aarch64-unknown-linux-gnu";
/// What the lab gives the node; the plan's slot matches it by its SMBIOS serial.
const SERIAL: &str = "GB-SN-0";
const MEMORY_MIB: u64 = 1536;
const DISK_MIB: u64 = 1024;

/// What this test needs beyond root and iproute2: in CI a missing one fails it, elsewhere it
/// is skipped, saying what to install.
fn prerequisites() -> bool {
    let mut missing = Vec::new();
    for (tool, package) in [
        ("qemu-system-aarch64", "qemu-system-arm"),
        ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
        ("apt-get", "apt"),
        ("dpkg-deb", "dpkg"),
    ] {
        if common::which(tool).is_none() {
            missing.push(format!("{tool} (apt-get install {package})"));
        }
    }
    for (file, package) in [
        ("/usr/share/AAVMF/AAVMF_CODE.fd", "qemu-efi-aarch64"),
        (
            "/usr/aarch64-linux-gnu/lib/libc.so.6",
            "libc6-dev-arm64-cross",
        ),
    ] {
        if !Path::new(file).is_file() {
            missing.push(format!("{file} (apt-get install {package})"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("arm64 lab prerequisites missing: {}", missing.join(", "));
    assert!(std::env::var("CI").is_err(), "{msg}");
    eprintln!("SKIPPED: {msg}");
    false
}

/// The agent cross-built for arm64 (PROVISIONER_AGENT_ARM64 names another), brought up to date
/// in the workspace's target folder; `.cargo/config.toml` names the cross linker.
fn arm64_agent() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PROVISIONER_AGENT_ARM64") {
        return Some(PathBuf::from(path));
    }
    let built = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "-p", "provisioner-agent"])
        .args(["--target", RUST_TARGET])
        .arg("--manifest-path")
        .arg(workspace().join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir())
        .current_dir(workspace())
        .status();
    let path = target_dir()
        .join(RUST_TARGET)
        .join("release/provisioner-agent");
    if built.as_ref().is_ok_and(|s| s.success()) && path.is_file() {
        return Some(path);
    }
    let msg = format!(
        "cannot cross-build the agent ({built:?}): rustup target add {RUST_TARGET}; cargo build --release -p provisioner-agent --target {RUST_TARGET}"
    );
    assert!(std::env::var("CI").is_err(), "{msg}");
    eprintln!("SKIPPED: {msg}");
    None
}

#[test]
#[cfg_attr(
    not(lab),
    ignore = "lab test: needs root (network namespaces, taps, QEMU) and the packages .ci/run installs"
)]
fn an_arm64_node_boots_the_arm64_discovery_image_and_is_inspected_in_its_slot() {
    require(&[("ip", "iproute2")]);
    if !prerequisites() {
        return;
    }
    let Some(agent) = arm64_agent() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("image");
    let started = Instant::now();
    let built = Command::new(appliance())
        .args(["image", "build-discovery", "--arch", "arm64", "--out"])
        .arg(&image)
        .arg("--data-dir")
        .arg(tmp.path().join("image-data"))
        .arg("--agent")
        .arg(&agent)
        .arg("--deb-cache")
        .arg(target_dir().join("debs"))
        .output()
        .expect("run provisioner image build-discovery --arch arm64");
    let build_secs = started.elapsed().as_secs_f64();
    assert!(
        built.status.success(),
        "build-discovery --arch arm64 failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image.join("discovery.json")).unwrap()).unwrap();
    assert_eq!(manifest["arch"], "arm64", "{manifest:#}");
    assert!(
        manifest["kernel"]["release"]
            .as_str()
            .is_some_and(|r| r.ends_with("-arm64")),
        "{manifest:#}"
    );
    assert_eq!(
        manifest["agent"]["libraries"][0], "/lib/ld-linux-aarch64.so.1",
        "the loader the agent names: {manifest:#}"
    );
    let initrd_size = std::fs::metadata(image.join("initrd.img")).unwrap().len();
    eprintln!(
        "MEASURED arm64 discovery image: built in {build_secs:.1} s, initrd {initrd_size} bytes, kernel {} bytes",
        manifest["kernel"]["size"]
    );

    let plan = tmp.path().join("plan.csv");
    std::fs::write(
        &plan,
        format!("site,row,rack,u,serial,mac,sku\nlab,r1,g01,7,{SERIAL},,qemu-lab\n"),
    )
    .unwrap();
    let dir = tmp.path().join("lab");
    let started = Instant::now();
    let out = Command::new(appliance())
        .args([
            "lab",
            "--timeout",
            "1500",
            "--firmware",
            "uefi-arm64",
            "--dir",
        ])
        .arg(&dir)
        .arg("--firmware-dir")
        .arg(firmware_dir())
        .arg("--discovery-kernel")
        .arg(image.join("vmlinuz"))
        .arg("--discovery-initrd")
        .arg(image.join("initrd.img"))
        .args(["--discovery-cmdline", "console=ttyAMA0"])
        .arg("--plan")
        .arg(&plan)
        .args([
            "--node",
            &format!("mem={MEMORY_MIB},cpus=1,disk={DISK_MIB},serial={SERIAL}"),
        ])
        .output()
        .expect("run provisioner lab");
    let lab_secs = started.elapsed().as_secs_f64();
    let console = common::read(&dir.join("node0.console"));
    let log = String::from_utf8_lossy(&out.stdout).into_owned()
        + &String::from_utf8_lossy(&out.stderr)
        + &common::read(&dir.join("appliance.log"));
    assert!(
        out.status.success(),
        "provisioner lab failed:\n{log}\n{console}"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    let node = &summary[0];
    let api = &node["api"];
    assert!(
        node["exited"] == true,
        "the node did not power off by itself within the lab's 1500 s:\n{console}\n{api:#}"
    );
    assert!(console.contains("provisioner-discovery: up"), "{console}");

    // It was served the arm64 iPXE, then the arm64 kernel: the one the builder made.
    let events: Vec<String> = api["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["kind"].as_str().unwrap_or(""),
                e["detail"].as_str().unwrap_or("")
            )
        })
        .collect();
    let has = |needle: &str| events.iter().any(|e| e.contains(needle));
    assert!(has("file=ipxe-arm64.efi"), "{events:#?}");
    assert!(
        has(&format!(
            "http GET /artifacts/{}",
            sha256(&image.join("vmlinuz"))
        )),
        "{events:#?}"
    );

    let state = &api["state"];
    assert_eq!(state["state"], "inspected", "{api:#}");
    assert_eq!(api["slot"], "lab/r1/g01/U7", "{api:#}");
    let facts = &api["facts"];
    assert_eq!(facts["cpu"]["arch"], "aarch64", "{:#}", facts["cpu"]);
    assert_eq!(facts["cpu"]["threads"], 1, "{:#}", facts["cpu"]);
    assert_eq!(facts["dmi"]["product_serial"], SERIAL, "{:#}", facts["dmi"]);
    let total = facts["memory"]["total_bytes"].as_u64().unwrap_or(0);
    assert!(
        total > (MEMORY_MIB << 20) * 8 / 10 && total <= MEMORY_MIB << 20,
        "memory {total} of {MEMORY_MIB} MiB"
    );
    let disks = facts["disks"].as_array().unwrap();
    assert!(
        disks
            .iter()
            .any(|d| d["serial"] == "LABDISK0" && d["size_bytes"].as_u64() == Some(DISK_MIB << 20)),
        "{disks:#?}"
    );
    let mac = node["mac"].as_str().unwrap();
    assert!(
        facts["nics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["mac"] == mac),
        "{:#}",
        facts["nics"]
    );
    let timeline: Vec<String> = api["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{}->{}",
                t["from"].as_str().unwrap(),
                t["to"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        timeline,
        [
            "(new)->discovered",
            "discovered->inspecting",
            "inspecting->inspected"
        ]
    );
    assert_eq!(api["refusals"], serde_json::json!([]));

    let on = node["powered_on_ms"].as_i64().unwrap();
    let at = api["inspected_at_ms"].as_i64().unwrap();
    eprintln!(
        "MEASURED arm64 node (TCG): power-on to inspected {:.1} s; the whole lab {lab_secs:.1} s",
        (at - on) as f64 / 1000.0
    );
}
