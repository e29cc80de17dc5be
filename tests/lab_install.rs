//! The whole flow in the virtual rack: a BIOS node and a UEFI node, two disks each (a virtio
//! disk and an NVMe disk, with serials), boot the discovery image, are inspected, matched to
//! their slots by MAC, installed with the hardened image `provisioner image build` makes (on
//! the disk their root device hint names), reboot into it, report what they booted, burn in
//! from the installed system and end `enrolled`. Then each is powered on again (a second lab
//! in the same folder: same disks, same NVRAM, same appliance store) and boots its own disk,
//! not discovery: the appliance's DHCP gives a node in `burning_in` or `enrolled` no boot
//! file, so its firmware moves on to the disk (SeaBIOS says so on the console), and its
//! installed agent checks in.
//! During both, every packet the nodes send is counted where it enters the lab's bridge: none
//! may go anywhere but the appliance and the segment itself.
//! Needs root, QEMU, OVMF, nftables and the image tools (see `.ci/run`).

mod common;

use common::labrun::{
    LabRun, never_written, only_to_the_appliance, operator_config, phases, plan, prepare, states,
};

/// The enrolled node's installed agent says this on its console each time it checks in.
const ENROLLED: &str = "this node is enrolled";

/// Node 0 on SeaBIOS with iPXE, node 1 on OVMF; 20 GiB disks (the image is 16 GiB).
const NODES: [&str; 2] = [
    "mem=1536,cpus=1,disk=20480,nvme=20480,firmware=bios",
    "mem=1536,cpus=1,disk=20480,nvme=20480,firmware=uefi",
];

/// A UEFI node's firmware tried the network entries first and then started the installer's
/// entry for the disk (OVMF says which entry it starts).
fn booted_our_entry(summary: &serde_json::Value, i: usize, console: &str) {
    if summary[i]["firmware"] != "uefi" {
        return;
    }
    let started: Vec<&str> = console
        .lines()
        .filter(|l| l.contains("BdsDxe: starting Boot") || l.contains("BdsDxe: failed to load"))
        .collect();
    let ours = started
        .iter()
        .rposition(|l| l.contains("BdsDxe: starting Boot") && l.contains("\"Provisioner: "));
    assert!(
        ours.is_some_and(|at| started[..at].iter().any(|l| l.contains("PXEv4"))),
        "node {i}: OVMF did not start the disk's entry after the network's:\n{}",
        started.join("\n")
    );
}

