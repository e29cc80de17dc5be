//! The virtual rack boots real firmware: a BIOS node (SeaBIOS + the NIC's iPXE ROM) and a
//! UEFI node (OVMF's own PXE client, which must fetch ipxe.efi over TFTP) network-boot from
//! the appliance into a kernel and initramfs built by `tests/lab/node-image.sh`, whose /init
//! takes an address by DHCP, reads provisioner.url from /proc/cmdline and calls back. An arm64
//! node (AAVMF) gets the arm64 iPXE and is told the x86-64 image is not for it.
//! Needs root, QEMU, OVMF, AAVMF; the image build downloads a Debian kernel package once.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use common::{appliance, firmware_dir, node_image, require, sha256, workspace};

/// One QEMU at a time: these machines have two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs one node of `firmware` in the lab, with `extra` flags; returns its summary entry and
/// console, and the lab's directory (kept while the caller looks).
fn run_lab(
    firmware: &str,
    memory: &str,
    extra: &[&str],
) -> (serde_json::Value, String, tempfile::TempDir) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (kernel, initrd) = node_image();
    let fw = firmware_dir();
    let dir = tempfile::tempdir().unwrap();
    let out = lab_command(dir.path(), &fw, &kernel, &initrd)
        .args(["--nodes", "1", "--firmware", firmware, "--memory", memory])
        .args(extra)
        .output()
        .expect("run provisioner lab");
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "provisioner lab failed:\n{log}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("summary.json")).unwrap()).unwrap();
    let console = std::fs::read_to_string(dir.path().join("node0.console")).unwrap_or_default();
    (summary[0].clone(), console, dir)
}

/// Boots one node of `firmware` until it powers off by itself.
fn boot(firmware: &str, memory: &str) -> (serde_json::Value, String, PathBuf, tempfile::TempDir) {
    let (node, console, dir) = run_lab(firmware, memory, &[]);
    assert!(
        node["exited"] == true,
        "the node did not power off by itself:\n{console}\n{}",
        std::fs::read_to_string(dir.path().join("appliance.log")).unwrap_or_default()
    );
    (
        node,
        console,
        workspace().join("target/lab-image/vmlinuz"),
        dir,
    )
}

/// Whether the UEFI firmware file `path` is there: in CI its absence fails the test,
/// elsewhere it skips it, saying what to install.
fn require_firmware_file(path: &str, package: &str) -> bool {
    if Path::new(path).is_file() {
        return true;
    }
    assert!(
        std::env::var("CI").is_err(),
        "{path} missing (apt-get install {package})"
    );
    eprintln!("SKIPPED: {path} missing (apt-get install {package})");
    false
}

/// `provisioner lab` with its directory, firmware and node image; the caller adds the rest.
fn lab_command(dir: &Path, fw: &Path, kernel: &Path, initrd: &Path) -> Command {
    let mut c = Command::new(appliance());
    c.args(["lab", "--timeout", "300", "--dir"])
        .arg(dir)
        .arg("--firmware-dir")
        .arg(fw)
        .arg("--discovery-kernel")
        .arg(kernel)
        .arg("--discovery-initrd")
        .arg(initrd);
    c
}

fn details(node: &serde_json::Value) -> Vec<String> {
    node["api"]["events"]
        .as_array()
        .map(|evs| {
            evs.iter()
                .map(|e| {
                    format!(
                        "{} {}",
                        e["kind"].as_str().unwrap_or(""),
                        e["detail"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn assert_booted(node: &serde_json::Value, console: &str, kernel: &Path) {
    assert!(
        console.contains("PROVISIONER-NODE up ip=10.99.0."),
        "{console}"
    );
    assert!(console.contains("url=http://10.99.0.1:8080"), "{console}");
    assert!(
        console.contains("PROVISIONER-NODE callback ok"),
        "{console}"
    );
    let ev = details(node);
    let has = |needle: &str| ev.iter().any(|e| e.contains(needle));
    assert!(has("dhcp ACK 10.99.0."), "{ev:#?}");
    assert!(has("http GET /boot/52-54-00-99-00-00.ipxe"), "{ev:#?}");
    assert!(
        has(&format!("http GET /artifacts/{}", sha256(kernel))),
        "{ev:#?}"
    );
    assert!(has("(callback)"), "{ev:#?}");
}

#[test]
#[cfg_attr(
    not(lab),
    ignore = "lab test: needs root (network namespaces, taps, QEMU) and the packages .ci/run installs"
)]
fn a_bios_node_boots_from_the_appliance() {
    require(&[
        ("ip", "iproute2"),
        ("qemu-system-x86_64", "qemu-system-x86 ipxe-qemu"),
        ("cpio", "cpio"),
    ]);
    let (node, console, kernel, _dir) = boot("bios", "512");
    assert!(
        console.contains("iPXE"),
        "the NIC's iPXE ROM ran:\n{console}"
    );
    assert_booted(&node, &console, &kernel);
}

#[test]
#[cfg_attr(
    not(lab),
    ignore = "lab test: needs root (network namespaces, taps, QEMU) and the packages .ci/run installs"
)]
fn a_uefi_node_gets_ipxe_over_tftp_by_its_architecture() {
    require(&[
        ("ip", "iproute2"),
        ("qemu-system-x86_64", "qemu-system-x86 ipxe-qemu ovmf"),
        ("cpio", "cpio"),
    ]);
    if !require_firmware_file("/usr/share/OVMF/OVMF_CODE.fd", "ovmf") {
        return;
    }
    let (node, console, kernel, _dir) = boot("uefi", "1024");
    assert!(
        console.contains("Start PXE over IPv4"),
        "OVMF's own PXE ran:\n{console}"
    );
    let ev = details(&node);
    let size = std::fs::metadata(workspace().join("firmware/ipxe.efi"))
        .unwrap()
        .len();
    assert!(
        ev.iter().any(|e| e == "dhcp ACK 10.99.0.100 file=ipxe.efi"),
        "{ev:#?}"
    );
    assert!(
        ev.iter()
            .any(|e| e == &format!("tftp RRQ ipxe.efi sent {size} bytes")),
        "{ev:#?}"
    );
    assert_booted(&node, &console, &kernel);
}

/// A Grace tray is arm64: AAVMF's PXE client must get the arm64 iPXE by its architecture
/// (11), and the script must tell it, rather than boot it into, an x86-64 discovery image.
#[test]
#[cfg_attr(
    not(lab),
    ignore = "lab test: needs root (network namespaces, taps, QEMU) and the packages .ci/run installs"
)]
fn an_arm64_node_gets_arm64_ipxe_and_is_told_the_image_is_not_for_it() {
    require(&[
        ("ip", "iproute2"),
        ("qemu-system-aarch64", "qemu-system-arm qemu-efi-aarch64"),
        ("cpio", "cpio"),
    ]);
    if !require_firmware_file("/usr/share/AAVMF/AAVMF_CODE.fd", "qemu-efi-aarch64") {
        return;
    }
    let told = "this node runs arm64 code and the appliance has no discovery image for it (only for x86_64)";
    let (node, console, _dir) = run_lab("uefi-arm64", "512", &["--until", told]);
    let node = &node;
    assert!(node["until_seen"] == true, "{console}");
    assert!(
        console.contains("NBP filename is ipxe-arm64.efi"),
        "{console}"
    );
    assert!(
        console.contains(&format!("Provisioner: {told}")),
        "{console}"
    );

    let ev = details(node);
    let size = std::fs::metadata(firmware_dir().join("ipxe-arm64.efi"))
        .unwrap()
        .len();
    let has = |want: &str| ev.iter().any(|e| e == want);
    assert!(has("dhcp ACK 10.99.0.100 file=ipxe-arm64.efi"), "{ev:#?}");
    assert!(
        has(&format!("tftp RRQ ipxe-arm64.efi sent {size} bytes")),
        "{ev:#?}"
    );
    assert!(
        has("http GET /boot/52-54-00-99-00-00.ipxe (iPXE script)"),
        "{ev:#?}"
    );
    assert!(
        !ev.iter().any(|e| e.contains("/artifacts/")),
        "an arm64 node must not fetch an x86-64 kernel: {ev:#?}"
    );
}

#[test]
#[cfg_attr(
    not(lab),
    ignore = "lab test: needs root (network namespaces, taps, QEMU) and the packages .ci/run installs"
)]
fn ctrl_c_removes_the_whole_lab() {
    require(&[
        ("ip", "iproute2"),
        ("qemu-system-x86_64", "qemu-system-x86 ipxe-qemu"),
        ("cpio", "cpio"),
    ]);
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (kernel, initrd) = node_image();
    let fw = firmware_dir();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("lab.log");
    let mut child = lab_command(&dir.path().join("lab"), &fw, &kernel, &initrd)
        .args(["--nodes", "2"])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("lab.err")).unwrap())
        .spawn()
        .unwrap();
    let ns = format!("pvlab{}", child.id());
    let up = common::wait_for(std::time::Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (text.matches("node powered on").count() == 2).then_some(())
    });
    if up.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "nodes did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let exited = common::wait_for(std::time::Duration::from_secs(30), || {
        child.try_wait().ok().flatten()
    });
    if exited.is_none() {
        let _ = child.kill();
    }
    let _ = child.wait();
    assert!(exited.is_some(), "lab still running 30 s after Ctrl-C");
    let namespaces = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(!namespaces.contains(&ns), "{ns} left behind: {namespaces}");
    // No QEMU or appliance of this lab is left: their consoles stop growing.
    let console = dir.path().join("lab/node0.console");
    let before = std::fs::metadata(&console).map(|m| m.len()).unwrap_or(0);
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(
        std::fs::metadata(&console).map(|m| m.len()).unwrap_or(0),
        before
    );
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("interrupted"),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
}