#[test]
#[cfg_attr(
    not(lab),
    ignore = "lab test: needs root (network namespaces, taps, QEMU, mmdebstrap) and the packages .ci/run installs"
)]
fn a_bios_and_a_uefi_node_are_installed_burned_in_enrolled_and_then_boot_their_own_disk() {
    let Some((tmp, images)) = prepare() else {
        return;
    };
    let dir = tmp.path().join("lab");
    // Both nodes by MAC; the hint names the virtio disk, so the NVMe disk must stay untouched.
    let plan = plan(
        tmp.path(),
        &images.name,
        &["serial=LABDISK0", "serial=LABDISK1"],
    );
    let config = operator_config(tmp.path());
    let lab = |limit| LabRun {
        dir: &dir,
        images: &images,
        plan: &plan,
        config: &config,
        nodes: &NODES,
        until: ENROLLED,
        limit,
    };

    let summary = lab(3600).run();
    for i in 0..2 {
        let api = &summary[i]["api"];
        let console = common::read(&dir.join(format!("node{i}.console")));
        assert_eq!(
            api["state"]["state"], "enrolled",
            "node {i}: {api:#}\n{console}"
        );
        assert_eq!(
            states(api),
            [
                "discovered",
                "inspecting",
                "inspected",
                "installing",
                "burning_in",
                "enrolled"
            ],
            "node {i}: {:#}",
            api["timeline"]
        );
        for line in [
            "provisioner-discovery: up",
            "first-boot files written",
            "installed system ",
            "reported the installed system",
            ENROLLED,
        ] {
            assert!(console.contains(line), "node {i} console lacks {line:?}");
        }
        // The UEFI node's disk got its boot entry, after the network's; the BIOS node has none.
        let entry = match summary[i]["firmware"].as_str() {
            Some("uefi") => "install: UEFI boot entry \"Provisioner: ",
            _ => "install: BIOS firmware: no boot entry",
        };
        assert!(console.contains(entry), "node {i} console lacks {entry:?}");
        booted_our_entry(&summary, i, &console);
        drivers_checked(api, &console, i);
        assert!(
            never_written(&dir.join(format!("node{i}.nvme.img"))),
            "node {i}: the disk the hint did not choose was written"
        );
        only_to_the_appliance(&summary, i);
        if let Some(line) = console
            .lines()
            .find(|l| l.contains("written and read back"))
        {
            eprintln!("MEASURED node {i} install: {}", line.trim());
        }
        phases(&summary, i);
        std::fs::rename(
            dir.join(format!("node{i}.console")),
            dir.join(format!("node{i}.first.console")),
        )
        .unwrap();
    }

    // Powered on again: each boots its own disk, and its agent checks in as enrolled.
    let again = lab(1800).run();
    for i in 0..2 {
        let api = &again[i]["api"];
        let console = common::read(&dir.join(format!("node{i}.console")));
        assert_eq!(api["state"]["state"], "enrolled", "node {i}: {api:#}");
        // Its timeline gained nothing: no discovery boot, no inspection, no install.
        assert_eq!(
            states(api).last().map(String::as_str),
            Some("enrolled"),
            "node {i}: {:#}",
            api["timeline"]
        );
        assert_eq!(states(api).len(), 6, "node {i}: {:#}", api["timeline"]);
        only_to_the_appliance(&again, i);
        assert!(
            console.contains("installed system ") && console.contains(ENROLLED),
            "node {i} after the power cycle:\n{console}"
        );
        booted_our_entry(&again, i, &console);
        if again[i]["firmware"] == "bios" {
            assert!(
                console.contains("Booting from Hard Disk"),
                "node {i}: SeaBIOS did not move on to the disk:\n{console}"
            );
        }
        assert!(
            !console.contains("provisioner-discovery: up"),
            "node {i} booted discovery again:\n{console}"
        );
    }
}

/// The node checked the driver set its image carries (Debian 12's NVIDIA 535, built by DKMS
/// for the image's kernel at build) on its running system before burn-in: every package at
/// its version and held, the modules there for the running kernel and signed; a VM has no
/// GPU, so loading the driver finds no device, and the node says so rather than pass it.
fn drivers_checked(api: &serde_json::Value, console: &str, i: usize) {
    let report = &api["drivers"]["report"];
    assert_eq!(
        report["set"],
        common::debian_driver::SET,
        "node {i}: {api:#}"
    );
    let check = |name: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == name)
            .unwrap_or_else(|| panic!("node {i}: no check {name}: {report:#}"))
            .clone()
    };
    for pass in [
        "packages",
        "held",
        "module nvidia-current",
        "module nvidia-current-uvm",
    ] {
        assert_eq!(
            check(pass)["outcome"],
            "pass",
            "node {i}: {:#}",
            check(pass)
        );
    }
    let module = check("module nvidia-current");
    let detail = module["detail"].as_str().unwrap();
    assert!(
        detail.contains("535.261.03")
            && detail.contains("signed by \"Provisioner module signing key"),
        "node {i}: {detail}"
    );
    let devices = check("devices");
    assert_eq!(
        devices["outcome"], "cannot_validate",
        "node {i}: {devices:#}"
    );
    let said = devices["detail"].as_str().unwrap();
    assert!(
        said.contains("no nvidia device") && said.contains("No such device"),
        "node {i}: {said}"
    );
    // The node's apt: the appliance's suite only, its signature checked with the archive key
    // the installer wrote (and the lab's packet count says it went nowhere else).
    let apt = check("apt");
    assert_eq!(apt["outcome"], "pass", "node {i}: {apt:#}");
    assert!(
        apt["detail"]
            .as_str()
            .unwrap()
            .contains("from 10.99.0.1 only"),
        "node {i}: {apt:#}"
    );
    let installed = report["installed"].as_array().unwrap();
    assert_eq!(
        installed.len(),
        common::debian_driver::PACKAGES.len(),
        "node {i}"
    );
    assert!(
        installed
            .iter()
            .all(|p| p["sha256"].as_str().is_some_and(|s| s.len() == 64))
    );
    assert!(
        console.contains("reported driver set debian-nvidia-535: "),
        "node {i} console lacks the driver report"
    );
    eprintln!("MEASURED node {i} drivers: {said}");
}
